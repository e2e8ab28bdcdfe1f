//! CMD, run as the sandbox user with no capability in any set and no_new_privs; reaping (the
//! agent is a child subreaper, so orphaned descendants come back to it); and ending every
//! process the agent started at teardown.
//!
//! The code between fork and exec runs in a copy of a multi-threaded process, where another
//! thread may have held the allocator's lock at the fork: it makes raw system calls only, on
//! values computed before the fork, and allocates nothing.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use thiserror::Error;

use crate::cgroup::{KILL_TIMEOUT, SessionCgroup};
use crate::config::User;

#[derive(Debug, Error)]
pub enum ChildError {
    #[error("cannot become a child subreaper (prctl PR_SET_CHILD_SUBREAPER): {0}")]
    Subreaper(#[source] nix::Error),
    #[error("cannot start {command:?}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("no command given after --")]
    Empty,
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// What the child needs to drop its privileges, computed before the fork.
#[derive(Clone, Copy)]
struct ChildCreds {
    uid: u32,
    gid: u32,
    last_cap: i32,
    parent: i32,
    /// The session cgroup's `cgroup.procs`, or -1.
    cgroup_procs: i32,
}

/// The highest capability number this kernel knows.
fn last_cap() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Runs in the child between fork and exec: raw system calls only, no allocation.
fn drop_in_child(d: ChildCreds) -> io::Result<()> {
    // Into the session's cgroup first, while still root and before CMD runs anything: "0" is
    // the writing process. A failure fails the start: CMD never runs uncontained.
    if d.cgroup_procs >= 0 {
        // SAFETY: writes one byte from a static buffer to a descriptor opened before the fork.
        let rc = unsafe { libc::write(d.cgroup_procs, b"0".as_ptr().cast(), 1) };
        check(rc as libc::c_long)?;
    }
    // Everything the agent holds open (the FUSE device, sockets) closes at exec.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    let rc =
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    check(rc)?;
    // An empty bounding set: not even a set-uid-root or file-capability binary regains any.
    for cap in 0..=d.last_cap {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0)
    };
    check(rc.into())?;
    // SAFETY: setgroups with a zero count reads no memory.
    check(unsafe { libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) })?;
    // SAFETY: integer arguments only. The raw calls change this thread, which is the whole
    // process after the fork (glibc's wrappers would try to signal threads that are gone).
    check(unsafe { libc::syscall(libc::SYS_setresgid, d.gid, d.gid, d.gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::syscall(libc::SYS_setresuid, d.uid, d.uid, d.uid) })?;
    // A non-root uid has lost its capabilities by now; root has not. Clear them for both.
    let mut header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: both pointers refer to live, correctly laid out structs for the duration of the call.
    check(unsafe {
        libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr())
    })?;
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) }.into())?;
    // After the uid change, which resets it: CMD dies with the agent, even on kill -9.
    // SAFETY: prctl with integer arguments only.
    let rc =
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    check(rc.into())?;
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != d.parent {
        // The agent died before the death signal was armed.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Makes orphaned descendants of CMD children of the agent, so that teardown can end them.
pub fn become_subreaper() -> Result<(), ChildError> {
    nix::sys::prctl::set_child_subreaper(true).map_err(ChildError::Subreaper)
}

/// Starts `command` as `user`, with `MAESTRO_AGENT_SOCK` set when the socket is not at its
/// default path, inside the session cgroup when there is one. Must be called from the main
/// thread: the death signal follows the thread that forked, and the main thread lives as long
/// as the agent.
pub fn spawn(
    command: &[OsString],
    user: User,
    socket: Option<&Path>,
    cgroup: Option<&SessionCgroup>,
) -> Result<u32, ChildError> {
    let (program, args) = command.split_first().ok_or(ChildError::Empty)?;
    let d = ChildCreds {
        uid: user.uid,
        gid: user.gid,
        last_cap: last_cap(),
        parent: std::process::id() as i32,
        cgroup_procs: cgroup.map_or(-1, SessionCgroup::procs_fd),
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(socket) = socket {
        cmd.env(maestro_wire::sock::SOCKET_ENV, socket);
    }
    // SAFETY: the closure only makes raw system calls on a copied `ChildCreds` and allocates nothing
    // (io::Error::last_os_error holds an integer), which is what is allowed after fork.
    unsafe {
        cmd.pre_exec(move || drop_in_child(d));
    }
    let child = cmd.spawn().map_err(|source| ChildError::Spawn {
        command: program.to_string_lossy().into_owned(),
        source,
    })?;
    // The agent reaps by pid (see `reap`); the std handle is not waited on.
    Ok(child.id())
}

/// How a process ended, as a shell exit status.
pub fn exit_code(status: WaitStatus) -> Option<(u32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw() as u32, code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw() as u32, 128 + sig as i32)),
        _ => None,
    }
}

/// Reaps every child that has ended; returns CMD's exit status if CMD was among them.
pub fn reap(cmd: Option<u32>) -> Option<i32> {
    let mut cmd_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return cmd_status,
            Ok(status) => {
                if let Some((pid, code)) = exit_code(status)
                    && Some(pid) == cmd
                {
                    cmd_status = Some(code);
                }
            }
        }
    }
}

/// Pids of the living (not zombie) descendants of `root`, from /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses; cut at the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let Some(ppid) = fields.next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if state != Some("Z") {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(pid, _)| *pid));
        i += 1;
    }
    found.remove(0);
    found
}

/// Sends `signal` to a process, ignoring one that is already gone.
pub fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

/// Every living process of the session: the agent's descendants and the session cgroup's.
fn session_processes(me: u32, cgroup: Option<&SessionCgroup>) -> Vec<u32> {
    let mut pids = descendants(me);
    if let Some(cg) = cgroup {
        pids.extend(cg.pids());
        pids.sort_unstable();
        pids.dedup();
    }
    pids
}

/// Ends every process of the session: SIGTERM to the agent's descendants and the session
/// cgroup's processes; after `grace`, `cgroup.kill` (the whole cgroup at once, forks in flight
/// included) and SIGKILL sweeps of descendants, repeated until none is left or a deadline
/// passes. Returns CMD's exit status if it was reaped meanwhile, and how many processes are
/// left (0 unless one survives SIGKILL, e.g. in uninterruptible sleep).
pub async fn end_all(
    grace: Duration,
    cmd: Option<u32>,
    cgroup: Option<&SessionCgroup>,
) -> (Option<i32>, usize) {
    let me = std::process::id();
    let mut cmd_status = reap(cmd);
    let first = session_processes(me, cgroup);
    if first.is_empty() {
        return (cmd_status, 0);
    }
    tracing::info!(processes = first.len(), "ending the processes of the session");
    for pid in &first {
        signal(*pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        cmd_status = reap(cmd).or(cmd_status);
        if session_processes(me, cgroup).is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = session_processes(me, cgroup);
    if left.is_empty() {
        return (cmd_status, 0);
    }
    tracing::warn!(
        processes = left.len(),
        "killing the processes of the session after the grace period"
    );
    let killed_as_cgroup = cgroup.is_some_and(SessionCgroup::kill);
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        if !killed_as_cgroup && let Some(cg) = cgroup {
            // Old kernel without cgroup.kill: sweep the cgroup too.
            for pid in cg.pids() {
                signal(pid, Signal::SIGKILL);
            }
        }
        // Processes outside the cgroup (none when it works): sweep until none is left, so
        // that one forking meanwhile is caught on a later round.
        for pid in descendants(me) {
            signal(pid, Signal::SIGKILL);
        }
        cmd_status = reap(cmd).or(cmd_status);
        let left = session_processes(me, cgroup).len();
        if left == 0 || Instant::now() >= deadline {
            if left > 0 {
                tracing::error!(
                    processes = left,
                    "processes of the session survive SIGKILL (uninterruptible sleep?)"
                );
            }
            return (cmd_status, left);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_line(status: &str, key: &str) -> String {
        status.lines().find(|l| l.starts_with(key)).unwrap_or("").to_owned()
    }

    /// Runs `sh -c` as `user` through `spawn` and returns its /proc/self/status.
    fn run_as(user: User) -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("status");
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let script =
            format!("cat /proc/self/status > {}; id -G >> {}", out.display(), out.display());
        let cmd: Vec<OsString> = ["sh", "-c", &script].iter().map(OsString::from).collect();
        let pid = spawn(&cmd, user, None, None).unwrap();
        let status = waitpid(Pid::from_raw(pid as i32), None).unwrap();
        assert_eq!(exit_code(status), Some((pid, 0)));
        Some(std::fs::read_to_string(out).unwrap())
    }

    #[test]
    fn cmd_runs_as_the_user_with_no_capability_and_no_new_privs() {
        for user in [User { uid: 1000, gid: 1000 }, User { uid: 0, gid: 0 }] {
            let Some(status) = run_as(user) else { return };
            let uid = user.uid.to_string();
            assert_eq!(
                status_line(&status, "Uid:").split_whitespace().skip(1).collect::<Vec<_>>(),
                [uid.as_str(); 4]
            );
            for set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
                assert_eq!(
                    status_line(&status, set),
                    format!("{set}\t0000000000000000"),
                    "{user:?}"
                );
            }
            assert_eq!(status_line(&status, "NoNewPrivs:"), "NoNewPrivs:\t1");
            // No supplementary groups: `id -G` prints the primary group only.
            assert_eq!(status.lines().last().unwrap().trim(), user.gid.to_string());
        }
    }

    #[test]
    fn missing_commands_are_reported() {
        let cmd = vec![OsString::from("/nonexistent/cmd")];
        let err = spawn(&cmd, User { uid: 0, gid: 0 }, None, None).unwrap_err();
        assert!(err.to_string().starts_with("cannot start \"/nonexistent/cmd\""), "{err}");
        assert!(matches!(spawn(&[], User { uid: 0, gid: 0 }, None, None), Err(ChildError::Empty)));
    }

    #[test]
    fn finds_descendants() {
        let mut child = Command::new("sh").args(["-c", "sleep 30 & sleep 30; :"]).spawn().unwrap();
        let me = std::process::id();
        let mut found = Vec::new();
        for _ in 0..100 {
            found = descendants(me);
            if found.len() >= 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(found.contains(&child.id()));
        assert!(found.len() >= 3, "{found:?}");
        for pid in descendants(child.id()) {
            signal(pid, Signal::SIGKILL);
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
