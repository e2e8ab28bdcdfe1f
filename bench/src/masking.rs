//! Row 1b, output masking (issue 12 part 4), timed by hyperfine like the exec rows:
//!
//! * what masking adds to a command that prints nothing: `maestro-exec -- true` (masking: CMD
//!   runs as a child, its output relayed) against `maestro-exec --no-mask -- true` (exec), with
//!   1 and 10 secrets (all 100 active, the first N picked with `--only`, so that the rows
//!   do not depend on what other rows activated); the target is at most 0.2 ms added (median);
//! * how fast masked output flows: `maestro-exec -- cat FILE` against `cat FILE` (both to
//!   /dev/null, hyperfine's default), for a random binary file and a text file, 1 active
//!   secret; the target is at least 500 MB/s through maestro-exec (median).

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::Settings;
use crate::exec::{Timed, in_rounds, signed};
use crate::report::{Figure, Row, Spread, Unit};
use crate::sandbox::{SECRETS, Sandbox, secret_name};
use crate::stats::Summary;

const SECTION: &str = "Exec overhead";
/// The target: masking adds at most this to `maestro-exec --no-mask -- true` (median).
const ADDED_LIMIT_SECS: f64 = 0.2e-3;
/// The target rate through maestro-exec, bytes per second.
const RATE_TARGET: f64 = 500e6;

/// Writes `size` bytes of a deterministic random stream, or of repeated English-like text.
fn write_file(path: &Path, size: usize, text: bool) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let words = b"the quick brown fox jumps over a lazy dog while maestro masks output; ";
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for (i, b) in chunk.iter_mut().enumerate() {
            if text {
                *b = if i % 81 == 80 { b'\n' } else { words[i % words.len()] };
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = (x >> 40) as u8;
            }
        }
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).with_context(|| format!("cannot write {}", path.display()))?;
        left -= n;
    }
    Ok(())
}

/// The rows: masking's added cost with 1 and 10 secrets, then the rates.
pub async fn run(settings: &Settings, sandbox: &mut Sandbox) -> anyhow::Result<Vec<Row>> {
    let dir = sandbox.subdir("masking")?;
    let maestro_exec = sandbox.bins.path("maestro-exec")?.display().to_string();
    let socket = sandbox.agent.socket.clone();
    let sock: &[(&str, &Path)] = &[("MAESTRO_AGENT_SOCK", &socket)];
    let (runs, rounds) = if settings.quick { (300, 3) } else { (2000, 5) };
    let mut rows = Vec::new();
    sandbox.activate_first(SECRETS).await?;
    // `--only NAME` for the first `count` secrets.
    let only = |count: usize| -> Vec<String> {
        (1..=count).flat_map(|i| ["--only".to_owned(), secret_name(i)]).collect()
    };
    // Not 100: 100 injection records a run, hundreds of runs a second, outpace the broker's
    // usage ingestion, and the agent then refuses (fails closed: "its audit queue is full").
    for count in [1, 10] {
        let command = |mask: bool| {
            let mut c = vec![maestro_exec.clone()];
            c.extend(only(count));
            if !mask {
                c.push("--no-mask".into());
            }
            c.extend(["--".into(), "true".into()]);
            c
        };
        let timed = |label: &str, command: Vec<String>| Timed {
            label: format!("{label}-{count}"),
            command,
            runs_per_round: runs / rounds,
            envs: sock,
            times: Vec::new(),
        };
        let mut all = [timed("nomask", command(false)), timed("mask", command(true))];
        in_rounds(settings, &dir, rounds, &mut all)?;
        let (plain, masked) = (all[0].summary()?, all[1].summary()?);
        let plural = if count == 1 { "" } else { "s" };
        let added = masked.median - plain.median;
        rows.push(
            Row::new(
                &format!("exec.masking.{count}"),
                SECTION,
                Figure::new(
                    format!("`maestro-exec -- true`, masking, {count} secret{plural}"),
                    Unit::Seconds,
                    masked,
                ),
                Spread::P99,
                Some(Figure::new(
                    format!("`maestro-exec --no-mask -- true`, {count} secret{plural}"),
                    Unit::Seconds,
                    plain,
                )),
            )
            .target("< 0.2 ms added", signed(added), added < ADDED_LIMIT_SECS),
        );
    }

    let size: usize = if settings.quick { 64 << 20 } else { 256 << 20 };
    let file_runs = if settings.quick { 6 } else { 15 };
    for (kind, text) in [("binary", false), ("text", true)] {
        let file = dir.join(format!("{kind}.dat"));
        write_file(&file, size, text)?;
        let path = file.display().to_string();
        let timed = |label: &str, command: Vec<String>| Timed {
            label: format!("{label}-{kind}"),
            command,
            runs_per_round: file_runs / rounds.min(3),
            envs: sock,
            times: Vec::new(),
        };
        let mut all = [
            timed("cat", vec!["cat".into(), path.clone()]),
            timed("cat-masked", {
                let mut c = vec![maestro_exec.clone()];
                c.extend(only(1));
                c.extend(["--".into(), "cat".into(), path.clone()]);
                c
            }),
        ];
        in_rounds(settings, &dir, rounds.min(3), &mut all)?;
        let rate = |t: &Timed<'_>| -> anyhow::Result<Summary> {
            let rates: Vec<f64> = t.times.iter().map(|s| size as f64 / s).collect();
            Summary::of(&rates).context("no run of cat")
        };
        let (direct, masked) = (rate(&all[0])?, rate(&all[1])?);
        let met = masked.median >= RATE_TARGET;
        let figure = format!("{:.0} MB/s", masked.median / 1e6);
        std::fs::remove_file(&file).ok();
        rows.push(
            Row::new(
                &format!("exec.masking.rate.{kind}"),
                SECTION,
                Figure::new(
                    format!("`maestro-exec -- cat` {} MiB of {kind} to /dev/null", size >> 20),
                    Unit::BytesPerSecond,
                    masked,
                ),
                Spread::MinMax,
                Some(Figure::new("`cat` the same file", Unit::BytesPerSecond, direct)),
            )
            .target("≥ 500 MB/s", figure, met),
        );
    }
    Ok(rows)
}
