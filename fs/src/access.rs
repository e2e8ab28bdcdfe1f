//! The audit trail of opens: [`Access`], [`AccessObserver`], and who may open a file.

use std::fs::File;
use std::io::Read;

/// One open of a file, allowed or denied, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The secret the file comes from.
    pub secret: String,
    /// The file's path relative to the mount.
    pub path: String,
    /// The calling process (thread) as the kernel reported it; 0 when the kernel did not say.
    pub pid: u32,
    /// The calling process's uid.
    pub uid: u32,
    /// The caller's command name (`/proc/<pid>/comm`), when it could be read.
    pub command: Option<String>,
    /// Whether the open succeeded.
    pub allowed: bool,
    /// Why it was denied.
    pub reason: Option<String>,
}

/// Receives every open of a file. Called on the filesystem's own thread while the caller waits
/// for `open(2)`, so it must return at once: queue the record and batch it elsewhere. It must
/// not call [`crate::Mount::publish`] (which waits for the kernel, which waits for this thread).
pub trait AccessObserver: Send + Sync + 'static {
    /// Records one open.
    fn record(&self, access: Access);
}

/// Any `Fn(Access)` is an observer, which keeps tests and simple callers short.
impl<F: Fn(Access) + Send + Sync + 'static> AccessObserver for F {
    fn record(&self, access: Access) {
        self(access)
    }
}

/// Who may open files: root, the sandbox user, and the extra uids of the mount options.
#[derive(Debug, Clone)]
pub(crate) struct CallerPolicy {
    owner: u32,
    allowed: Vec<u32>,
}

/// Why an open was refused, as recorded in [`Access::reason`].
pub(crate) const REASON_UID: &str = "uid is not allowed to read secrets";

impl CallerPolicy {
    pub(crate) fn new(owner: u32, allowed: &[u32]) -> CallerPolicy {
        CallerPolicy { owner, allowed: allowed.to_vec() }
    }

    pub(crate) fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == self.owner || self.allowed.contains(&uid)
    }
}

/// The command name of `pid`, best effort: a process may be gone already, and `comm` is at
/// most 15 bytes, so this reads into a small stack buffer.
pub(crate) fn command_of(pid: u32) -> Option<String> {
    if pid == 0 {
        return None;
    }
    let mut file = File::open(format!("/proc/{pid}/comm")).ok()?;
    let mut buf = [0u8; 64];
    let n = file.read(&mut buf).ok()?;
    let name = buf[..n].strip_suffix(b"\n").unwrap_or(&buf[..n]);
    if name.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_allows_root_owner_and_extras_only() {
        let p = CallerPolicy::new(1000, &[2000]);
        assert!(p.allows(0));
        assert!(p.allows(1000));
        assert!(p.allows(2000));
        assert!(!p.allows(1001));
        assert!(!p.allows(65534));
    }

    #[test]
    fn reads_own_command_name() {
        let me = std::process::id();
        let comm = command_of(me).unwrap();
        assert!(!comm.is_empty() && !comm.ends_with('\n'));
        assert_eq!(command_of(0), None);
        assert_eq!(command_of(u32::MAX), None);
    }
}
