//! What `maestro-exec` does with the agent's answer: `--list` prints it, and a command is
//! resolved like a shell does and exec'd with the variables added.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use maestro_wire::catalog::Exposure;
use maestro_wire::sock::{Action, ListedSecret, Response};

use crate::client::{self, Failure, refusal};
use crate::{EXIT_CANNOT_RUN, EXIT_NOT_FOUND};

/// Formats `--list` for people.
pub fn format_list(secrets: &[ListedSecret]) -> String {
    if secrets.is_empty() {
        return "no active secrets in this session\n".to_owned();
    }
    let mut out = String::new();
    for s in secrets {
        let sealed = if s.exposure == Exposure::Sealed { ", sealed" } else { "" };
        out.push_str(&format!("{} ({}, version {}{sealed})\n", s.name, s.kind, s.version));
        out.push_str(&format!("  variables: {}\n", s.variables.join(" ")));
        out.push_str(&format!("  files:     {}\n", s.files.join(" ")));
        if s.exposure == Exposure::Sealed {
            // The variables and files hold placeholders; say where the values go instead.
            out.push_str(&format!(
                "  sealed:    placeholders only; the agent's proxy sends the values to {}\n",
                s.hosts.join(" ")
            ));
        }
        if let Some(hint) = &s.needs_reauth {
            out.push_str(&format!("  needs re-authorization: {hint}\n"));
        }
    }
    out
}

/// `--list [--json]`.
pub fn list(json: bool) -> Result<i32, Failure> {
    let secrets = match client::ask(&client::socket_path(), Action::List)? {
        Response::List { secrets } => secrets,
        Response::Error { code, message } => return Err(refusal(code, message)),
        _ => return Err(Failure("the agent answered something else than a list".to_owned())),
    };
    let text = if json {
        let mut t = serde_json::to_string_pretty(&secrets)
            .map_err(|_| Failure("cannot encode the list".to_owned()))?;
        t.push('\n');
        t
    } else {
        format_list(&secrets)
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
        Response::Env { vars } => vars,
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
    fn resolves_like_a_shell() {
        assert_eq!(resolve(OsStr::new("sh")).unwrap().file_name().unwrap(), "sh");
        assert_eq!(resolve(OsStr::new("./x")), Some(PathBuf::from("./x")));
        assert_eq!(resolve(OsStr::new("no-such-command-xyz")), None);
    }

    #[test]
    fn list_never_needs_values() {
        let text = format_list(&[ListedSecret {
            name: "AWS_DEV".into(),
            kind: "aws".into(),
            version: 2,
            variables: vec!["AWS_ACCESS_KEY_ID".into()],
            files: vec!["/run/secrets/aws/credentials".into()],
            needs_reauth: None,
            exposure: Exposure::Plain,
            hosts: vec![],
        }]);
        assert!(text.starts_with("AWS_DEV (aws, version 2)\n  variables: AWS_ACCESS_KEY_ID\n"));
        let text = format_list(&[ListedSecret {
            name: "OPENAI".into(),
            kind: "openai".into(),
            version: 1,
            variables: vec!["OPENAI_API_KEY".into()],
            files: vec![],
            needs_reauth: None,
            exposure: Exposure::Sealed,
            hosts: vec!["api.openai.com".into()],
        }]);
        assert!(text.starts_with("OPENAI (openai, version 1, sealed)\n"), "{text}");
        assert!(text.contains("sends the values to api.openai.com\n"), "{text}");
        assert_eq!(format_list(&[]), "no active secrets in this session\n");
    }
}
