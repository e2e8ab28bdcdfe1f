//! `clean_stale_mount` against a real stale mount: a child process mounts, is SIGKILLed, and
//! leaves a dead FUSE mount (ENOTCONN) behind.
//!
//! The child is this test binary run again with `MAESTRO_FS_TEST_CHILD_MOUNT` set, executing
//! the ignored helper test below; forking a multi-threaded test process would be unsafe.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failure")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::{OWNER, OWNER_GID, Recorder, fuse_available, mounts_at, snapshot};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CHILD_ENV: &str = "MAESTRO_FS_TEST_CHILD_MOUNT";

fn options() -> maestro_fs::MountOptions {
    maestro_fs::MountOptions {
        uid: OWNER,
        gid: OWNER_GID,
        allowed_uids: vec![],
        fsname: "maestro-stale-test".into(),
    }
}

#[test]
#[ignore = "helper run in a child process by stale_mount_of_a_killed_process_is_cleaned"]
fn child_mounts_and_waits() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    // If the parent test dies, do not linger with a live mount.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).unwrap();
    let mount =
        maestro_fs::mount(Path::new(&dir), options(), Arc::new(Recorder::default())).unwrap();
    mount.publish(snapshot(&[("TOKEN", "from-the-killed-child")]));
    println!("READY");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Kills the child and cleans its mount even when the test fails half-way.
struct Cleanup {
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = maestro_fs::clean_stale_mount(&self.dir);
    }
}

#[test]
fn stale_mount_of_a_killed_process_is_cleaned() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("secrets");
    std::fs::create_dir(&dir).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_mounts_and_waits", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut guard = Cleanup { child: Some(child), dir: dir.clone() };
    let ready = BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l == "READY");
    assert!(ready, "the child did not mount");
    assert_eq!(std::fs::read_to_string(dir.join("TOKEN")).unwrap(), "from-the-killed-child");

    let mut child = guard.child.take().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();

    // The mount outlives its process: listed, but dead. (Kernel quirk seen here: a `stat` of
    // the mount root keeps answering from the attribute cache, without ENOTCONN, until the
    // cached attributes time out; anything that needs a request, like an open, fails at once.)
    assert_eq!(mounts_at(&dir).len(), 1, "the kill leaves the mount behind");
    let e = std::fs::read(dir.join("TOKEN")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "nothing readable after the kill: {e}");

    assert!(maestro_fs::clean_stale_mount(&dir).unwrap(), "something was cleaned");
    assert!(mounts_at(&dir).is_empty());
    assert!(std::fs::metadata(&dir).unwrap().is_dir(), "the plain directory is back");
    assert!(!maestro_fs::clean_stale_mount(&dir).unwrap(), "nothing left to clean");

    // The next start at the same path succeeds.
    let mount = maestro_fs::mount(&dir, options(), Arc::new(Recorder::default())).unwrap();
    mount.publish(snapshot(&[("TOKEN", "fresh")]));
    assert_eq!(std::fs::read_to_string(dir.join("TOKEN")).unwrap(), "fresh");
    // A live FUSE mount at the path counts too: two agents cannot share a mount point.
    assert!(maestro_fs::clean_stale_mount(&dir).unwrap());
    assert!(mounts_at(&dir).is_empty());
    // The Mount notices its mount is gone and does not detach anything else.
    mount.unmount().unwrap();
    drop(guard);
}

#[test]
fn other_mounts_are_left_alone() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tmpfs");
    std::fs::create_dir(&dir).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let result = maestro_fs::clean_stale_mount(&dir);
    let still_there = mounts_at(&dir).len();
    nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert!(!result.unwrap(), "a tmpfs is not a stale FUSE mount");
    assert_eq!(still_there, 1);
}
