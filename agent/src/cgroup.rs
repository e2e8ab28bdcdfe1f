//! The session's cgroup (cgroup v2): CMD, everything it starts, and every sandbox-user process
//! that asks the agent for secrets run in a cgroup of their own, which teardown kills as a
//! whole (`cgroup.kill`) and then checks is empty (`cgroup.events`: `populated 0`) before it
//! reports the session over. A process that forks every millisecond, ignores SIGTERM or
//! double-forks to be reparented cannot leave the cgroup: only root can move a process out.
//!
//! Where: `maestro/session-<agent pid>` under the agent's own cgroup (from
//! `/proc/self/cgroup`, under the cgroup2 mount found in `/proc/self/mountinfo`; on hybrid
//! hosts that is `/sys/fs/cgroup/unified`), made before the agent drops its capabilities. No controller is ever enabled, so the "no internal
//! processes" rule (a cgroup with processes cannot hand controllers to children) never
//! applies: the agent stays in its cgroup, the session's processes in the leaf below it.
//! When there is no cgroup2 mount, or it cannot be written (not delegated, read-only), the
//! agent says so in its log and falls back to ending its descendants (it is their subreaper,
//! so orphans come back to it) with repeated SIGKILL sweeps.
//!
//! A process joins by writing "0" (itself) to the cgroup's `cgroup.procs` between fork and
//! exec, through a descriptor the agent opened beforehand, so CMD is inside before it runs a
//! single instruction of its own.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long teardown waits for `cgroup.kill` to empty the cgroup.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The session's cgroup.
#[derive(Debug)]
pub struct SessionCgroup {
    path: PathBuf,
    /// `cgroup.procs`, opened for writing by the agent (root), close-on-exec.
    procs: File,
}

/// Why there is no session cgroup (the agent falls back and logs this).
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 file system is mounted (see /proc/self/mountinfo)")]
    NoCgroup2,
    #[error("the agent's own cgroup v2 path is not in /proc/self/cgroup")]
    NoOwnCgroup,
    #[error("cannot create the cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The mount point of the cgroup2 file system, from mountinfo.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        // Octal escapes (\040 for a space) in the mount point are left as they are: a cgroup2
        // mount with a space in its path is not worth the code.
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The agent's cgroup v2 path ("0::/some/path").
fn own_cgroup(proc_cgroup: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_owned)
}

impl SessionCgroup {
    /// Creates the session's cgroup under the agent's own.
    pub fn create() -> Result<SessionCgroup, CgroupError> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mount = cgroup2_mount(&mountinfo).ok_or(CgroupError::NoCgroup2)?;
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let own = own_cgroup(&own).ok_or(CgroupError::NoOwnCgroup)?;
        // "/.." when the agent's cgroup is outside its cgroup namespace: not ours to use.
        if own.split('/').any(|c| c == "..") {
            return Err(CgroupError::NoOwnCgroup);
        }
        // One shared `maestro` node, then the session's leaf: the agent makes both while it
        // still has all its capabilities (a cgroup root is often mode 0555), and later removes
        // the leaf as the owner of `maestro`, without them.
        let parent = mount.join(own.trim_start_matches('/')).join("maestro");
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Create { path: parent, source }),
        }
        sweep_stale(&parent);
        let path = parent.join(format!("session-{}", std::process::id()));
        if path.exists() {
            // Left by an earlier agent with the same pid (a restarted container): empty it.
            kill_and_wait(&path, KILL_TIMEOUT);
            let _ = std::fs::remove_dir(&path);
        }
        std::fs::create_dir(&path)
            .map_err(|source| CgroupError::Create { path: path.clone(), source })?;
        let procs_path = path.join("cgroup.procs");
        let procs =
            std::fs::OpenOptions::new().write(true).open(&procs_path).map_err(|source| {
                let _ = std::fs::remove_dir(&path);
                CgroupError::Open { path: procs_path, source }
            })?;
        Ok(SessionCgroup { path, procs })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor a child writes "0" to between fork and exec.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// Moves a process (and with it every thread and every later child) into the cgroup.
    pub fn adopt(&self, pid: u32) {
        if let Err(e) = (&self.procs).write_all(pid.to_string().as_bytes()) {
            tracing::warn!(pid, "cannot move a process into the session cgroup: {e}");
        }
    }

    /// The pids in the cgroup now.
    pub fn pids(&self) -> Vec<u32> {
        pids(&self.path)
    }

    /// Kills every process in the cgroup at once (`cgroup.kill`: forks in flight too); false
    /// when the kernel has no `cgroup.kill` (before 5.14) or it failed.
    pub fn kill(&self) -> bool {
        match std::fs::write(self.path.join("cgroup.kill"), "1") {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(cgroup = %self.path.display(), "cgroup.kill failed ({e}); killing pid by pid");
                false
            }
        }
    }

    /// Whether a process is still in the cgroup.
    pub fn populated(&self) -> bool {
        populated(&self.path)
    }

    /// Kills every process in the cgroup and waits until it is empty; returns how many are
    /// left when `timeout` passes (0 on success). Blocks the thread.
    pub fn kill_all(&self, timeout: Duration) -> usize {
        kill_and_wait(&self.path, timeout)
    }

    /// Removes the (empty) cgroup.
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_dir(&self.path) {
            tracing::warn!(cgroup = %self.path.display(), "cannot remove the session cgroup: {e}");
        }
    }
}

/// Kills and removes the session cgroups of agents that are gone (killed with `kill -9`, so
/// they never tore down): whatever of their sessions still runs ends now. A cgroup whose agent
/// pid is alive is left alone, whoever has that pid now.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("session-")) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let found = pids(&path).len();
        let left = kill_and_wait(&path, KILL_TIMEOUT);
        match std::fs::remove_dir(&path) {
            Ok(()) => tracing::warn!(
                cgroup = %path.display(),
                processes = found,
                "ended what was left of the session of an agent that died without tearing down"
            ),
            Err(e) => tracing::warn!(
                cgroup = %path.display(),
                processes = left,
                "cannot remove the session cgroup of an agent that died: {e}"
            ),
        }
    }
}

fn pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether the cgroup (or a descendant) still holds a process, from `cgroup.events`.
fn populated(path: &Path) -> bool {
    match std::fs::read_to_string(path.join("cgroup.events")) {
        Ok(events) => events.lines().any(|l| l == "populated 1"),
        // No events file (gone, or an old kernel): ask cgroup.procs.
        Err(_) => !pids(path).is_empty(),
    }
}

/// `cgroup.kill`, or on kernels before 5.14 (no such file) SIGKILL sweeps of `cgroup.procs`
/// with the cgroup frozen so that nothing forks between the read and the kill; then waits.
fn kill_and_wait(path: &Path, timeout: Duration) -> usize {
    let killed = std::fs::write(path.join("cgroup.kill"), "1");
    let frozen = killed.is_err() && std::fs::write(path.join("cgroup.freeze"), "1").is_ok();
    if let Err(e) = &killed {
        tracing::warn!(cgroup = %path.display(), "no cgroup.kill ({e}); killing pid by pid");
    }
    let deadline = Instant::now() + timeout;
    loop {
        if killed.is_err() {
            for pid in pids(path) {
                crate::child::signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        // Zombies have left the cgroup already (the caller reaps them).
        if !populated(path) {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if frozen {
        let _ = std::fs::write(path.join("cgroup.freeze"), "0");
    }
    pids(path).len()
}

#[cfg(test)]
// One pre_exec closure that writes a pid into a cgroup, to build a process that will not die.
#[allow(unsafe_code)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_and_the_own_path() {
        let mountinfo = "\
24 30 0:21 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
33 24 0:28 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
34 24 0:29 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n";
        assert_eq!(cgroup2_mount(mountinfo), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
        assert_eq!(
            own_cgroup("4:memory:/x\n0::/user.slice/a.scope\n").as_deref(),
            Some("/user.slice/a.scope")
        );
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn a_forking_process_in_the_cgroup_is_killed_as_a_whole() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let cg = match SessionCgroup::create() {
            Ok(cg) => cg,
            Err(e) => {
                eprintln!("skipped: no cgroup here: {e}");
                return;
            }
        };
        let procs_fd = cg.procs_fd();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "trap '' TERM; while :; do sleep 1 & done"]);
        // SAFETY: the closure makes one raw write(2) on a descriptor opened before the fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let rc = libc::write(procs_fd, b"0".as_ptr().cast(), 1);
                if rc == 1 { Ok(()) } else { Err(io::Error::last_os_error()) }
            });
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while cg.pids().len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(cg.pids().contains(&child.id()), "{:?}", cg.pids());
        assert_eq!(cg.kill_all(KILL_TIMEOUT), 0);
        let _ = child.wait();
        assert!(cg.pids().is_empty());
        cg.remove();
        assert!(!cg.path().exists());
    }
}
