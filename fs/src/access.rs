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
    /// The caller's executable as the kernel reports it (`/proc/<pid>/exe`, full path), when
    /// it could be read. Unlike `command`, the process cannot choose it.
    pub exe: Option<String>,
    /// The caller's command name (`/proc/<pid>/comm`), when it could be read. The process can
    /// set it (`prctl(PR_SET_NAME)`, `exec -a`): a detail, not who did it.
    pub command: Option<String>,
    /// Whether the open succeeded.
    pub allowed: bool,
    /// Why it was denied.
    pub reason: Option<String>,
}

/// An observer could not record an open: the filesystem refuses that open (EIO) rather than
/// let it go unrecorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRecorded;

/// Receives every open of a file. Called on the filesystem's own thread while the caller waits
/// for `open(2)`, so it must return at once: queue the record and batch it elsewhere. It must
/// not call [`crate::Mount::publish`] (which waits for the kernel, which waits for this thread).
pub trait AccessObserver: Send + Sync + 'static {
    /// Records one open. `Err(NotRecorded)` fails the open with EIO: the audit fails closed.
    fn record(&self, access: Access) -> Result<(), NotRecorded>;
}

/// Any `Fn(Access)` is an observer that always records, which keeps tests and simple callers
/// short.
impl<F: Fn(Access) + Send + Sync + 'static> AccessObserver for F {
    fn record(&self, access: Access) -> Result<(), NotRecorded> {
        self(access);
        Ok(())
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

/// Who a caller is, read from `/proc/<pid>`, with descriptors kept open per caller.
///
/// Opening `/proc/<pid>/comm` costs about as much as a whole open+read+close on tmpfs (a
/// path walk through procfs on every call), and every open of a secret file needs the caller's
/// identity while the caller still exists. Descriptors held open keep naming the same task: the
/// `/proc/<pid>` directory gives that task's executable *now* (`readlinkat(dir, "exe")`, after an
/// `exec` too), the `comm` file its name now (after `prctl(PR_SET_NAME)` too), and both fail
/// once the task is gone, so a pid that is reused by a new process is never given the old one's
/// identity. A hot reader then costs a `readlinkat` and a `pread` instead of path walks.
pub(crate) struct CommNames {
    held: Mutex<Vec<Held>>,
    /// The next slot to replace when the table is full (round robin: cheap, and a slot goes to
    /// whoever reads now).
    next: Mutex<usize>,
}

struct Held {
    pid: u32,
    dir: File,
    comm: File,
    /// The process's uid and gid as last read from its `status` (see [`exe_in`]).
    ids: Option<(u32, u32)>,
}

/// Callers whose descriptors are kept. Each is two file descriptors of the agent.
const HELD_NAMES: usize = 64;

/// Longest executable path kept (procfs paths are at most PATH_MAX).
const MAX_EXE_CHARS: usize = 4096;

impl CommNames {
    pub(crate) fn new() -> CommNames {
        CommNames { held: Mutex::new(Vec::with_capacity(HELD_NAMES)), next: Mutex::new(0) }
    }

    /// The command name of `pid`, best effort: the process may be gone already.
    #[cfg(test)]
    pub(crate) fn of(&self, pid: u32) -> Option<String> {
        self.identify(pid).1
    }

    /// The executable path and the command name of `pid`, best effort: the process may be
    /// gone already. `comm` is at most 15 bytes, so it is read into a small stack buffer.
    pub(crate) fn identify(&self, pid: u32) -> (Option<String>, Option<String>) {
        if pid == 0 {
            return (None, None);
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = held.iter().position(|h| h.pid == pid) {
            match read_held(&mut held[i]) {
                Some(found) => return found,
                // The task is gone (ESRCH), and `pid` may now be someone else's: ask afresh.
                None => {
                    held.swap_remove(i);
                }
            }
        }
        let Ok(dir) = File::open(format!("/proc/{pid}")) else { return (None, None) };
        let Ok(comm) = File::open(format!("/proc/{pid}/comm")) else { return (None, None) };
        let mut entry = Held { pid, dir, comm, ids: None };
        let found = read_held(&mut entry).unwrap_or((None, None));
        if held.len() < HELD_NAMES {
            held.push(entry);
        } else {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            held[*next % HELD_NAMES] = entry;
            *next = (*next + 1) % HELD_NAMES;
        }
        found
    }
}

/// Reads a held caller's executable and name; `None` when the task is gone.
fn read_held(held: &mut Held) -> Option<(Option<String>, Option<String>)> {
    let mut buf = [0u8; 64];
    let n = held.comm.read_at(&mut buf, 0).ok().filter(|n| *n > 0)?;
    // A kernel thread or a zombie has no executable: that is no reason to forget the task.
    Some((exe_in(&held.dir, &mut held.ids), name(&buf[..n])))
}

/// The executable of `pid` as the kernel reports it (`/proc/<pid>/exe`), full path; `None` when
/// the process is gone, or the kernel does not say (a process that made itself non-dumpable, or
/// runs a set-uid program, hides it from everyone without CAP_SYS_PTRACE).
pub fn executable_of(pid: u32) -> Option<String> {
    if pid == 0 {
        return None;
    }
    let dir = File::open(format!("/proc/{pid}")).ok()?;
    exe_in(&dir, &mut None)
}

/// Reads `exe` in a held `/proc/<pid>` directory.
///
/// The kernel shows a process's `exe` link only to callers that pass a ptrace read check: the
/// same uid and gid as the process (real, effective and saved alike), or CAP_SYS_PTRACE, which
/// the agent does not keep. So when the link is refused, this thread takes the process's uid
/// and gid as its filesystem ids for the one `readlinkat` (`setfsuid`/`setfsgid` change this
/// thread only, with CAP_SETUID/CAP_SETGID) and then takes back its own.
///
/// `ids` caches the process's ids between calls for a held caller: reading `status` costs more
/// than the rest, and ids rarely change (when they did, the cached ones fail and are read anew).
fn exe_in(dir: &File, ids: &mut Option<(u32, u32)>) -> Option<String> {
    let shown = |link: std::ffi::OsString| -> String {
        link.to_string_lossy().chars().take(MAX_EXE_CHARS).collect()
    };
    if let Some(cached) = *ids
        && let Ok(link) = readlink_as(dir, cached)
    {
        return Some(shown(link));
    }
    match nix::fcntl::readlinkat(dir, "exe") {
        Ok(link) => return Some(shown(link)),
        Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => {}
        Err(_) => return None,
    }
    let fresh = ids_of(dir)?;
    *ids = Some(fresh);
    readlink_as(dir, fresh).ok().map(shown)
}

/// `readlinkat(dir, "exe")` with this thread's filesystem ids set to `(uid, gid)`.
fn readlink_as(dir: &File, (uid, gid): (u32, u32)) -> nix::Result<std::ffi::OsString> {
    let old_gid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
    let old_uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
    let link = nix::fcntl::readlinkat(dir, "exe");
    nix::unistd::setfsuid(old_uid);
    nix::unistd::setfsgid(old_gid);
    link
}

/// The uid and gid of a process whose real, effective and saved ids agree (the ptrace read
/// check's condition); `None` otherwise.
fn ids_of(dir: &File) -> Option<(u32, u32)> {
    let fd = nix::fcntl::openat(
        dir,
        "status",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let mut status = String::new();
    File::from(fd).read_to_string(&mut status).ok()?;
    let same = |key: &str| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let ids: Vec<u32> =
            line[key.len()..].split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect();
        (ids.len() == 3 && ids.iter().all(|i| *i == ids[0])).then_some(ids[0])
    };
    Some((same("Uid:")?, same("Gid:")?))
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
        let (exe, _) = names.identify(me);
        assert_eq!(exe.map(std::path::PathBuf::from), std::env::current_exe().ok());
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
        assert_eq!(names.held.lock().unwrap().iter().filter(|h| h.pid == pid).count(), 1);
        child.kill().unwrap();
        child.wait().unwrap();
        // Reaped: the held descriptor fails, and nothing answers for that pid any more.
        assert_eq!(names.of(pid), None);
        assert!(names.held.lock().unwrap().iter().all(|h| h.pid != pid));
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
