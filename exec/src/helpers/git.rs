//! `maestro-exec git-credential <get|store|erase>`: git's credential helper protocol
//! (git-credential(1)), set up with
//! `git config --global credential.helper '!maestro-exec git-credential'`.
//!
//! `get` answers an `https` request for the host of an active secret whose kind has a git
//! helper in the catalog (github: github.com; gitlab: its `host` field) with the kind's
//! conventional username, the token as password, and `password_expiry_utc` when the token
//! expires. Every other request gets no answer, so git goes on to its next helper or prompt.
//!
//! Several secrets for one host (two GitHub accounts): a secret whose `owners` field names
//! owners or path prefixes answers for repositories under them, the one without `owners` for
//! the rest; the request's `path` decides (git sends it with `credential.useHttpPath`, which
//! `maestro-exec` sets for the commands it runs). A request it cannot decide (no path, an odd
//! path, two secrets serving one owner, an owner no secret serves and no default) gets no
//! answer and one line on stderr naming the secrets (see [`catalog::owners::choose`]).
//! `store` and `erase` are read and ignored: the broker, not git, keeps the token. With no agent
//! running the helper says nothing at all, since a globally configured helper also runs outside
//! sandboxes. It always exits 0: git ignores a helper's failure anyway, and a helper that fails
//! loudly on every fetch would be noise.

use std::ffi::OsString;
use std::io::{self, Read, Write};

use maestro_wire::SecretValue;
use maestro_wire::catalog::owners::{self, Candidate};
use maestro_wire::catalog::{self, Helper};
use maestro_wire::sock::{Action, ListedSecret, MaterialEntry, Response};
use zeroize::Zeroizing;

use super::HelperError;
use crate::EXIT_OWN;
use crate::client::{self, Failure};
use crate::rfc3339;

pub const SUBCOMMAND: &str = "git-credential";
/// Git's requests are a few short lines; anything longer is not git.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
const USAGE: &str = "usage: maestro-exec git-credential <get|store|erase> (run by git: \
                     git config --global credential.helper '!maestro-exec git-credential')";

/// The parts of a request that `get` looks at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CredentialRequest {
    pub protocol: Option<String>,
    pub host: Option<String>,
    /// The repository's path (`alice/repo.git`), sent with `credential.useHttpPath`.
    pub path: Option<String>,
}

/// Parses `key=value` lines up to an empty line or the end. Unknown keys (`wwwauth[]`,
/// `capability[]`, a `password` being stored) are skipped without being kept.
pub fn parse_request(bytes: &[u8]) -> CredentialRequest {
    let mut req = CredentialRequest::default();
    for line in bytes.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(eq) = line.iter().position(|b| *b == b'=') else { continue };
        let (key, value) = (&line[..eq], &line[eq + 1..]);
        let text = || String::from_utf8_lossy(value).into_owned();
        match key {
            b"protocol" => req.protocol = Some(text()),
            b"host" => req.host = Some(text()),
            b"path" => req.path = Some(text()),
            _ => {}
        }
    }
    req
}

/// A host as compared: lower case, without the default https port.
fn normalize(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    host.strip_suffix(":443").map(str::to_owned).unwrap_or(host)
}

/// The host a secret answers for (from its kind, or from the kind's host field), and its
/// username and token field; `None` when its kind has no git helper.
fn helper_of(entry: &MaterialEntry) -> Option<(String, &'static str, &'static str)> {
    match catalog::kind(&entry.kind)?.helper? {
        Helper::GitCredential { host, host_field, username, token_field, .. } => {
            let host = match host_field {
                Some(f) => entry.fields.get(f)?.expose(),
                None => host,
            };
            Some((normalize(host), username, token_field))
        }
        Helper::AwsCredentialProcess => None,
    }
}

/// A listed secret as a candidate for `host`: its kind has a git helper whose host (fixed, or
/// in a field that is not secret) is `host`; with its owners when it names some. A secret
/// whose owners cannot be read is no candidate (the broker checks them; this is an older or
/// odd agent).
fn candidate(secret: &ListedSecret, host: &str) -> Option<Candidate> {
    let kind = catalog::kind(&secret.kind)?;
    let Some(Helper::GitCredential { host: fixed, host_field, owners_field, .. }) = kind.helper
    else {
        return None;
    };
    let field_value = |f: &str| {
        secret
            .shown_fields
            .get(f)
            .map(String::as_str)
            .or_else(|| kind.fields.iter().find(|s| s.name == f).and_then(|s| s.default))
    };
    let secret_host = match host_field {
        Some(f) => field_value(f)?,
        None => fixed,
    };
    if normalize(secret_host) != host {
        return None;
    }
    let owners = match owners_field.and_then(|f| secret.shown_fields.get(f)) {
        Some(text) => owners::parse(text).ok()?,
        None => Vec::new(),
    };
    Some(Candidate { name: secret.name.clone(), owners })
}

/// The answer for `host` from the material of the candidate secrets, if one matches.
pub fn answer(host: &str, secrets: &[MaterialEntry]) -> Option<Zeroizing<String>> {
    let host = normalize(host);
    for entry in secrets {
        let Some((h, username, token_field)) = helper_of(entry) else { continue };
        let Some(token) = entry.fields.get(token_field).map(SecretValue::expose) else {
            continue;
        };
        if h != host {
            continue;
        }
        let mut out = Zeroizing::new(String::with_capacity(128 + token.len()));
        out.push_str("username=");
        out.push_str(username);
        out.push_str("\npassword=");
        out.push_str(token);
        out.push('\n');
        // Anything but an RFC 3339 time gives no expiry.
        if let Some(expiry) = entry.expires_at.as_deref().and_then(rfc3339::unix_seconds) {
            out.push_str(&format!("password_expiry_utc={expiry}\n"));
        }
        return Some(out);
    }
    None
}

/// Reads standard input up to the limit, into a buffer that is zeroized (git sends the
/// password with `store`).
fn read_request(mut input: impl Read) -> Result<Zeroizing<Vec<u8>>, HelperError> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_REQUEST_BYTES + 1]);
    let mut len = 0;
    loop {
        match input.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len > MAX_REQUEST_BYTES {
                    return Err(HelperError::RequestTooLong { max: MAX_REQUEST_BYTES });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HelperError::ReadRequest(e)),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Whether asking failed only because no agent runs here: the one failure that stays silent.
fn no_agent(f: &Failure) -> bool {
    f.0.starts_with("no agent at ")
}

/// `get`: the answer to print, if any.
fn get(request: &CredentialRequest) -> Result<Option<Zeroizing<String>>, HelperError> {
    let (Some("https"), Some(host)) = (request.protocol.as_deref(), request.host.as_deref()) else {
        return Ok(None);
    };
    let socket = client::socket_path();
    // List first (no values, no audit record): most hosts git asks about have no secret, and
    // only the candidates' values are then fetched.
    let listed = match client::ask(&socket, Action::List) {
        Ok(Response::List { secrets, .. }) => secrets,
        Ok(Response::Error { message, .. }) => return Err(HelperError::AskAgent(message)),
        Ok(_) => return Err(HelperError::UnexpectedAnswer),
        Err(f) if no_agent(&f) => return Ok(None),
        Err(f) => return Err(f.into()),
    };
    let host = normalize(host);
    let candidates: Vec<Candidate> = listed.iter().filter_map(|s| candidate(s, &host)).collect();
    let chosen = owners::choose(&host, request.path.as_deref(), &candidates)
        .map_err(|r| HelperError::Refused(r.to_string()))?;
    let Some(chosen) = chosen else { return Ok(None) };
    let only = vec![chosen.name.clone()];
    let action = Action::Material { kinds: Vec::new(), only, command: Some("git".to_owned()) };
    match client::ask(&socket, action)? {
        Response::Material { secrets } => Ok(answer(&host, &secrets)),
        Response::Error { message, .. } => Err(HelperError::AskAgent(message)),
        _ => Err(HelperError::UnexpectedAnswer),
    }
}

fn run(operation: &str) -> Result<(), HelperError> {
    let request = read_request(io::stdin().lock())?;
    if operation != "get" {
        // store, erase, and operations of later git versions: accepted and ignored.
        return Ok(());
    }
    if let Some(out) = get(&parse_request(&request))? {
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(HelperError::WriteAnswer)?;
    }
    Ok(())
}

/// The helper; returns the exit status.
pub fn main(args: &[OsString]) -> i32 {
    let operation = match args {
        [op] => op.to_string_lossy().into_owned(),
        _ => {
            eprintln!("maestro-exec: {USAGE}");
            return EXIT_OWN;
        }
    };
    if let Err(e) = run(&operation) {
        // git shows a helper's stderr to the user, then carries on without an answer.
        eprintln!("maestro-exec git-credential: {e}");
    }
    0
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn entry(
        name: &str,
        kind: &str,
        fields: &[(&str, &str)],
        expires: Option<&str>,
    ) -> MaterialEntry {
        MaterialEntry {
            name: name.into(),
            kind: kind.into(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), SecretValue::from(*v)))
                .collect::<BTreeMap<_, _>>(),
            expires_at: expires.map(str::to_owned),
        }
    }

    #[test]
    fn parses_git_requests_and_skips_the_rest() {
        let req = parse_request(
            b"capability[]=authtype\nprotocol=https\nhost=GitHub.com\npath=o/r.git\n\
              wwwauth[]=Basic realm=\"x\"\n\nprotocol=http\n",
        );
        assert_eq!(
            req,
            CredentialRequest {
                protocol: Some("https".into()),
                host: Some("GitHub.com".into()),
                path: Some("o/r.git".into()),
            }
        );
        assert_eq!(parse_request(b""), CredentialRequest::default());
        assert_eq!(parse_request(b"host=h\r\n").host.as_deref(), Some("h"));
    }

    #[test]
    fn answers_for_the_kind_host_with_the_conventional_username() {
        let secrets = [
            entry("GH", "github", &[("token", "ghp_planted")], Some("2030-01-01T00:00:00Z")),
            entry(
                "GL",
                "gitlab",
                &[("token", "glpat-planted"), ("host", "git.example.com:8443")],
                None,
            ),
        ];
        let gh = answer("github.com", &secrets).unwrap();
        assert_eq!(
            gh.as_str(),
            "username=x-access-token\npassword=ghp_planted\npassword_expiry_utc=1893456000\n"
        );
        assert_eq!(answer("GITHUB.COM:443", &secrets).unwrap().as_str(), gh.as_str());
        let gl = answer("git.example.com:8443", &secrets).unwrap();
        assert_eq!(gl.as_str(), "username=oauth2\npassword=glpat-planted\n");
        assert!(answer("git.example.com", &secrets).is_none());
        assert!(answer("gitlab.com", &secrets).is_none());
        assert!(answer("example.com", &secrets).is_none());
    }

    fn listed(name: &str, kind: &str, shown: &[(&str, &str)]) -> ListedSecret {
        ListedSecret {
            name: name.into(),
            kind: kind.into(),
            version: 1,
            variables: vec![],
            files: vec![],
            needs_reauth: None,
            exposure: Default::default(),
            hosts: vec![],
            active_until: None,
            shown_fields: shown.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn only_git_kinds_for_the_host_are_candidates() {
        let is = |s: &ListedSecret, host: &str| candidate(s, host).is_some();
        let gh = listed("X", "github", &[]);
        assert!(is(&gh, "github.com"));
        assert!(!is(&gh, "gitlab.com"));
        assert!(is(&listed("X", "gitlab", &[]), "gitlab.com"), "the field's default");
        let gl = listed("X", "gitlab", &[("host", "Git.Example.com:8443")]);
        assert!(is(&gl, "git.example.com:8443"));
        assert!(!is(&gl, "gitlab.com"));
        assert!(!is(&listed("X", "aws", &[]), "github.com"));
        assert!(!is(&listed("X", "generic", &[]), "github.com"));
        let scoped = candidate(&listed("A", "github", &[("owners", "Alice,acme/x")]), "github.com");
        assert_eq!(scoped.unwrap().owners.len(), 2);
        assert!(!is(&listed("A", "github", &[("owners", "../x")]), "github.com"));
    }

    #[test]
    fn the_listing_chooses_by_owner() {
        let listing = [
            listed("GH_ALICE", "github", &[("owners", "alice")]),
            listed("GH_BOB", "github", &[("owners", "bob")]),
            listed("GL", "gitlab", &[]),
        ];
        let cands: Vec<Candidate> =
            listing.iter().filter_map(|s| candidate(s, "github.com")).collect();
        let pick =
            |path| owners::choose("github.com", path, &cands).map(|c| c.unwrap().name.clone());
        assert_eq!(pick(Some("Alice/r.git")).unwrap(), "GH_ALICE");
        assert_eq!(pick(Some("bob/r.git")).unwrap(), "GH_BOB");
        assert!(
            pick(Some("carol/r.git"))
                .unwrap_err()
                .to_string()
                .contains("no active secret serves owner carol")
        );
    }

    #[test]
    fn an_oversized_request_is_refused() {
        let big = vec![b'a'; MAX_REQUEST_BYTES + 10];
        assert!(matches!(read_request(&big[..]), Err(HelperError::RequestTooLong { .. })));
        assert_eq!(&read_request(&b"host=h\n"[..]).unwrap()[..], b"host=h\n");
    }

    #[test]
    fn a_missing_agent_is_recognized() {
        let dir = tempfile::tempdir().unwrap();
        let Err(f) = client::ask(&dir.path().join("agent.sock"), Action::List) else { panic!() };
        assert!(no_agent(&f));
        assert!(!no_agent(&Failure("secrets are unavailable".into())));
    }
}
