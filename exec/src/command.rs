//! What `maestro-exec` does with the agent's answer: `--list` prints it, and a command is
//! resolved like a shell does and exec'd with the variables added.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use maestro_wire::SecretValue;
use maestro_wire::catalog::{self, Exposure, Sealing};
use maestro_wire::duration::format_secs;
use maestro_wire::sock::{Action, EnvVar, ListedSecret, ListedSession, Response};

use crate::client::{self, Failure, refusal};
use crate::{EXIT_CANNOT_RUN, EXIT_NOT_FOUND};

/// The session line of `--list`: what the user names to activate secrets here.
fn session_line(session: &ListedSession) -> String {
    match &session.label {
        Some(label) => format!("session {} (label {label})\n", session.id),
        None => format!("session {}\n", session.id),
    }
}

/// When an activation ends, and how long that is from `now` (unix seconds).
fn until_line(until: &str, now: i64) -> String {
    match crate::rfc3339::unix_seconds(until) {
        Some(at) => {
            let left = at.saturating_sub(now).max(0).unsigned_abs();
            format!("  active until {until} ({} left)\n", format_secs(left))
        }
        None => format!("  active until {until}\n"),
    }
}

/// What a sealed secret gives instead of its values: placeholders the agent's proxy swaps for
/// the values on the way to the secret's hosts, or (a key or login the agent uses itself) the
/// socket the agent serves, with no value at all.
fn sealed_line(s: &ListedSecret) -> String {
    let hosts = s.hosts.join(" ");
    match catalog::kind(&s.kind).map(|k| &k.sealing) {
        Some(Sealing::Agent(seal)) if hosts.is_empty() => {
            format!("  sealed:    no value here; the agent serves {}\n", seal.served)
        }
        Some(Sealing::Agent(seal)) => {
            format!("  sealed:    no value here, for {hosts}; the agent serves {}\n", seal.served)
        }
        _ => format!(
            "  sealed:    placeholders only; the agent's proxy sends the values to {hosts}\n"
        ),
    }
}

/// Formats `--list` for people: the session (when the agent names it), then each secret.
pub fn format_list(session: Option<&ListedSession>, secrets: &[ListedSecret], now: i64) -> String {
    let mut out = session.map(session_line).unwrap_or_default();
    if secrets.is_empty() {
        out.push_str("no active secrets in this session\n");
        return out;
    }
    for s in secrets {
        let sealed = if s.exposure == Exposure::Sealed { ", sealed" } else { "" };
        out.push_str(&format!("{} ({}, version {}{sealed})\n", s.name, s.kind, s.version));
        out.push_str(&format!("  variables: {}\n", s.variables.join(" ")));
        out.push_str(&format!("  files:     {}\n", s.files.join(" ")));
        if s.exposure == Exposure::Sealed {
            out.push_str(&sealed_line(s));
        }
        let owners_field = catalog::kind(&s.kind).and_then(|k| k.owners_field());
        if let Some(owners) = owners_field.and_then(|f| s.shown_fields.get(f)) {
            out.push_str(&format!(
                "  owners:    {owners} (git gets it for these repositories only; no variables)\n"
            ));
        }
        if let Some(until) = &s.active_until {
            out.push_str(&until_line(until, now));
        }
        if let Some(hint) = &s.needs_reauth {
            out.push_str(&format!("  needs re-authorization: {hint}\n"));
        }
    }
    out
}

/// Seconds since the epoch by the system clock (0 before 1970, which only shows more time left).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `--list [--json]`.
pub fn list(json: bool) -> Result<i32, Failure> {
    let (secrets, session) = match client::ask(&client::socket_path(), Action::List)? {
        Response::List { secrets, session } => (secrets, session),
        Response::Error { code, message } => return Err(refusal(code, message)),
        _ => return Err(Failure("the agent answered something else than a list".to_owned())),
    };
    let text = if json {
        let mut t = serde_json::to_string_pretty(&secrets)
            .map_err(|_| Failure("cannot encode the list".to_owned()))?;
        t.push('\n');
        t
    } else {
        format_list(session.as_ref(), &secrets, unix_now())
    };
    io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| Failure(format!("cannot print the list: {e}")))?;
    Ok(0)
}

/// Finds `program` like a shell does: as given when it holds a '/', else in the caller's PATH,
/// preferring an executable file over a non-executable one. `None` when there is no such file
/// at all, which is "not found" (127) even when some PATH directory could not be searched:
/// execvp would report that as EACCES, which is a different failure (126).
pub fn resolve(program: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut not_executable = None;
    for dir in std::env::split_paths(&path) {
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let candidate = dir.join(program);
        if std::fs::metadata(&candidate).is_ok_and(|m| m.is_file()) {
            if crate::sys::is_executable(&candidate) {
                return Some(candidate);
            }
            not_executable.get_or_insert(candidate);
        }
    }
    not_executable
}

/// Execs `command` with the secrets' variables (returns only on failure); or, with `mask` and
/// values worth masking, runs it as a child with its output masked (see [`crate::mask`]).
pub fn run(only: Vec<String>, command: Vec<OsString>, mask: bool) -> Result<i32, Failure> {
    let program = &command[0];
    let name = program.as_bytes().rsplit(|b| *b == b'/').next().unwrap_or_default();
    let action = Action::Env {
        only,
        command: Some(String::from_utf8_lossy(name).chars().take(64).collect()),
    };
    let vars = match client::ask(&client::socket_path(), action)? {
        Response::Env { vars, git_path_hosts } => {
            let count = std::env::var_os(GIT_CONFIG_COUNT);
            let mut vars = vars;
            vars.extend(git_path_config(count.as_deref(), &git_path_hosts));
            vars
        }
        Response::Error { code, message } => return Err(refusal(code, message)),
        _ => return Err(Failure("the agent answered something else than variables".to_owned())),
    };
    let shown = program.to_string_lossy();
    let Some(path) = resolve(program) else {
        eprintln!("maestro-exec: {shown}: command not found");
        return Ok(EXIT_NOT_FOUND);
    };
    if mask && crate::mask::needed(&vars) {
        return Ok(match crate::mask::run(&path, program, &command[1..], vars)? {
            Ok(code) => code,
            Err(err) => cannot_run(&shown, &err),
        });
    }
    let mut cmd = std::process::Command::new(path);
    cmd.arg0(program).args(&command[1..]);
    for v in &vars {
        cmd.env(&v.name, v.value.expose());
    }
    let err = cmd.exec();
    drop(vars);
    Ok(cannot_run(&shown, &err))
}

const GIT_CONFIG_COUNT: &str = "GIT_CONFIG_COUNT";

/// git configuration in the environment (git-config(1), `GIT_CONFIG_COUNT`) that makes git
/// send the repository path to its credential helper for each host (`useHttpPath`), so that
/// `maestro-exec git-credential` can tell which owner's secret a repository needs. Added
/// after the caller's own entries (`count`: the caller's `GIT_CONFIG_COUNT`); nothing when
/// that count is not a number, which git itself refuses.
pub fn git_path_config(count: Option<&OsStr>, hosts: &[String]) -> Vec<EnvVar> {
    if hosts.is_empty() {
        return Vec::new();
    }
    let first = match count.map(|c| c.to_str().and_then(|c| c.trim().parse::<usize>().ok())) {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => return Vec::new(),
    };
    let var =
        |name: String, value: String| EnvVar { name, value: SecretValue::new(value), secret: None };
    let mut out = Vec::with_capacity(2 * hosts.len() + 1);
    for (i, host) in hosts.iter().enumerate() {
        let n = first + i;
        out.push(var(
            format!("GIT_CONFIG_KEY_{n}"),
            format!("credential.https://{host}.useHttpPath"),
        ));
        out.push(var(format!("GIT_CONFIG_VALUE_{n}"), "true".to_owned()));
    }
    out.push(var(GIT_CONFIG_COUNT.to_owned(), (first + hosts.len()).to_string()));
    out
}

/// Says why CMD could not run; returns the exit status for it.
fn cannot_run(shown: &str, err: &io::Error) -> i32 {
    match err.kind() {
        io::ErrorKind::NotFound => {
            eprintln!("maestro-exec: {shown}: command not found");
            EXIT_NOT_FOUND
        }
        io::ErrorKind::PermissionDenied => {
            eprintln!("maestro-exec: {shown}: permission denied");
            EXIT_CANNOT_RUN
        }
        _ => {
            eprintln!("maestro-exec: cannot run {shown}: {err}");
            EXIT_CANNOT_RUN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_sends_the_path_for_hosts_of_secrets_with_owners() {
        let shown = |vars: Vec<EnvVar>| -> Vec<String> {
            vars.iter().map(|v| format!("{}={}", v.name, v.value.expose())).collect()
        };
        assert!(git_path_config(None, &[]).is_empty());
        let hosts = vec!["github.com".to_owned(), "git.example.com:8443".to_owned()];
        assert_eq!(
            shown(git_path_config(None, &hosts)),
            [
                "GIT_CONFIG_KEY_0=credential.https://github.com.useHttpPath",
                "GIT_CONFIG_VALUE_0=true",
                "GIT_CONFIG_KEY_1=credential.https://git.example.com:8443.useHttpPath",
                "GIT_CONFIG_VALUE_1=true",
                "GIT_CONFIG_COUNT=2",
            ]
        );
        // After the caller's own entries; a count git would refuse is left alone.
        let after = shown(git_path_config(Some(OsStr::new("3")), &hosts[..1]));
        assert_eq!(after[0], "GIT_CONFIG_KEY_3=credential.https://github.com.useHttpPath");
        assert_eq!(after[2], "GIT_CONFIG_COUNT=4");
        assert!(git_path_config(Some(OsStr::new("x")), &hosts).is_empty());
    }

    #[test]
    fn resolves_like_a_shell() {
        assert_eq!(resolve(OsStr::new("sh")).unwrap().file_name().unwrap(), "sh");
        assert_eq!(resolve(OsStr::new("./x")), Some(PathBuf::from("./x")));
        assert_eq!(resolve(OsStr::new("no-such-command-xyz")), None);
    }

    #[test]
    fn list_never_needs_values() {
        let text = format_list(
            None,
            &[ListedSecret {
                name: "AWS_DEV".into(),
                kind: "aws".into(),
                version: 2,
                variables: vec!["AWS_ACCESS_KEY_ID".into()],
                files: vec!["/run/secrets/aws/credentials".into()],
                needs_reauth: None,
                exposure: Exposure::Plain,
                hosts: vec![],
                active_until: None,
                shown_fields: Default::default(),
            }],
            0,
        );
        assert!(text.starts_with("AWS_DEV (aws, version 2)\n  variables: AWS_ACCESS_KEY_ID\n"));
        let session = ListedSession { id: "0123abcd".into(), label: Some("ci".into()) };
        let text = format_list(
            Some(&session),
            &[ListedSecret {
                name: "OPENAI".into(),
                kind: "openai".into(),
                version: 1,
                variables: vec!["OPENAI_API_KEY".into()],
                files: vec![],
                needs_reauth: None,
                exposure: Exposure::Sealed,
                hosts: vec!["api.openai.com".into()],
                active_until: Some("1970-01-01T02:00:00Z".into()),
                shown_fields: Default::default(),
            }],
            60,
        );
        assert!(
            text.starts_with("session 0123abcd (label ci)\nOPENAI (openai, version 1, sealed)\n"),
            "{text}"
        );
        assert!(text.contains("sends the values to api.openai.com\n"), "{text}");
        // A login the agent uses itself: no placeholder, no proxy; the socket it serves.
        let pg = ListedSecret {
            name: "DB".into(),
            kind: "postgres".into(),
            version: 1,
            variables: vec!["PGHOST".into()],
            files: vec![],
            needs_reauth: None,
            exposure: Exposure::Sealed,
            hosts: vec!["db.internal".into()],
            active_until: None,
            shown_fields: Default::default(),
        };
        let pg_text = format_list(None, std::slice::from_ref(&pg), 0);
        let scoped = ListedSecret {
            name: "GH_WORK".into(),
            kind: "github".into(),
            exposure: Exposure::Plain,
            variables: vec![],
            shown_fields: [("owners".to_owned(), "acme, alice/x".to_owned())].into(),
            ..pg
        };
        let gh_text = format_list(None, &[scoped], 0);
        assert!(
            gh_text.contains(
                "GH_WORK (github, version 1)\n  variables: \n  files:     \n  owners:    acme, alice/x (git gets it for these repositories only; no variables)\n"
            ),
            "{gh_text}"
        );
        assert!(
            pg_text.contains("  sealed:    no value here, for db.internal; the agent serves a PostgreSQL unix socket"),
            "{pg_text}"
        );
        assert!(!pg_text.contains("proxy"), "{pg_text}");
        assert!(text.contains("  active until 1970-01-01T02:00:00Z (1h59m left)\n"), "{text}");
        assert_eq!(format_list(None, &[], 0), "no active secrets in this session\n");
        let empty = ListedSession { id: "0123abcd".into(), label: None };
        assert_eq!(
            format_list(Some(&empty), &[], 0),
            "session 0123abcd\nno active secrets in this session\n"
        );
    }
}
