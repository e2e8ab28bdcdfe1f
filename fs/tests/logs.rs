//! No planted value reaches a log line, at any level, including fuser's own `log` records: the
//! whole life of a mount runs under a TRACE subscriber that captures everything.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failure")]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{TestMount, fuse_available};

const PLANTED: &str = "planted-Secret-Value-7f3a9c";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_value_in_logs_at_trace_level() {
    if !fuse_available() {
        return;
    }
    let captured = Captured::default();
    let writer = captured.clone();
    // Also installs the `log` bridge, so fuser's records are captured too.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();

    let mut t = TestMount::new(vec![2345]);
    t.publish(&[("TOKEN", PLANTED), ("nested/FILE", &format!("{PLANTED}-nested"))]);
    assert_eq!(std::fs::read_to_string(t.path("TOKEN")).unwrap(), PLANTED);
    let mut held = std::fs::File::open(t.path("nested/FILE")).unwrap();
    t.publish(&[("TOKEN", &format!("{PLANTED}-changed"))]);
    assert!(std::io::Read::read(&mut held, &mut [0u8; 64]).is_err());
    // A denied open goes through the observer and the error path.
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("cat")
        .arg(t.path("TOKEN"))
        .uid(1234)
        .gid(1234)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Bad snapshots: the error names the path, never the value.
    let bad = maestro_fs::Snapshot::new(vec![maestro_fs::FileEntry {
        path: "../escape".into(),
        secret: "S".into(),
        content: maestro_wire::SecretValue::from(PLANTED),
    }])
    .unwrap_err();
    tracing::error!(error = %bad, debug = ?bad, "bad snapshot");
    // Unmount with a file still open (abort path), then nothing is left.
    t.mount.take().unwrap().unmount().unwrap();
    drop(held);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("mounted secrets filesystem"), "the capture works: {text}");
    assert!(text.contains("published snapshot"));
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "low levels are captured");
    assert!(!text.contains("planted-Secret"), "a value reached the logs:\n{text}");
}
