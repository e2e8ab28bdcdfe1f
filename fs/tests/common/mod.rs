//! Helpers shared by the mount tests: skip rules, a recording observer, and a mount guard that
//! unmounts even when a test fails.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failure")]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use maestro_fs::{Access, FileEntry, Mount, MountOptions, Snapshot};
use maestro_wire::SecretValue;

/// The sandbox user of the tests.
pub const OWNER: u32 = 1000;
pub const OWNER_GID: u32 = 1001;

/// Whether FUSE tests can run (root and /dev/fuse). Where `MAESTRO_REQUIRE_FUSE` is set (CI),
/// missing either is a failure instead of a skip.
pub fn fuse_available() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let dev = Path::new("/dev/fuse").exists();
    if root && dev {
        return true;
    }
    let why = if root { "/dev/fuse is missing" } else { "not running as root" };
    if std::env::var_os("MAESTRO_REQUIRE_FUSE").is_some() {
        panic!("FUSE tests cannot run: {why} (MAESTRO_REQUIRE_FUSE is set)");
    }
    eprintln!("skipping FUSE test: {why}");
    false
}

/// Collects every access the filesystem reports.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Access>>, std::sync::atomic::AtomicBool);

impl Recorder {
    pub fn all(&self) -> Vec<Access> {
        self.0.lock().unwrap().clone()
    }

    /// From now on, refuses (or again records) every access, as a full audit queue does.
    pub fn set_refusing(&self, refusing: bool) {
        self.1.store(refusing, std::sync::atomic::Ordering::SeqCst);
    }
}

impl maestro_fs::AccessObserver for Recorder {
    fn record(&self, access: Access) -> Result<(), maestro_fs::NotRecorded> {
        if self.1.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(maestro_fs::NotRecorded);
        }
        self.0.lock().unwrap().push(access);
        Ok(())
    }
}

/// A mount in a fresh temporary directory that other uids can reach. Fields drop in order: the
/// mount first (Mount's Drop unmounts), then the directory.
pub struct TestMount {
    pub mount: Option<Mount>,
    pub recorder: Arc<Recorder>,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl TestMount {
    pub fn new(allowed_uids: Vec<u32>) -> TestMount {
        let tmp = tempfile::tempdir().unwrap();
        // tempdir makes 0700 directories; the other uids of the tests must get through.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("secrets");
        fs::create_dir(&dir).unwrap();
        let recorder = Arc::new(Recorder::default());
        let options = MountOptions {
            uid: OWNER,
            gid: OWNER_GID,
            allowed_uids,
            fsname: "maestro-test".into(),
        };
        let mount = maestro_fs::mount(&dir, options, recorder.clone()).unwrap();
        TestMount { mount: Some(mount), recorder, dir, _tmp: tmp }
    }

    pub fn mount(&self) -> &Mount {
        self.mount.as_ref().unwrap()
    }

    pub fn publish(&self, files: &[(&str, &str)]) {
        self.mount().publish(snapshot(files));
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if let Some(mount) = self.mount.take() {
            let _ = mount.unmount();
        }
    }
}

/// A snapshot of (path, content) files, each from a secret named after the path's first part.
pub fn snapshot(files: &[(&str, &str)]) -> Snapshot {
    Snapshot::new(
        files
            .iter()
            .map(|(path, content)| FileEntry {
                path: (*path).to_owned(),
                secret: secret_of(path),
                content: SecretValue::from(*content),
            })
            .collect(),
    )
    .unwrap()
}

pub fn secret_of(path: &str) -> String {
    path.split('/').next().unwrap_or(path).to_uppercase()
}

/// Lines of /proc/mounts that mention `dir`.
pub fn mounts_at(dir: &Path) -> Vec<String> {
    let needle = format!(" {} ", dir.display());
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}
