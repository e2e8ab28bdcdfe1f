//! `maestro-exec`: asks the agent for the active secrets' variables and execs a command with
//! them added to the caller's environment, like `env VAR=... CMD`.
//!
//! It runs before every command, so it is small and quick: a blocking unix socket (opened
//! close-on-exec, so nothing of it reaches the command), arguments parsed by hand, no runtime,
//! no logging set-up. Exit status: the command's own (it replaces this process), 125 for
//! maestro-exec's own errors, 126 when the command cannot run, 127 when it is not found.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use maestro_wire::limits::MAX_SOCK_RESPONSE_BYTES;
use maestro_wire::sock::{
    Action, DEFAULT_SOCKET, ListedSecret, Request, Response, SOCKET_ENV, SockErrorCode,
};

use crate::jsonline::{self, LineError};

/// maestro-exec's own errors.
pub const EXIT_OWN: i32 = 125;
/// The command exists but cannot be run.
pub const EXIT_CANNOT_RUN: i32 = 126;
/// The command is not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// How long the agent has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "\
usage: maestro-exec [--only NAME]... [--] CMD [ARGS...]
       maestro-exec --list [--json]
       maestro-exec git-credential <get|store|erase>
       maestro-exec aws-credential-process [NAME]

Runs CMD with the variables of the session's active secrets (or only the named ones) added to
its environment. --list shows the active secrets, their kinds, variables and files; never values.
The agent's socket is $MAESTRO_AGENT_SOCK, or /run/maestro/agent.sock.
Exit status: CMD's own; 125 maestro-exec's own error; 126 CMD cannot run; 127 CMD not found.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    Run { only: Vec<String>, command: Vec<OsString> },
    List { json: bool },
    Help,
    Version,
}

/// Parses the arguments (without argv[0]). Options stop at `--` or at the first argument that
/// is not an option, which starts CMD, so CMD's own options are never taken for ours.
///
/// The credential helpers' subcommands (`git-credential`, `aws-credential-process`) are matched
/// on `args[0]` before this, in [`crate::helpers::dispatch`].
pub fn parse(args: &[OsString]) -> Result<Invocation, String> {
    let mut only = Vec::new();
    let mut list = false;
    let mut json = false;
    let mut i = 0;
    while i < args.len() {
        let Some(arg) = args[i].to_str() else { break };
        match arg {
            "--" => {
                i += 1;
                break;
            }
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            "--list" => list = true,
            "--json" => json = true,
            "--only" => {
                i += 1;
                let name =
                    args.get(i).and_then(|a| a.to_str()).ok_or("--only needs a secret name")?;
                only.push(name.to_owned());
            }
            _ if arg.starts_with("--only=") => only.push(arg["--only=".len()..].to_owned()),
            _ if arg.starts_with('-') && arg.len() > 1 => {
                return Err(format!("unknown option {arg}; see maestro-exec --help"));
            }
            _ => break,
        }
        i += 1;
    }
    let command: Vec<OsString> = args[i..].to_vec();
    if list {
        if !command.is_empty() || !only.is_empty() {
            return Err("--list takes no command and no --only".to_owned());
        }
        return Ok(Invocation::List { json });
    }
    if json {
        return Err("--json goes with --list".to_owned());
    }
    if command.is_empty() {
        return Err(
            "no command given; usage: maestro-exec [--only NAME]... [--] CMD [ARGS...]".into()
        );
    }
    if let Some(bad) = only.iter().find(|n| !maestro_wire::names::is_valid_secret_name(n)) {
        return Err(format!("{bad:?} is not a secret name (they look like AWS_PROD)"));
    }
    Ok(Invocation::Run { only, command })
}

/// Where the agent listens.
pub fn socket_path() -> PathBuf {
    match std::env::var_os(SOCKET_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// A failure of maestro-exec itself: one line, exit 125.
#[derive(Debug)]
pub struct Failure(pub String);

/// Sends one request and reads the answer.
pub fn ask(socket: &std::path::Path, action: Action) -> Result<Response, Failure> {
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Failure(format!(
            "no agent at {} (is maestro-agent running? set {SOCKET_ENV} to its socket)",
            socket.display()
        )),
        io::ErrorKind::PermissionDenied => Failure(format!(
            "cannot reach the agent at {}: permission denied (run as the sandbox user)",
            socket.display()
        )),
        _ => Failure(format!("cannot reach the agent at {}: {e}", socket.display())),
    })?;
    check_server(&stream, socket)?;
    let timeouts = stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(ANSWER_TIMEOUT)));
    let io_failure =
        |e: io::Error| Failure(format!("talking to the agent at {} failed: {e}", socket.display()));
    timeouts.map_err(io_failure)?;
    let line = jsonline::to_line(&Request::new(action))
        .map_err(|_| Failure("cannot encode the request".to_owned()))?;
    match stream.write_all(&line) {
        Ok(()) => {}
        // The agent answers a refused uid at once and closes without reading: its answer is
        // still there to read.
        Err(e)
            if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => {}
        Err(e) => return Err(io_failure(e)),
    }
    let answer =
        jsonline::read_line_from(&stream, MAX_SOCK_RESPONSE_BYTES).map_err(|e| match e {
            LineError::Read(e)
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
            {
                Failure(format!("the agent at {} did not answer within 10 s", socket.display()))
            }
            LineError::Truncated => Failure(format!(
                "the agent at {} closed the connection without answering; see its log",
                socket.display()
            )),
            e => Failure(format!("reading the agent's answer failed: {e}")),
        })?;
    // Position only: the answer holds values, and serde's messages can quote input.
    serde_json::from_slice(&answer).map_err(|e| {
        Failure(format!(
            "the agent's answer is not understood (line {}, column {}); use the maestro-exec that \
             came with the agent",
            e.line(),
            e.column()
        ))
    })
}

/// Trusts the socket only when root serves it (SO_PEERCRED of the listening process): the
/// agent runs as root, and whoever else listens there could hand out any environment
/// (`LD_PRELOAD`, `PATH`) to the command about to run, or learn which secrets it asks for.
pub fn check_server(stream: &UnixStream, socket: &std::path::Path) -> Result<(), Failure> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| {
            Failure(format!(
                "cannot check who serves the agent socket {} (SO_PEERCRED: {e}); refusing to trust it",
                socket.display()
            ))
        })?;
    if cred.uid() != 0 {
        return Err(Failure(format!(
            "the agent socket {} is served by uid {}, not root; refusing to trust it (check {SOCKET_ENV})",
            socket.display(),
            cred.uid()
        )));
    }
    Ok(())
}

/// The agent's refusal as one line.
fn refusal(code: SockErrorCode, message: String) -> Failure {
    match code {
        // The agent's message already says what to do.
        SockErrorCode::Unavailable | SockErrorCode::Forbidden | SockErrorCode::NotActive => {
            Failure(message)
        }
        _ => Failure(format!("the agent refused: {message}")),
    }
}

/// Formats `--list` for people.
pub fn format_list(secrets: &[ListedSecret]) -> String {
    if secrets.is_empty() {
        return "no active secrets in this session\n".to_owned();
    }
    let mut out = String::new();
    for s in secrets {
        out.push_str(&format!("{} ({}, version {})\n", s.name, s.kind, s.version));
        out.push_str(&format!("  variables: {}\n", s.variables.join(" ")));
        out.push_str(&format!("  files:     {}\n", s.files.join(" ")));
        if let Some(hint) = &s.needs_reauth {
            out.push_str(&format!("  needs re-authorization: {hint}\n"));
        }
    }
    out
}

fn list(json: bool) -> Result<i32, Failure> {
    let secrets = match ask(&socket_path(), Action::List)? {
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
pub fn resolve(program: &std::ffi::OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut not_executable = None;
    for dir in std::env::split_paths(&path) {
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let candidate = dir.join(program);
        if std::fs::metadata(&candidate).is_ok_and(|m| m.is_file()) {
            if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
                return Some(candidate);
            }
            not_executable.get_or_insert(candidate);
        }
    }
    not_executable
}

/// Execs `command` with the secrets' variables; returns only on failure.
fn run(only: Vec<String>, command: Vec<OsString>) -> Result<i32, Failure> {
    let program = &command[0];
    let name = program.as_bytes().rsplit(|b| *b == b'/').next().unwrap_or_default();
    let action = Action::Env {
        only,
        command: Some(String::from_utf8_lossy(name).chars().take(64).collect()),
    };
    let vars = match ask(&socket_path(), action)? {
        Response::Env { vars } => vars,
        Response::Error { code, message } => return Err(refusal(code, message)),
        _ => return Err(Failure("the agent answered something else than variables".to_owned())),
    };
    let shown = program.to_string_lossy();
    let Some(path) = resolve(program) else {
        eprintln!("maestro-exec: {shown}: command not found");
        return Ok(EXIT_NOT_FOUND);
    };
    let mut cmd = std::process::Command::new(path);
    cmd.arg0(program).args(&command[1..]);
    for v in &vars {
        cmd.env(&v.name, v.value.expose());
    }
    let err = cmd.exec();
    drop(vars);
    Ok(match err.kind() {
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
    })
}

/// The whole program; returns the exit status (when it did not exec).
pub fn main_with(args: &[OsString]) -> i32 {
    if let Some(code) = crate::helpers::dispatch(args) {
        return code;
    }
    let outcome = match parse(args) {
        Err(message) => Err(Failure(message)),
        Ok(Invocation::Help) => {
            let _ = io::stdout().write_all(USAGE.as_bytes());
            Ok(0)
        }
        Ok(Invocation::Version) => {
            let _ = writeln!(io::stdout(), "maestro-exec {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Ok(Invocation::List { json }) => list(json),
        Ok(Invocation::Run { only, command }) => run(only, command),
    };
    match outcome {
        Ok(code) => code,
        Err(Failure(message)) => {
            eprintln!("maestro-exec: {message}");
            EXIT_OWN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_like_env() {
        assert_eq!(
            parse(&args(&["--only", "AWS", "--only=GH", "make", "-j4"])).unwrap(),
            Invocation::Run {
                only: vec!["AWS".into(), "GH".into()],
                command: args(&["make", "-j4"])
            }
        );
        // CMD's own options are CMD's.
        assert_eq!(
            parse(&args(&["ls", "--list"])).unwrap(),
            Invocation::Run { only: vec![], command: args(&["ls", "--list"]) }
        );
        assert_eq!(
            parse(&args(&["--", "--weird-cmd"])).unwrap(),
            Invocation::Run { only: vec![], command: args(&["--weird-cmd"]) }
        );
        assert_eq!(parse(&args(&["--list", "--json"])).unwrap(), Invocation::List { json: true });
        assert_eq!(parse(&args(&["--help"])).unwrap(), Invocation::Help);
    }

    #[test]
    fn refuses_bad_usage_with_one_line() {
        assert!(parse(&args(&[])).unwrap_err().starts_with("no command given"));
        assert!(parse(&args(&["--only"])).unwrap_err().contains("needs a secret name"));
        assert!(
            parse(&args(&["--only", "bad-name", "x"])).unwrap_err().contains("not a secret name")
        );
        assert!(parse(&args(&["--frob", "x"])).unwrap_err().contains("unknown option --frob"));
        assert!(parse(&args(&["--list", "x"])).is_err());
        assert!(parse(&args(&["--json", "x"])).is_err());
    }

    #[test]
    fn missing_agent_is_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        let Err(Failure(msg)) = ask(&dir.path().join("agent.sock"), Action::List) else { panic!() };
        assert_eq!(
            msg,
            format!(
                "no agent at {} (is maestro-agent running? set MAESTRO_AGENT_SOCK to its socket)",
                dir.path().join("agent.sock").display()
            )
        );
    }

    #[test]
    fn resolves_like_a_shell() {
        assert_eq!(resolve(OsString::from("sh").as_os_str()).unwrap().file_name().unwrap(), "sh");
        assert_eq!(resolve(OsString::from("./x").as_os_str()), Some(PathBuf::from("./x")));
        assert_eq!(resolve(OsString::from("no-such-command-xyz").as_os_str()), None);
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
        }]);
        assert!(text.starts_with("AWS_DEV (aws, version 2)\n  variables: AWS_ACCESS_KEY_ID\n"));
        assert_eq!(format_list(&[]), "no active secrets in this session\n");
    }
}
