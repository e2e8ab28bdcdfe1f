//! A hot open+read+close of one small file, on the secrets mount and on tmpfs, for comparison.
//! Ignored by default (it measures, it does not check): run it with
//! `cargo test -p maestro-fs --test bench -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failure")]

mod common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestMount, fuse_available};

const ROUNDS: usize = 20_000;
const VALUE_LEN: usize = 40;

/// Medians and 99th percentiles over `ROUNDS` of: open, read, close, and the three together.
fn measure(path: &Path) -> [(Duration, Duration); 4] {
    let mut buf = [0u8; 256];
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let mut f = std::fs::File::open(path).unwrap();
        let t1 = Instant::now();
        let n = f.read(&mut buf).unwrap();
        let t2 = Instant::now();
        drop(f);
        let t3 = Instant::now();
        assert_eq!(n, VALUE_LEN);
        samples[0].push(t1 - t0);
        samples[1].push(t2 - t1);
        samples[2].push(t3 - t2);
        samples[3].push(t3 - t0);
    }
    samples.map(|mut s| {
        s.sort();
        (s[ROUNDS / 2], s[ROUNDS * 99 / 100])
    })
}

fn report(name: &str, m: &[(Duration, Duration); 4]) {
    println!(
        "{name:>8}: open {:>9.1?} read {:>9.1?} close {:>9.1?} | total median {:>9.1?} p99 {:>9.1?}",
        m[0].0, m[1].0, m[2].0, m[3].0, m[3].1
    );
}

#[test]
#[ignore = "benchmark; prints figures"]
fn hot_open_read_close_against_tmpfs() {
    if !fuse_available() {
        return;
    }
    let value = "x".repeat(VALUE_LEN);
    let t = TestMount::new(vec![]);
    t.publish(&[("OPENAI_API_KEY", &value)]);

    let tmp = tempfile::tempdir().unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        tmp.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    std::fs::write(tmp.path().join("OPENAI_API_KEY"), &value).unwrap();

    measure(&t.path("OPENAI_API_KEY"));
    let tmpfs = measure(&tmp.path().join("OPENAI_API_KEY"));
    let secrets = measure(&t.path("OPENAI_API_KEY"));
    nix::mount::umount2(tmp.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();

    println!("open+read+close of a {VALUE_LEN}-byte file, {ROUNDS} rounds:");
    report("tmpfs", &tmpfs);
    report("secrets", &secrets);
    let ratio = secrets[3].0.as_secs_f64() / tmpfs[3].0.as_secs_f64();
    println!("ratio of medians: {ratio:.1}x; accesses recorded: {}", t.recorder.all().len());
}
