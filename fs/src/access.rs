//! The audit trail of opens: [`Access`], [`AccessObserver`], and who may open a file.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, PoisonError};

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

/// Command names read through `/proc/<pid>/comm`, with the descriptor kept open per caller.
///
/// Opening `/proc/<pid>/comm` costs about as much as a whole open+read+close on tmpfs (a
/// path walk through procfs on every call), and every open of a secret file needs the caller's
/// name while the caller still exists. A descriptor held open keeps naming the same task: a
/// read through it gives that task's name *now* (after an `exec` or `prctl(PR_SET_NAME)` too),
/// and fails with ESRCH once the task is gone, so a pid that is reused by a new process is
/// never given the old one's name. A hot reader then costs one `pread` instead of three calls.
pub(crate) struct CommNames {
    held: Mutex<Vec<(u32, File)>>,
    /// The next slot to replace when the table is full (round robin: cheap, and a slot goes to
    /// whoever reads now).
    next: Mutex<usize>,
}

/// Callers whose descriptors are kept. Each is one file descriptor of the agent.
const HELD_NAMES: usize = 64;

impl CommNames {
    pub(crate) fn new() -> CommNames {
        CommNames { held: Mutex::new(Vec::with_capacity(HELD_NAMES)), next: Mutex::new(0) }
    }

    /// The command name of `pid`, best effort: the process may be gone already. `comm` is at
    /// most 15 bytes, so this reads into a small stack buffer.
    pub(crate) fn of(&self, pid: u32) -> Option<String> {
        if pid == 0 {
            return None;
        }
        let mut buf = [0u8; 64];
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = held.iter().position(|(p, _)| *p == pid) {
            match held[i].1.read_at(&mut buf, 0) {
                Ok(n) if n > 0 => return name(&buf[..n]),
                // The task is gone (ESRCH), and `pid` may now be someone else's: ask afresh.
                _ => {
                    held.swap_remove(i);
                }
            }
        }
        let mut file = File::open(format!("/proc/{pid}/comm")).ok()?;
        let n = file.read(&mut buf).ok()?;
        if held.len() < HELD_NAMES {
            held.push((pid, file));
        } else {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            held[*next % HELD_NAMES] = (pid, file);
            *next = (*next + 1) % HELD_NAMES;
        }
        name(&buf[..n])
    }
}

/// A `comm` read as a name: without its newline, `None` when empty.
fn name(read: &[u8]) -> Option<String> {
    let name = read.strip_suffix(b"\n").unwrap_or(read);
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
        let names = CommNames::new();
        let me = std::process::id();
        let comm = names.of(me).unwrap();
        assert!(!comm.is_empty() && !comm.ends_with('\n'));
        // Again, through the held descriptor.
        assert_eq!(names.of(me).unwrap(), comm);
        assert_eq!(names.of(0), None);
        assert_eq!(names.of(u32::MAX), None);
    }

    #[test]
    fn a_held_name_follows_its_task_and_a_gone_task_is_forgotten() {
        let names = CommNames::new();
        // A child that renames itself (as exec would) between two opens.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read _; exec sleep 30"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let wait_for = |wanted: &str| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while names.of(pid).as_deref() != Some(wanted) {
                assert!(std::time::Instant::now() < deadline, "the name never became {wanted}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        // First the forked test thread, then sh once it has exec'd, through one descriptor.
        wait_for("sh");
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        }
        wait_for("sleep");
        assert_eq!(names.held.lock().unwrap().iter().filter(|(p, _)| *p == pid).count(), 1);
        child.kill().unwrap();
        child.wait().unwrap();
        // Reaped: the held descriptor fails, and nothing answers for that pid any more.
        assert_eq!(names.of(pid), None);
        assert!(names.held.lock().unwrap().iter().all(|(p, _)| *p != pid));
    }

    #[test]
    fn the_table_stays_bounded() {
        let names = CommNames::new();
        let me = std::process::id();
        // Threads of this process are tasks with their own comm files.
        for _ in 0..(HELD_NAMES + 10) {
            names.of(me);
            let tid = std::thread::spawn(|| nix::unistd::gettid().as_raw() as u32).join().unwrap();
            names.of(tid);
        }
        assert!(names.held.lock().unwrap().len() <= HELD_NAMES);
    }
}
