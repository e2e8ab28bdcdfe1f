//! The agent's socket, blocking: one request line out, one answer line in, from a server that
//! must be root.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use maestro_wire::jsonline;
use maestro_wire::limits::MAX_SOCK_RESPONSE_BYTES;
use maestro_wire::sock::{Action, DEFAULT_SOCKET, Request, Response, SOCKET_ENV, SockErrorCode};

use crate::line::{self, LineError};

/// How long the agent has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

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
pub fn ask(socket: &Path, action: Action) -> Result<Response, Failure> {
    let mut stream = connect(socket)?;
    let timeouts = stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(ANSWER_TIMEOUT)));
    let io_failure =
        |e: io::Error| Failure(format!("talking to the agent at {} failed: {e}", socket.display()));
    timeouts.map_err(io_failure)?;
    let request = jsonline::to_line(&Request::new(action))
        .map_err(|_| Failure("cannot encode the request".to_owned()))?;
    match stream.write_all(&request) {
        Ok(()) => {}
        // The agent answers a refused uid at once and closes without reading: its answer is
        // still there to read.
        Err(e)
            if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => {}
        Err(e) => return Err(io_failure(e)),
    }
    let answer = line::read_line_from(&stream, MAX_SOCK_RESPONSE_BYTES)
        .map_err(|e| answer_failure(e, socket, ANSWER_TIMEOUT))?;
    parse_answer(&answer)
}

/// A failure to read the agent's answer, as one line.
pub fn answer_failure(e: LineError, socket: &Path, timeout: Duration) -> Failure {
    match e {
        LineError::Read(e)
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
        {
            Failure(format!(
                "the agent at {} did not answer within {} s",
                socket.display(),
                timeout.as_secs()
            ))
        }
        LineError::Truncated => Failure(format!(
            "the agent at {} closed the connection without answering; see its log",
            socket.display()
        )),
        e => Failure(format!("reading the agent's answer failed: {e}")),
    }
}

/// Parses an answer line.
pub fn parse_answer(answer: &[u8]) -> Result<Response, Failure> {
    // Position only: the answer holds values, and serde's messages can quote input.
    serde_json::from_slice(answer).map_err(|e| {
        Failure(format!(
            "the agent's answer is not understood (line {}, column {}); use the maestro-exec that \
             came with the agent",
            e.line(),
            e.column()
        ))
    })
}

/// Connects to the agent and checks that root serves the socket.
pub fn connect(socket: &Path) -> Result<UnixStream, Failure> {
    let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
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
    Ok(stream)
}

/// Trusts the socket only when root serves it (SO_PEERCRED of the listening process): the
/// agent runs as root, and whoever else listens there could hand out any environment
/// (`LD_PRELOAD`, `PATH`) to the command about to run, or learn which secrets it asks for.
pub fn check_server(stream: &UnixStream, socket: &Path) -> Result<(), Failure> {
    let uid = crate::sys::peer_uid(stream).map_err(|e| {
        Failure(format!(
            "cannot check who serves the agent socket {} (SO_PEERCRED: {e}); refusing to trust it",
            socket.display()
        ))
    })?;
    if uid != 0 {
        return Err(Failure(format!(
            "the agent socket {} is served by uid {uid}, not root; refusing to trust it (check {SOCKET_ENV})",
            socket.display(),
        )));
    }
    Ok(())
}

/// The agent's refusal as one line.
pub fn refusal(code: SockErrorCode, message: String) -> Failure {
    match code {
        // The agent's message already says what to do.
        SockErrorCode::Unavailable | SockErrorCode::Forbidden | SockErrorCode::NotActive => {
            Failure(message)
        }
        _ => Failure(format!("the agent refused: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The attack: a sandbox user listens on a socket and waits for `maestro-exec` to ask it for
    /// an environment. Needs root (to run the listener as uid 1000), setpriv and
    /// /usr/bin/python3 (a python under /root is out of uid 1000's reach); skipped otherwise.
    #[test]
    fn a_server_that_is_not_root_is_not_trusted() {
        use std::io::BufRead;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        use std::process::{Command, Stdio};

        let python = std::path::Path::new("/usr/bin/python3");
        if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) || !python.exists() {
            eprintln!("skipped: needs root and /usr/bin/python3 to run a forged agent as uid 1000");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("agent.sock");
        let listener = Command::new("setpriv")
            .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
            .arg(python)
            .arg("-c")
            .arg(
                "import socket, sys, time\n\
                 s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()\n\
                 print('ready', flush=True); time.sleep(60)",
            )
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn();
        let mut listener = match listener {
            Ok(child) => child,
            Err(e) => {
                eprintln!("skipped: cannot start setpriv: {e}");
                return;
            }
        };
        let mut ready = String::new();
        let stdout = listener.stdout.take().unwrap();
        std::io::BufReader::new(stdout).read_line(&mut ready).unwrap();
        let outcome = ask(&path, Action::List);
        let _ = listener.kill();
        let _ = listener.wait();
        assert_eq!(ready.trim(), "ready");
        let Err(Failure(msg)) = outcome else { panic!("a forged agent was trusted") };
        assert!(msg.contains("is served by uid 1000, not root; refusing to trust it"), "{msg}");
    }
}
