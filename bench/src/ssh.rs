//! Row 7, sealed SSH keys: what one signature costs through the agent's ssh-agent socket
//! against the same signature made in process with the same key, and how soon after a
//! deactivation an open connection to the socket is closed.
//!
//! The agent signs for the sandbox user only, so the client side runs as that user: this same
//! executable, `maestro-bench ssh-client` (hidden), started through `setpriv`. It connects,
//! lists the key, asks for `--count` signatures and prints their times (JSON seconds); with
//! `--hold` it then waits on the open connection and prints `closed` when the agent closes it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use ssh_agent_lib::proto::{Request, Response, SignRequest};
use ssh_agent_lib::ssh_encoding::{Decode, Encode};
use ssh_key::{Algorithm, LineEnding, PrivateKey};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Settings;
use crate::fixture::{Bins, SANDBOX_UID};
use crate::one_secret::{OneSecret, revocation_row};
use crate::report::{Figure, Row, Spread, Unit, format_seconds};
use crate::stats::Summary;

const SECTION: &str = "Sealed secrets: SSH keys through the agent";
const SECRET: &str = "BENCH_SSH";
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// User-authentication data of a session (what ssh asks an agent to sign).
fn userauth(i: usize) -> Vec<u8> {
    let id = format!("bench-session-{i:08}");
    let mut d = (id.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(id.as_bytes());
    d.extend_from_slice(&[50; 64]);
    d
}

fn roundtrip(s: &mut UnixStream, request: &Request) -> anyhow::Result<Response> {
    let mut out = Vec::new();
    let len = request.encoded_len().map_err(|e| anyhow!("cannot encode a request: {e}"))?;
    (len as u32).encode(&mut out).map_err(|e| anyhow!("cannot encode a request: {e}"))?;
    request.encode(&mut out).map_err(|e| anyhow!("cannot encode a request: {e}"))?;
    s.write_all(&out).context("the agent closed the socket")?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).context("the agent closed the socket")?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).context("the agent closed the socket")?;
    Response::decode(&mut &body[..]).map_err(|e| anyhow!("the agent's answer is garbled: {e}"))
}

/// The client side (as the sandbox user): `count` signatures, then optionally hold.
pub fn client(socket: &Path, count: usize, hold: bool) -> anyhow::Result<()> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let credential = match roundtrip(&mut s, &Request::RequestIdentities)? {
        Response::IdentitiesAnswer(ids) => {
            ids.into_iter().next().ok_or_else(|| anyhow!("the agent lists no key"))?.credential
        }
        other => bail!("the agent did not list its key: {other:?}"),
    };
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let request = Request::SignRequest(SignRequest {
            credential: credential.clone(),
            data: userauth(i),
            flags: 0,
        });
        let t = Instant::now();
        match roundtrip(&mut s, &request)? {
            Response::SignResponse(_) => times.push(t.elapsed().as_secs_f64()),
            other => bail!("the agent did not sign: {other:?}"),
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&times)?)?;
    if hold {
        writeln!(out, "holding")?;
        out.flush()?;
        let mut byte = [0u8; 1];
        // Returns at the agent's close (0 bytes, or a reset).
        let _ = s.read(&mut byte);
        writeln!(out, "closed")?;
    }
    out.flush()?;
    Ok(())
}

/// `maestro-bench ssh-client` as the sandbox user, its stdout piped.
fn spawn_client(socket: &str, count: usize, hold: bool) -> anyhow::Result<tokio::process::Child> {
    let me = std::env::current_exe().context("cannot find maestro-bench itself")?;
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.arg(format!("--reuid={SANDBOX_UID}"))
        .arg(format!("--regid={SANDBOX_UID}"))
        .args(["--clear-groups", "--"])
        .arg(me)
        .args(["ssh-client", "--socket", socket, "--count", &count.to_string()]);
    if hold {
        cmd.arg("--hold");
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null()).kill_on_drop(true);
    cmd.spawn().context("cannot start the ssh client as the sandbox user (setpriv)")
}

pub async fn run(settings: &Settings, bins: &Bins) -> anyhow::Result<Vec<Row>> {
    let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
        .map_err(|e| anyhow!("cannot make a key: {e}"))?;
    let key_text =
        key.to_openssh(LineEnding::LF).map_err(|e| anyhow!("cannot encode the key: {e}"))?;
    let one = OneSecret::start(
        bins,
        "bench-ssh",
        SECRET,
        serde_json::json!({"name": SECRET, "kind": "ssh", "fields": {"private_key": key_text.as_str()},
                            "exposure": "sealed"}),
    )
    .await?;
    let sock = one.variable("SSH_AUTH_SOCK")?;

    let n = if settings.quick { 300 } else { 2000 };
    let out = spawn_client(&sock, n, false)?.wait_with_output().await.context("the ssh client")?;
    if !out.status.success() {
        bail!("the ssh client failed ({}); see its errors above", out.status);
    }
    let times: Vec<f64> = serde_json::from_slice(&out.stdout).context("the ssh client's times")?;
    let via = Summary::of(&times).context("nothing was measured")?;
    let mut local = Vec::with_capacity(n);
    for i in 0..n {
        let data = userauth(i);
        let t = Instant::now();
        let _: ssh_key::Signature = signature::Signer::try_sign(&key, &data)
            .map_err(|e| anyhow!("cannot sign in process: {e}"))?;
        local.push(t.elapsed().as_secs_f64());
    }
    let local = Summary::of(&local).context("nothing was measured")?;

    // Revocation: an open connection (identities listed, no signature: a signer would be sent
    // SIGTERM too) until the agent closes it after the deactivate call returned.
    let tries = if settings.quick { 10 } else { 30 };
    let mut closed = Vec::with_capacity(tries);
    for i in 0..tries {
        if i > 0 {
            one.activate().await?;
        }
        let mut child = spawn_client(&sock, 0, true)?;
        let stdout = child.stdout.take().context("the ssh client has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next_line().await.context("the ssh client's output")? {
                Some(l) if l == "holding" => break,
                Some(_) => {}
                None => bail!("the ssh client ended before holding its connection"),
            }
        }
        one.deactivate().await?;
        let returned = Instant::now();
        let seen = tokio::time::timeout(CHANGE_TIMEOUT, lines.next_line())
            .await
            .context("the agent kept the connection open after the deactivation")?
            .context("the ssh client's output")?;
        if seen.as_deref() != Some("closed") {
            bail!("the ssh client said {seen:?}, not closed");
        }
        closed.push(returned.elapsed().as_secs_f64());
        let _ = child.wait().await;
    }
    let closed = Summary::of(&closed).context("nothing was measured")?;
    drop(one);
    Ok(vec![
        Row::new(
            "ssh.signature",
            SECTION,
            Figure::new(
                format!(
                    "Ed25519 signature through the agent's socket, one connection ({n} requests)"
                ),
                Unit::Seconds,
                via,
            ),
            Spread::P99,
            Some(Figure::new("the same signature in process", Unit::Seconds, local)),
        )
        .note(format!(
            "added: median {}, p99 {} (framing, peer lookup, usage record)",
            format_seconds(via.median - local.median),
            format_seconds(via.p99 - local.p99)
        )),
        revocation_row("ssh.revocation", SECTION, "open agent connection", closed),
    ])
}
