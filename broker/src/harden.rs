//! Process hardening at start-up: the broker holds the master key and, while serving, decrypted
//! values, none of which may reach a core file, another process or swap.
//!
//! * not dumpable (`PR_SET_DUMPABLE` 0): no core file, no `ptrace` by processes of the same
//!   user, and `/proc/<pid>/mem`, `environ` and friends owned by root;
//! * a core size limit of 0 (`RLIMIT_CORE`), for a crash whatever happens to the flag above;
//! * memory locked (`mlockall`, current and future pages, locked when first touched) where the
//!   host allows: with `CAP_IPC_LOCK` or no `RLIMIT_MEMLOCK` limit. Elsewhere, locking future
//!   mappings would make allocations fail once the limit is reached, so it is skipped with a
//!   warning instead.
//!
//! No step is fatal: each failure is logged, and the broker serves anyway (a development
//! machine may refuse some of them).

use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tracing::{info, warn};

/// `CAP_IPC_LOCK`'s bit in the capability sets.
const CAP_IPC_LOCK: u32 = 14;

/// What [`harden`] managed, for the log and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardened {
    pub not_dumpable: bool,
    pub no_core: bool,
    pub memory_locked: bool,
}

/// Runs every step; call it first thing in `main`, before other threads start. `report`: log
/// what was done and what failed.
pub fn harden(report: bool) -> Hardened {
    let not_dumpable = nix::sys::prctl::set_dumpable(false);
    let no_core = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    if report {
        if let Err(e) = not_dumpable {
            warn!(error = %e, "cannot make the broker non-dumpable (prctl PR_SET_DUMPABLE)");
        }
        if let Err(e) = no_core {
            warn!(error = %e, "cannot set the core file size limit to 0 (setrlimit RLIMIT_CORE)");
        }
    }
    let memory_locked = lock_memory(report);
    Hardened { not_dumpable: not_dumpable.is_ok(), no_core: no_core.is_ok(), memory_locked }
}

fn lock_memory(report: bool) -> bool {
    let unlimited = matches!(
        getrlimit(Resource::RLIMIT_MEMLOCK),
        Ok((soft, _)) if soft == libc::RLIM_INFINITY
    );
    if !unlimited && !has_ipc_lock() {
        if report {
            warn!(
                "memory not locked: the broker lacks CAP_IPC_LOCK and RLIMIT_MEMLOCK is limited; \
                 decrypted values could be swapped out (run it with CAP_IPC_LOCK, or ulimit -l unlimited)"
            );
        }
        return false;
    }
    let flags = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE;
    // MCL_ONFAULT (Linux 4.4): pages are locked when first touched, so the reserved but unused
    // parts of thread stacks and heap arenas do not become resident.
    let on_fault = MlockAllFlags::from_bits_retain(flags.bits() | libc::MCL_ONFAULT);
    let locked = mlockall(on_fault).or_else(|_| mlockall(flags));
    if report {
        match &locked {
            Ok(()) => info!("memory locked (mlockall)"),
            Err(e) => warn!(
                error = %e,
                "memory not locked (mlockall refused); decrypted values could be swapped out"
            ),
        }
    }
    locked.is_ok()
}

/// Whether the effective capability set holds `CAP_IPC_LOCK` (from `/proc/self/status`).
fn has_ipc_lock() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}
