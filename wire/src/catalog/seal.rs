//! Sealed secrets as catalog data: which kinds can be sealed, which of their fields the sandbox
//! sees only as placeholders, the hosts each kind's values may be sent to, and how placeholders
//! are shaped.
//!
//! A sealed secret never reaches the sandbox: the agent shows a random placeholder in its place,
//! and its egress proxy swaps the real value in on the way out, only towards the secret's hosts
//! (or, for AWS, re-signs the request with the real keys). The broker checks a secret's exposure
//! and hosts against this table when it is registered; the agent reads it to mint placeholders.
//!
//! Placeholders keep what clients check (a known prefix such as `sk-` or `AKIA`, the separators
//! and the length) and draw every other character at random, so a placeholder passes an SDK's
//! format checks, Content-Length does not change when the proxy swaps it, and a placeholder seen
//! anywhere names one activation of one secret in one session.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{File, Kind, Variable};
use crate::SecretValue;

/// How a secret reaches the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exposure {
    /// The value is in the sandbox's variables and files (what tools read today).
    #[default]
    Plain,
    /// The sandbox holds a placeholder; the agent's proxy puts the value into requests to the
    /// secret's hosts.
    Sealed,
}

impl Exposure {
    pub fn as_str(self) -> &'static str {
        match self {
            Exposure::Plain => "plain",
            Exposure::Sealed => "sealed",
        }
    }

    pub fn parse(text: &str) -> Option<Exposure> {
        match text {
            "plain" => Some(Exposure::Plain),
            "sealed" => Some(Exposure::Sealed),
            _ => None,
        }
    }
}

/// Whether and how a kind can be sealed.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "sealing", rename_all = "snake_case")]
pub enum Sealing {
    /// It cannot: `why` says why and what to use instead (one sentence each).
    Unsupported { why: &'static str },
    /// The proxy swaps the placeholders of `fields` for their values in requests to `hosts`.
    Swap(Seal),
    /// AWS Signature Version 4: the proxy re-signs requests made with the placeholder keys.
    SigV4(Seal),
    /// The agent uses the value itself on the sandbox's behalf (an ssh-agent socket that signs
    /// with a key): the sandbox gets the seal's variables and files instead of the kind's.
    Agent(AgentSeal),
}

/// A kind the agent serves itself when sealed: an SSH key (an ssh-agent socket) or a database
/// login (a socket speaking the database's protocol that logs in with the password).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AgentSeal {
    /// The fields the sandbox never sees, not even as placeholders.
    pub hidden: &'static [&'static str],
    /// What the agent runs for the secret.
    pub service: Service,
    /// What the sandbox gets instead of the kind's variables and files.
    pub variables: &'static [Variable],
    pub files: &'static [File],
    /// What the agent serves, for people (`maestro kinds`, docs/sealed.md).
    pub served: &'static str,
}

/// What the agent runs on the socket of a sealed secret of a kind it serves itself.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "service", rename_all = "snake_case")]
pub enum Service {
    /// An ssh-agent that signs with the key (`agent/src/ssh`).
    SshAgent(SshAgentFields),
    /// A relay speaking the database's own protocol that logs in to the server with the
    /// secret's password for each client connection (`agent/src/relay`).
    Relay { protocol: RelayProtocol },
}

/// The fields an ssh-agent service reads.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SshAgentFields {
    /// The key's field and its passphrase's.
    pub key: &'static str,
    pub passphrase: &'static str,
    /// The field of host patterns the key may be used for, and the known_hosts field that
    /// tells which host key is which host.
    pub hosts: &'static str,
    pub known_hosts: &'static str,
}

/// The database protocol a relay speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayProtocol {
    /// PostgreSQL's frontend/backend protocol 3.0 (`agent/src/relay/postgres.rs`).
    Postgres,
    /// MySQL's client/server protocol (MariaDB's too), protocol 41 (`agent/src/relay/mysql.rs`).
    Mysql,
}

impl Service {
    /// The field that says where the secret may be used (a key's `hosts`, a login's `host`).
    pub fn where_field(&self) -> &'static str {
        match self {
            Service::SshAgent(f) => f.hosts,
            Service::Relay { .. } => "host",
        }
    }
}

/// The port a sealed `postgres` secret's relay socket is named after
/// (`<dir>/.s.PGSQL.5432`), and so the `PGPORT` the sandbox gets.
pub const PG_RELAY_PORT: &str = "5432";

/// Where in a request the proxy may put a sealed value. Narrow on purpose: a value swapped into
/// a place the server stores and shows (a JSON body, a file path) could be read back from
/// outside the sandbox, so each kind names only the places its clients send credentials in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "in", content = "name", rename_all = "snake_case")]
pub enum Place {
    /// `Authorization` (and `Proxy-Authorization` is never forwarded): a Bearer or `token`
    /// credential, or the user or password of Basic.
    Authorization,
    /// A header of this (lowercase) name.
    Header(&'static str),
    /// A field of an `application/x-www-form-urlencoded` body.
    FormField(&'static str),
    /// The request line, every header and form bodies: a generic secret, whose hosts its owner
    /// named.
    Anywhere,
}

/// What a sealable kind hides and where its values may go.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Seal {
    /// The fields the sandbox sees only as placeholders. Empty for `generic`: all its fields.
    pub fields: &'static [SealedField],
    /// Default host patterns (`api.openai.com`, or `*.amazonaws.com` for any subdomain). Empty
    /// means the user must name them (`--allow-host`).
    pub hosts: &'static [&'static str],
    /// A field whose value (a host, maybe with `:port`) is a host too (GitLab's `host`).
    pub host_field: Option<&'static str>,
    /// Where in a request the proxy puts the values.
    pub places: &'static [Place],
    /// The same, for people (`maestro kinds`, docs/sealed.md).
    pub substituted_in: &'static str,
}

/// A field that is sealed, with the prefixes its placeholder keeps when the value has one.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SealedField {
    pub name: &'static str,
    /// Longest first: the first one the value starts with is kept as it is.
    pub keep_prefixes: &'static [&'static str],
}

pub(super) const fn sealed(
    name: &'static str,
    keep_prefixes: &'static [&'static str],
) -> SealedField {
    SealedField { name, keep_prefixes }
}

/// A host pattern the user names is at most this long (a DNS name is at most 253 bytes).
pub const MAX_HOST_PATTERN: usize = 255;
/// A secret names at most this many hosts.
pub const MAX_HOSTS: usize = 32;
/// A value shorter than this gets a placeholder [`SHORT_PLACEHOLDER`] long, so that a
/// placeholder cannot turn up by chance in traffic; it is also the shortest placeholder the
/// agent's proxy accepts. Keys and tokens of every catalog kind are at least this long (an AWS
/// key id, the shortest, has 20 characters), so theirs keep their length.
pub const MIN_SAME_LENGTH: usize = 20;
/// The length of the placeholder of a short value.
pub const SHORT_PLACEHOLDER: usize = 24;

/// Why a secret's exposure or hosts were refused. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a {kind} secret cannot be sealed: {why}")]
    Unsupported { kind: String, why: String },
    #[error(
        "a sealed generic secret needs the hosts its values may be sent to; add --allow-host HOST (e.g. api.example.com or *.example.com)"
    )]
    NoHosts,
    #[error(
        "'{0}' is not a host pattern; use a DNS name (api.example.com) or *. and a domain (*.example.com), without scheme, port or path"
    )]
    BadPattern(String),
    #[error(
        "host '{host}' is not one a {kind} secret may be sent to ({allowed}); name only hosts among these"
    )]
    NotNarrower { host: String, kind: String, allowed: String },
    #[error("a secret names at most {MAX_HOSTS} hosts; this one names {0}")]
    TooManyHosts(usize),
    #[error(
        "--allow-host applies to sealed secrets only; add --exposure sealed or drop --allow-host"
    )]
    HostsOnPlain,
    #[error(
        "a sealed {kind} secret takes where it may be used from its {field} field, not --allow-host; drop --allow-host and set --field {field}=..."
    )]
    HostsInField { kind: String, field: String },
    #[error("a sealed {kind} secret's {field} {problem}")]
    AgentField { kind: String, field: String, problem: String },
}

/// Whether `host` (lowercase, no port) matches `pattern`: equal, or, for `*.domain`, a
/// subdomain of `domain` at any depth (never `domain` itself).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host.len() > domain.len() + 1
                && host.ends_with(domain)
                && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        }
        None => host.eq_ignore_ascii_case(pattern),
    }
}

/// Whether every host `narrow` matches is matched by `wide` too.
fn narrower(narrow: &str, wide: &str) -> bool {
    match (narrow.strip_prefix("*."), wide.strip_prefix("*.")) {
        (Some(n), Some(_)) => n == &wide[2..] || host_matches(wide, n),
        (Some(_), None) => false,
        (None, _) => host_matches(wide, narrow),
    }
}

/// A host pattern as the user typed it, checked and lowercased.
fn pattern(text: &str) -> Result<String, SealError> {
    let bad = || SealError::BadPattern(text.chars().take(80).collect());
    let lower = text.trim().to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if lower.len() > MAX_HOST_PATTERN || !name.contains('.') && name != "localhost" {
        return Err(bad());
    }
    if !name.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(lower)
}

/// The host of a `host[:port]` field value, lowercased, without brackets.
fn field_host(value: &str) -> String {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if v.matches(':').count() == 1 {
        v.split(':').next().unwrap_or(v)
    } else {
        v
    };
    host.to_ascii_lowercase()
}

/// The hosts a sealed secret of `kind` may be sent to: the user's (checked, each within the
/// kind's defaults) or else the kind's defaults. `host_field` is the value of the kind's host
/// field, if it has one.
pub fn sealed_hosts(
    kind: &Kind,
    host_field: Option<&str>,
    user_hosts: &[String],
) -> Result<Vec<String>, SealError> {
    if let Sealing::Agent(seal) = &kind.sealing {
        // The agent itself uses the value; no request carries it to any host.
        return if user_hosts.is_empty() {
            Ok(Vec::new())
        } else {
            Err(SealError::HostsInField {
                kind: kind.name.to_owned(),
                field: seal.service.where_field().to_owned(),
            })
        };
    }
    let seal = seal_of(kind)?;
    if user_hosts.len() > MAX_HOSTS {
        return Err(SealError::TooManyHosts(user_hosts.len()));
    }
    let mut defaults: Vec<String> = seal.hosts.iter().map(|h| (*h).to_owned()).collect();
    if let (Some(_), Some(value)) = (seal.host_field, host_field) {
        defaults = vec![field_host(value)];
    }
    let mut out: Vec<String> = Vec::new();
    for h in user_hosts {
        let p = pattern(h)?;
        if !kind.free_fields && !defaults.iter().any(|d| narrower(&p, d)) {
            return Err(SealError::NotNarrower {
                host: p,
                kind: kind.name.to_owned(),
                allowed: defaults.join(", "),
            });
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        out = defaults;
    }
    if out.is_empty() {
        return Err(SealError::NoHosts);
    }
    Ok(out)
}

/// The seal of a kind that can be sealed.
pub fn seal_of(kind: &Kind) -> Result<&Seal, SealError> {
    match &kind.sealing {
        Sealing::Swap(seal) | Sealing::SigV4(seal) => Ok(seal),
        Sealing::Agent(_) => Err(SealError::Unsupported {
            kind: kind.name.to_owned(),
            why: "the agent serves it itself, no request carries it".to_owned(),
        }),
        Sealing::Unsupported { why } => {
            Err(SealError::Unsupported { kind: kind.name.to_owned(), why: (*why).to_owned() })
        }
    }
}

/// Checks a secret's exposure and user-named hosts against its kind.
pub fn check_exposure(
    kind: &Kind,
    exposure: Exposure,
    host_field: Option<&str>,
    user_hosts: &[String],
) -> Result<(), SealError> {
    match exposure {
        Exposure::Plain if user_hosts.is_empty() => Ok(()),
        Exposure::Plain => Err(SealError::HostsOnPlain),
        Exposure::Sealed => sealed_hosts(kind, host_field, user_hosts).map(|_| ()),
    }
}

/// Checks what a sealed secret of a kind the agent serves needs of its fields: a key the agent
/// can load and sign with (OpenSSH format; Ed25519 or ECDSA), and a known_hosts field when
/// hosts are named (the agent knows a server by its host key only). Nothing for other kinds.
pub fn check_agent_fields(
    kind: &Kind,
    exposure: Exposure,
    fields: &BTreeMap<String, SecretValue>,
) -> Result<(), SealError> {
    let Sealing::Agent(AgentSeal { service: Service::SshAgent(seal), .. }) = &kind.sealing else {
        // A database relay needs nothing of its fields beyond the kind's own checks.
        return Ok(());
    };
    if exposure != Exposure::Sealed {
        return Ok(());
    }
    let refuse = |field: &str, problem: String| SealError::AgentField {
        kind: kind.name.to_owned(),
        field: field.to_owned(),
        problem,
    };
    let text = fields.get(seal.key).map(SecretValue::expose).unwrap_or("");
    let pass = fields.get(seal.passphrase).map(SecretValue::expose);
    let key = super::ssh::load_key(text, pass).map_err(|p| refuse(seal.key, p))?;
    if !super::ssh::agent_can_sign(&key) {
        return Err(refuse(
            seal.key,
            format!(
                "is a {} key, which the agent does not sign with; use an Ed25519 or ECDSA key (ssh-keygen -t ed25519)",
                key.algorithm()
            ),
        ));
    }
    if fields.contains_key(seal.hosts) && !fields.contains_key(seal.known_hosts) {
        return Err(refuse(
            seal.hosts,
            format!(
                "needs the {} field: the agent knows a server by its host key only (ssh-keyscan HOST gives the lines)",
                seal.known_hosts
            ),
        ));
    }
    Ok(())
}

/// Whether `field` of a secret of `kind` is sealed (replaced by a placeholder).
pub fn is_sealed_field(kind: &Kind, field: &str) -> bool {
    if let Sealing::Agent(seal) = &kind.sealing {
        return seal.hidden.contains(&field);
    }
    match seal_of(kind) {
        Ok(seal) => kind.free_fields || seal.fields.iter().any(|f| f.name == field),
        Err(_) => false,
    }
}

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const DIGIT: &[u8] = b"0123456789";
/// Separators a placeholder keeps where the value has them; every other character is drawn.
const SEPARATORS: &[u8] = b"-_.";

/// A placeholder for `value`: its kept prefix and separators, the rest drawn from the character
/// classes the value uses (letters and digits only), the same length (or
/// [`SHORT_PLACEHOLDER`] for a value shorter than [`MIN_SAME_LENGTH`]). `random` fills a buffer with random bytes.
pub fn placeholder(
    keep_prefixes: &[&str],
    value: &str,
    random: &mut dyn FnMut(&mut [u8]),
) -> String {
    let prefix = keep_prefixes.iter().find(|p| value.starts_with(**p)).copied().unwrap_or("");
    let rest = &value.as_bytes()[prefix.len()..];
    let mut alphabet: Vec<u8> = Vec::new();
    for class in [UPPER, LOWER, DIGIT] {
        if rest.iter().any(|b| class.contains(b)) {
            alphabet.extend_from_slice(class);
        }
    }
    if alphabet.len() < 20 {
        // A value of digits only, or of one letter case: draw from letters and digits anyway so
        // a placeholder is never guessable from a short alphabet.
        alphabet = [UPPER, LOWER, DIGIT].concat();
    }
    let short = value.len() < MIN_SAME_LENGTH;
    let len = if short { SHORT_PLACEHOLDER } else { value.len() };
    let mut out = String::with_capacity(len);
    out.push_str(prefix);
    let mut bytes = vec![0u8; len - prefix.len()];
    random(&mut bytes);
    for (i, r) in bytes.iter().enumerate() {
        // Keep the value's separators where it has them (`SG.x.y`, `github_pat_x_y`).
        match rest.get(i) {
            Some(b) if !short && SEPARATORS.contains(b) => out.push(*b as char),
            // 256 is not a multiple of the alphabet's size; the bias (at most 1 in 4) costs a
            // fraction of a bit per character of a placeholder that is not a secret.
            _ => out.push(alphabet[*r as usize % alphabet.len()] as char),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::kind;

    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 7u8;
        move |buf: &mut [u8]| {
            for b in buf {
                n = n.wrapping_mul(31).wrapping_add(17);
                *b = n;
            }
        }
    }

    #[test]
    fn placeholders_keep_prefix_separators_and_length() {
        let mut r = counter();
        let v = "sk-proj-AbCdEf0123456789AbCdEf0123456789";
        let p = placeholder(&["sk-proj-", "sk-"], v, &mut r);
        assert!(p.starts_with("sk-proj-"), "{p}");
        assert_eq!(p.len(), v.len());
        assert_ne!(p, v);
        let v = "SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg";
        let p = placeholder(&["SG."], v, &mut r);
        assert_eq!(p.find('.'), Some(2));
        assert_eq!(p.rfind('.'), v.rfind('.'));
        let v = "AKIAIOSFODNN7EXAMPLE";
        let p = placeholder(&["AKIA", "ASIA"], v, &mut r);
        assert!(p.starts_with("AKIA") && p.len() == 20, "{p}");
        assert!(p[4..].bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()), "{p}");
    }

    #[test]
    fn short_values_get_long_placeholders_of_safe_characters() {
        let mut r = counter();
        let p = placeholder(&[], "hunter2", &mut r);
        assert_eq!(p.len(), SHORT_PLACEHOLDER);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
        let p = placeholder(&[], "p@ss/w+rd=with;odd chars and more", &mut r);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric() || SEPARATORS.contains(&b)), "{p}");
    }

    #[test]
    fn two_draws_differ() {
        let mut a = counter();
        let v = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
        let p1 = placeholder(&["ghp_"], v, &mut a);
        let p2 = placeholder(&["ghp_"], v, &mut a);
        assert_ne!(p1, p2);
    }

    #[test]
    fn host_patterns_match_subdomains_not_the_apex_nor_lookalikes() {
        assert!(host_matches("*.amazonaws.com", "s3.amazonaws.com"));
        assert!(host_matches("*.amazonaws.com", "b.s3.us-east-1.amazonaws.com"));
        assert!(!host_matches("*.amazonaws.com", "amazonaws.com"));
        assert!(!host_matches("*.amazonaws.com", "evilamazonaws.com"));
        assert!(!host_matches("*.amazonaws.com", "amazonaws.com.evil.net"));
        assert!(host_matches("api.openai.com", "API.openai.com"));
        assert!(!host_matches("api.openai.com", "api.openai.com.evil.net"));
    }

    #[test]
    fn users_narrow_hosts_and_cannot_widen_them() {
        let aws = kind("aws").unwrap();
        let ok = sealed_hosts(aws, None, &["S3.us-east-1.amazonaws.com".into()]).unwrap();
        assert_eq!(ok, ["s3.us-east-1.amazonaws.com"]);
        assert!(sealed_hosts(aws, None, &["*.s3.amazonaws.com".into()]).is_ok());
        assert!(matches!(
            sealed_hosts(aws, None, &["evil.example.com".into()]),
            Err(SealError::NotNarrower { .. })
        ));
        assert!(matches!(
            sealed_hosts(aws, None, &["https://s3.amazonaws.com/".into()]),
            Err(SealError::BadPattern(_))
        ));
        assert_eq!(sealed_hosts(aws, None, &[]).unwrap(), ["*.amazonaws.com"]);
        let gitlab = kind("gitlab").unwrap();
        assert_eq!(
            sealed_hosts(gitlab, Some("GitLab.example.com:8443"), &[]).unwrap(),
            ["gitlab.example.com"]
        );
        let generic = kind("generic").unwrap();
        assert_eq!(sealed_hosts(generic, None, &[]), Err(SealError::NoHosts));
        assert!(sealed_hosts(generic, None, &["*.example.com".into()]).is_ok());
        assert!(matches!(
            check_exposure(kind("gcp").unwrap(), Exposure::Sealed, None, &[]),
            Err(SealError::Unsupported { .. })
        ));
        assert_eq!(
            check_exposure(aws, Exposure::Plain, None, &["s3.amazonaws.com".into()]),
            Err(SealError::HostsOnPlain)
        );
    }

    #[test]
    fn every_sealed_field_is_a_field_of_its_kind() {
        for k in crate::catalog::KINDS {
            if let Ok(seal) = seal_of(k) {
                for f in seal.fields {
                    assert!(k.fields.iter().any(|x| x.name == f.name), "{}.{}", k.name, f.name);
                }
                if let Some(h) = seal.host_field {
                    assert!(k.fields.iter().any(|x| x.name == h), "{}.{h}", k.name);
                }
                assert!(k.free_fields || !seal.fields.is_empty(), "{}", k.name);
            }
        }
    }
}
