//! Row 3, revocation and activation latency: from the broker's API call returning to the file
//! being gone (or present) under the mount and the agent's socket agreeing (what `maestro-exec`
//! asks). Each try is checked afterwards with a real `maestro-exec --only NAME -- true`, which
//! must fail (125) after a revocation and succeed after an activation.
//!
//! The reference is the API call itself, measured in the same try: how long the user already
//! waits for the broker's answer.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Settings;
use crate::fixture::AgentProc;
use crate::report::{Figure, Row, Spread, Unit, format_seconds};
use crate::sandbox::{SECRETS, Sandbox, secret_name};
use crate::stats::Summary;

const SECTION: &str = "Revocation and activation";
/// The target: revocation's 99th percentile under this.
const REVOCATION_P99_LIMIT: f64 = 0.050;
/// Longest wait for one change before the run fails.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two looks, so the polling does not starve the agent of CPU on 2 cores.
const POLL: Duration = Duration::from_micros(100);

/// Polls until the file's presence and the socket's list both match `present`; returns when.
fn wait_state(
    agent: &AgentProc,
    file: &Path,
    name: &str,
    present: bool,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    let mut file_ok = false;
    loop {
        if !file_ok {
            file_ok = match std::fs::symlink_metadata(file) {
                Ok(_) => present,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => !present,
                Err(e) => return Err(e).with_context(|| format!("cannot stat {}", file.display())),
            };
        }
        if file_ok && agent.listed()?.iter().any(|s| s.name == name) == present {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            let what = if present { "appear" } else { "go" };
            bail!(
                "secret {name} did not {what} within {CHANGE_TIMEOUT:?} (file seen right: {file_ok})"
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Runs the real `maestro-exec --only NAME -- true`; its exit status.
fn exec_status(maestro_exec: &Path, socket: &Path, name: &str) -> anyhow::Result<i32> {
    let status = Command::new(maestro_exec)
        .args(["--only", name, "--", "true"])
        .env("MAESTRO_AGENT_SOCK", socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run maestro-exec")?;
    status.code().context("maestro-exec was killed by a signal")
}

pub async fn run(settings: &Settings, sandbox: &mut Sandbox) -> anyhow::Result<Vec<Row>> {
    sandbox.activate_first(SECRETS).await?;
    let tries = if settings.quick { 200 } else { 500 };
    let name = secret_name(SECRETS);
    let names = vec![name.clone()];
    let file = sandbox.file(SECRETS);
    let maestro_exec = sandbox.bins.path("maestro-exec")?;
    let (mut revoke, mut revoke_call, mut grant, mut grant_call) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..tries {
        let start = Instant::now();
        sandbox.api.deactivate(&sandbox.session_id, &names).await?;
        let returned = Instant::now();
        let done = wait_state(&sandbox.agent, &file, &name, false)?;
        revoke_call.push(returned - start);
        revoke.push(done - returned);
        let code = exec_status(&maestro_exec, &sandbox.agent.socket, &name)?;
        if code != 125 {
            bail!("maestro-exec --only {name} exited {code} after the revocation, not 125");
        }

        let start = Instant::now();
        sandbox.api.activate(&sandbox.session_id, &names).await?;
        let returned = Instant::now();
        let done = wait_state(&sandbox.agent, &file, &name, true)?;
        grant_call.push(returned - start);
        grant.push(done - returned);
        let code = exec_status(&maestro_exec, &sandbox.agent.socket, &name)?;
        if code != 0 {
            bail!("maestro-exec --only {name} exited {code} after the activation, not 0");
        }
    }
    let summary = |v: &[Duration]| Summary::of_durations(v).context("no tries were measured");
    let revoke = summary(&revoke)?;
    let grant = summary(&grant)?;
    Ok(vec![
        Row::new(
            "latency.revocation",
            SECTION,
            Figure::new(
                format!(
                    "revocation: API call returned → file gone and socket agrees ({tries} tries)"
                ),
                Unit::Seconds,
                revoke,
            ),
            Spread::P99,
            Some(Figure::new("the deactivate call itself", Unit::Seconds, summary(&revoke_call)?)),
        )
        .target(
            "p99 < 50 ms",
            format!("p99 {}", format_seconds(revoke.p99)),
            revoke.p99 < REVOCATION_P99_LIMIT,
        ),
        Row::new(
            "latency.activation",
            SECTION,
            Figure::new(
                format!(
                    "activation: API call returned → file present and socket agrees ({tries} tries)"
                ),
                Unit::Seconds,
                grant,
            ),
            Spread::P99,
            Some(Figure::new("the activate call itself", Unit::Seconds, summary(&grant_call)?)),
        ),
    ])
}
