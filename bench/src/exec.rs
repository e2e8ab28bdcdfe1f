//! Row 1, exec overhead: whole commands timed by hyperfine (no shell between it and the
//! command): `maestro-exec -- true` against `env VAR=value ... true` with the same variables, with
//! 1, 10 and 100 active secrets; and the wrappers a user would reach for instead, python-dotenv's
//! `dotenv run` and dotenvx's `dotenvx run`, on the same variables from a `.env` file.
//!
//! The variables' values are the benchmark's own dummy values; they are on `env`'s argv and in
//! the `.env` file because that is how those tools take them.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::Settings;
use crate::fixture::dummy_value;
use crate::report::{Figure, Row, Spread, Unit, format_seconds};
use crate::sandbox::{Sandbox, variable_name};
use crate::stats::Summary;

const SECTION: &str = "Exec overhead";
/// The target: at most this much added to `env VAR=value true` (median).
const ADDED_LIMIT_SECS: f64 = 1e-3;

/// The wrapper commands to compare with.
#[derive(Debug, Clone)]
pub struct Wrappers {
    /// python-dotenv's `dotenv` (installed with its `cli` extra).
    pub dotenv: PathBuf,
    /// dotenvx's `dotenvx`.
    pub dotenvx: PathBuf,
}

/// Times `command` (argv, no shell) with hyperfine; returns the run times in seconds.
pub(crate) fn hyperfine(
    settings: &Settings,
    dir: &Path,
    label: &str,
    command: &[String],
    runs: usize,
    envs: &[(&str, &Path)],
) -> anyhow::Result<Vec<f64>> {
    let export = dir.join(format!("hyperfine-{label}.json"));
    let line = command.join(" ");
    let mut cmd = Command::new(&settings.hyperfine);
    cmd.args(["--shell=none", "--style", "none", "--warmup"])
        .arg((runs / 10).clamp(2, 20).to_string())
        .arg("--runs")
        .arg(runs.to_string())
        .arg("--export-json")
        .arg(&export)
        .arg(&line);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().with_context(|| {
        format!(
            "cannot run hyperfine ({}); install it (apt-get install hyperfine) or pass --hyperfine",
            settings.hyperfine.display()
        )
    })?;
    if !out.status.success() {
        bail!(
            "hyperfine failed on `{label}` ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&export).with_context(|| format!("cannot read {}", export.display()))?,
    )
    .context("hyperfine's JSON export does not parse")?;
    let times: Vec<f64> = json["results"][0]["times"]
        .as_array()
        .context("hyperfine's JSON export has no times")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    if times.is_empty() {
        bail!("hyperfine measured no run of `{label}`");
    }
    Ok(times)
}

/// One command to time, and its runs so far.
pub(crate) struct Timed<'a> {
    pub label: String,
    pub command: Vec<String>,
    pub runs_per_round: usize,
    pub envs: &'a [(&'a str, &'a Path)],
    pub times: Vec<f64>,
}

impl Timed<'_> {
    pub fn summary(&self) -> anyhow::Result<Summary> {
        Summary::of(&self.times).with_context(|| format!("no run of `{}`", self.label))
    }
}

/// Times the commands in turns, a share of each one's runs per round, so that a busy moment
/// of the machine (other work on its 2 cores) falls on all of them alike.
pub(crate) fn in_rounds(
    settings: &Settings,
    dir: &Path,
    rounds: usize,
    timed: &mut [Timed<'_>],
) -> anyhow::Result<()> {
    for round in 0..rounds {
        for t in timed.iter_mut() {
            let label = format!("{}-{round}", t.label);
            let times = hyperfine(settings, dir, &label, &t.command, t.runs_per_round, t.envs)?;
            t.times.extend(times);
        }
    }
    Ok(())
}

/// A difference of times with its sign: "+0.41 ms", "−71.3 µs".
pub(crate) fn signed(seconds: f64) -> String {
    if seconds < 0.0 {
        format!("−{}", format_seconds(-seconds))
    } else {
        format!("+{}", format_seconds(seconds))
    }
}

/// Writes a `.env` file with the first `count` variables (0600).
fn write_dotenv(path: &Path, count: usize) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    for i in 1..=count {
        writeln!(file, "{}={}", variable_name(i), dummy_value(i).expose())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The rows of section 1, with 1, 10 and 100 active secrets.
pub async fn run(
    settings: &Settings,
    sandbox: &mut Sandbox,
    wrappers: &Wrappers,
) -> anyhow::Result<Vec<Row>> {
    let dir = sandbox.subdir("exec")?;
    let maestro_exec = sandbox.bins.path("maestro-exec")?;
    let socket = sandbox.agent.socket.clone();
    let (fast_runs, slow_runs, rounds) = if settings.quick { (300, 12, 3) } else { (2000, 60, 5) };
    let mut rows = Vec::new();
    for count in [1, 10, 100] {
        sandbox.activate_first(count).await?;
        let dotenv_file = dir.join(format!("bench-{count}.env"));
        write_dotenv(&dotenv_file, count)?;
        let dotenv_path = dotenv_file.display().to_string();

        let mut env_cmd = vec!["env".to_owned()];
        env_cmd.extend(
            (1..=count).map(|i| format!("{}={}", variable_name(i), dummy_value(i).expose())),
        );
        env_cmd.push("true".to_owned());
        let exec_cmd = vec![maestro_exec.display().to_string(), "--".into(), "true".into()];
        let dotenv_cmd = vec![
            wrappers.dotenv.display().to_string(),
            "-f".into(),
            dotenv_path.clone(),
            "run".into(),
            "true".into(),
        ];
        let dotenvx_cmd = vec![
            wrappers.dotenvx.display().to_string(),
            "run".into(),
            "--quiet".into(),
            "-f".into(),
            dotenv_path,
            "--".into(),
            "true".into(),
        ];
        let sock: &[(&str, &Path)] = &[("MAESTRO_AGENT_SOCK", &socket)];
        let timed = |label: &str, command: Vec<String>, runs: usize, envs| Timed {
            label: format!("{label}-{count}"),
            command,
            runs_per_round: runs / rounds,
            envs,
            times: Vec::new(),
        };
        let mut all = [
            timed("env", env_cmd, fast_runs, &[]),
            timed("exec", exec_cmd, fast_runs, sock),
            timed("dotenv", dotenv_cmd, slow_runs, &[]),
            timed("dotenvx", dotenvx_cmd, slow_runs, &[]),
        ];
        in_rounds(settings, &dir, rounds, &mut all)?;
        let [env, exec, dotenv, dotenvx] =
            [all[0].summary()?, all[1].summary()?, all[2].summary()?, all[3].summary()?];

        let plural = if count == 1 { "" } else { "s" };
        let reference = || {
            Figure::new(format!("`env VAR=value true`, {count} var{plural}"), Unit::Seconds, env)
        };
        let added = exec.median - env.median;
        rows.push(
            Row::new(
                &format!("exec.maestro_exec.{count}"),
                SECTION,
                Figure::new(
                    format!("`maestro-exec -- true`, {count} active secret{plural}"),
                    Unit::Seconds,
                    exec,
                ),
                Spread::P99,
                Some(reference()),
            )
            .target("< 1 ms added", signed(added), added < ADDED_LIMIT_SECS),
        );
        rows.push(Row::new(
            &format!("exec.dotenv.{count}"),
            SECTION,
            Figure::new(
                format!("`dotenv run true` (python-dotenv), {count} var{plural}"),
                Unit::Seconds,
                dotenv,
            ),
            Spread::P99,
            Some(reference()),
        ));
        rows.push(Row::new(
            &format!("exec.dotenvx.{count}"),
            SECTION,
            Figure::new(
                format!("`dotenvx run -- true`, {count} var{plural}"),
                Unit::Seconds,
                dotenvx,
            ),
            Spread::P99,
            Some(reference()),
        ));
    }
    Ok(rows)
}
