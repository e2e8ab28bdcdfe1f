//! Process hardening, done first, while the agent is still one thread: not dumpable (no ptrace
//! by other users, no core, `/proc/<pid>/environ` and `mem` readable by root only), no core
//! files, no inherited file descriptors, all memory locked so no value is ever swapped out, and
//! no trace of the bundle in the environment that CMD inherits.

use std::io;

use thiserror::Error;

/// A hardening step that failed.
#[derive(Debug, Error)]
pub enum HardenError {
    #[error("cannot make the agent non-dumpable (prctl PR_SET_DUMPABLE): {0}")]
    Dumpable(#[source] nix::Error),
    #[error("cannot disable core dumps (setrlimit RLIMIT_CORE): {0}")]
    CoreLimit(#[source] nix::Error),
    #[error("cannot close inherited file descriptors: {0}")]
    CloseFds(#[source] io::Error),
    #[error(
        "cannot lock the agent's memory (mlockall): {0}; run it as root with CAP_IPC_LOCK \
         (docker: --cap-add IPC_LOCK)"
    )]
    LockMemory(#[source] io::Error),
}

/// Runs every step. Must be called before any other thread exists (file descriptors and
/// the environment are process-wide and not thread-safe to change).
pub fn harden_process() -> Result<(), HardenError> {
    nix::sys::prctl::set_dumpable(false).map_err(HardenError::Dumpable)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(HardenError::CoreLimit)?;
    close_inherited_fds().map_err(HardenError::CloseFds)?;
    lock_memory().map_err(HardenError::LockMemory)?;
    Ok(())
}

/// Closes every descriptor above stderr: whatever the entrypoint's parent left open (a pipe to
/// a supervisor, a log file) is not the agent's to hold, nor CMD's to inherit.
fn close_inherited_fds() -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; no Rust object owns any descriptor above 2
    // this early in main, so none is closed under an owner's feet.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // Kernels before 5.9: close what /proc/self/fd lists. Collect first: the directory handle
    // itself is a descriptor that must not be closed while it is read.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: as above; EBADF for the already closed directory handle is ignored.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// Locks current and future memory. MCL_ONFAULT locks pages when they are first touched, so the
/// reserved but untouched parts of thread stacks and heaps do not count as resident.
fn lock_memory() -> io::Result<()> {
    // SAFETY: mlockall takes flags only and changes no memory content.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Removes the bundle's variable from the agent's environment, so that CMD and anything else it
/// starts never learns where the enrollment token was.
///
/// # Safety
/// Changing the environment is only sound while no other thread runs (it may read it
/// concurrently); call it before the runtime starts.
pub unsafe fn scrub_environment() {
    // SAFETY: the caller guarantees the process is single-threaded.
    unsafe { std::env::remove_var(crate::config::BUNDLE_ENV) };
}
