//! Row 2, file read: a hot open + read + close of a secret's file under the agent's mount
//! (each open checked and recorded for the audit trail, as shipped) against the same bytes on a
//! tmpfs, with one reader and with eight readers in parallel (threads of this process).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::mount::{MntFlags, MsFlags};

use crate::Settings;
use crate::report::{Figure, Row, Spread, Unit, format_value};
use crate::sandbox::{Sandbox, variable_name};
use crate::stats::Summary;

const SECTION: &str = "File read";
/// The target: at most this many times tmpfs's median.
const RATIO_LIMIT: f64 = 5.0;

/// A tmpfs mounted on a temporary directory; unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        nix::mount::mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::empty(), Some("size=1m"))
            .with_context(|| format!("cannot mount a tmpfs on {} (run as root)", dir.display()))?;
        Ok(Tmpfs { dir: dir.to_owned() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, MntFlags::MNT_DETACH);
    }
}

/// One reader's loop: `rounds` timed open + read + close of `path`, after `warmup` untimed.
fn read_loop(
    path: &Path,
    expected: usize,
    warmup: usize,
    rounds: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut buf = [0u8; 4096];
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..warmup + rounds {
        let start = Instant::now();
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let n = file.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        drop(file);
        let took = start.elapsed();
        if n != expected {
            bail!("read {n} bytes from {}, expected {expected}", path.display());
        }
        if i >= warmup {
            samples.push(took);
        }
    }
    Ok(samples)
}

/// `readers` threads, each running [`read_loop`] at the same time; every sample, and the
/// operations per second of all of them together.
fn parallel(
    path: &Path,
    expected: usize,
    readers: usize,
    rounds: usize,
) -> anyhow::Result<(Summary, f64)> {
    let barrier = Arc::new(Barrier::new(readers + 1));
    let handles: Vec<_> = (0..readers)
        .map(|_| {
            let barrier = barrier.clone();
            let path = path.to_owned();
            std::thread::spawn(move || {
                let warm = read_loop(&path, expected, rounds / 10, 0);
                barrier.wait();
                warm.and_then(|_| read_loop(&path, expected, 0, rounds))
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::with_capacity(readers * rounds);
    for handle in handles {
        let samples = handle.join().map_err(|_| anyhow::anyhow!("a reader thread panicked"))??;
        all.extend(samples);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let summary = Summary::of_durations(&all).context("no reads were measured")?;
    Ok((summary, all.len() as f64 / elapsed))
}

pub async fn run(settings: &Settings, sandbox: &Sandbox) -> anyhow::Result<Vec<Row>> {
    let secret = sandbox.file(1);
    let bytes = std::fs::read(&secret)
        .with_context(|| format!("cannot read {} (is secret 1 active?)", secret.display()))?;
    let tmpfs = Tmpfs::mount(&sandbox.subdir("tmpfs")?)?;
    let reference = tmpfs.dir.join(variable_name(1));
    std::fs::write(&reference, &bytes).context("cannot write the tmpfs file")?;
    let rounds = if settings.quick { 20_000 } else { 100_000 };
    let expected = bytes.len();

    let mut rows = Vec::new();
    for readers in [1usize, 8] {
        let per_reader = if readers == 1 { rounds } else { rounds / 4 };
        let (secret_path, reference_path) = (secret.clone(), reference.clone());
        let (tmp, fuse) = tokio::task::spawn_blocking(move || {
            // The reference first, then the mount, then the reference again: the better of the
            // two reference runs is kept, so a busy moment never flatters the ratio.
            let tmp_a = parallel(&reference_path, expected, readers, per_reader)?;
            let fuse = parallel(&secret_path, expected, readers, per_reader)?;
            let tmp_b = parallel(&reference_path, expected, readers, per_reader)?;
            let tmp = if tmp_a.0.median <= tmp_b.0.median { tmp_a } else { tmp_b };
            Ok::<_, anyhow::Error>((tmp, fuse))
        })
        .await
        .context("the reader threads failed")??;
        let label = if readers == 1 { "1 reader".to_owned() } else { format!("{readers} readers") };
        let ratio = fuse.0.median / tmp.0.median;
        rows.push(
            Row::new(
                &format!("files.read.{readers}"),
                SECTION,
                Figure::new(
                    format!("open+read+close of a {expected}-byte secret file, {label}"),
                    Unit::Seconds,
                    fuse.0,
                ),
                Spread::P99,
                Some(Figure::new(format!("tmpfs, {label}"), Unit::Seconds, tmp.0)),
            )
            .note(format!(
                "{} all readers (tmpfs {})",
                format_value(fuse.1, Unit::PerSecond),
                format_value(tmp.1, Unit::PerSecond)
            ))
            .target(
                &format!("≤ {RATIO_LIMIT}× tmpfs"),
                format!("{ratio:.1}×"),
                ratio <= RATIO_LIMIT,
            ),
        );
    }
    drop(tmpfs);
    Ok(rows)
}
