//! The agent's own capabilities: it keeps only those it still needs and drops the rest from
//! every set (bounding, ambient, inheritable, effective, permitted).
//!
//! Capabilities are per thread on Linux, and a new thread copies its creator's. So the agent
//! restricts itself on the main thread before any other thread exists (the runtime, the FUSE
//! session): every thread then has the reduced sets. The mount happens later, with
//! CAP_SYS_ADMIN, which the agent keeps anyway for the unmount at teardown.
//!
//! The system calls sit behind [`CapSyscall`], with [`LinuxCaps`] as the real implementation and
//! a recording double in the tests, which can also make a step fail.

use caps::{CapSet, Capability, CapsHashSet, errors::CapsError};
use thiserror::Error;

/// What the agent keeps, and why:
/// * CAP_SYS_ADMIN: mount the secrets filesystem, clean a stale mount, unmount at teardown;
/// * CAP_IPC_LOCK: `mlockall(MCL_FUTURE)` makes every later allocation locked, which fails
///   without it once RLIMIT_MEMLOCK is reached;
/// * CAP_SETUID, CAP_SETGID: start CMD as the sandbox user;
/// * CAP_SETPCAP: empty CMD's bounding set, so that CMD has no capability even as root;
/// * CAP_KILL: signal the sandbox user's processes (forwarding, teardown).
pub const AGENT_CAPS: &[Capability] = &[
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_IPC_LOCK,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_KILL,
];

/// A step of [`restrict`] that failed.
#[derive(Debug, Error)]
pub enum PrivsError {
    #[error("cannot read the agent's capabilities: {0}")]
    Read(#[source] CapsError),
    #[error(
        "the agent lacks capabilities it needs: {missing}; run it as root with them granted \
         (docker: --cap-add for each)"
    )]
    Missing { missing: String },
    #[error("cannot drop {cap:?} from the bounding set: {source}")]
    DropBounding {
        cap: Capability,
        #[source]
        source: CapsError,
    },
    #[error("cannot clear the ambient capability set: {0}")]
    ClearAmbient(#[source] CapsError),
    #[error("cannot set the {set} capability set: {source}")]
    SetSet {
        set: &'static str,
        #[source]
        source: CapsError,
    },
}

/// The capability system calls [`restrict`] makes, on the calling thread.
pub trait CapSyscall {
    fn read(&self, set: CapSet) -> Result<CapsHashSet, CapsError>;
    fn drop_bounding(&self, cap: Capability) -> Result<(), CapsError>;
    fn clear_ambient(&self) -> Result<(), CapsError>;
    fn set(&self, set: CapSet, caps: &CapsHashSet) -> Result<(), CapsError>;
}

/// The real system calls, through the `caps` crate.
pub struct LinuxCaps;

impl CapSyscall for LinuxCaps {
    fn read(&self, set: CapSet) -> Result<CapsHashSet, CapsError> {
        caps::read(None, set)
    }
    fn drop_bounding(&self, cap: Capability) -> Result<(), CapsError> {
        caps::drop(None, CapSet::Bounding, cap)
    }
    fn clear_ambient(&self) -> Result<(), CapsError> {
        caps::clear(None, CapSet::Ambient)
    }
    fn set(&self, set: CapSet, caps: &CapsHashSet) -> Result<(), CapsError> {
        caps::set(None, set, caps)
    }
}

fn sorted(set: impl IntoIterator<Item = Capability>) -> Vec<Capability> {
    let mut v: Vec<Capability> = set.into_iter().collect();
    v.sort_by_key(Capability::index);
    v
}

/// Keeps exactly `keep` in the effective and permitted sets and drops every other capability
/// from the bounding set; empties the inheritable and ambient sets. Refuses, changing nothing,
/// when a capability of `keep` is not permitted to begin with.
pub fn restrict(sys: &impl CapSyscall, keep: &[Capability]) -> Result<(), PrivsError> {
    let keep: CapsHashSet = keep.iter().copied().collect();
    let permitted = sys.read(CapSet::Permitted).map_err(PrivsError::Read)?;
    let missing = sorted(keep.difference(&permitted).copied());
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|c| format!("{c:?}")).collect();
        return Err(PrivsError::Missing { missing: names.join(", ") });
    }
    // The bounding set first: dropping from it needs CAP_SETPCAP in the effective set, which
    // is still there.
    let bounding = sys.read(CapSet::Bounding).map_err(PrivsError::Read)?;
    for cap in sorted(bounding.difference(&keep).copied()) {
        sys.drop_bounding(cap).map_err(|source| PrivsError::DropBounding { cap, source })?;
    }
    sys.clear_ambient().map_err(PrivsError::ClearAmbient)?;
    let set = |name: &'static str, set: CapSet, caps: &CapsHashSet| {
        sys.set(set, caps).map_err(|source| PrivsError::SetSet { set: name, source })
    };
    set("inheritable", CapSet::Inheritable, &CapsHashSet::new())?;
    // Effective before permitted: effective must stay a subset of permitted at every step.
    set("effective", CapSet::Effective, &keep)?;
    set("permitted", CapSet::Permitted, &keep)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Read(&'static str),
        DropBounding(Capability),
        ClearAmbient,
        Set(&'static str, Vec<Capability>),
    }

    fn set_name(set: CapSet) -> &'static str {
        match set {
            CapSet::Ambient => "ambient",
            CapSet::Bounding => "bounding",
            CapSet::Effective => "effective",
            CapSet::Inheritable => "inheritable",
            CapSet::Permitted => "permitted",
        }
    }

    /// Records every call; `fail` makes the first call equal to it fail.
    struct Recording {
        permitted: CapsHashSet,
        bounding: CapsHashSet,
        calls: RefCell<Vec<Call>>,
        fail: Option<Call>,
    }

    impl Recording {
        fn root() -> Self {
            Recording {
                permitted: caps::all(),
                bounding: caps::all(),
                calls: RefCell::new(Vec::new()),
                fail: None,
            }
        }
        fn record(&self, call: Call) -> Result<(), CapsError> {
            let failing = self.fail.as_ref() == Some(&call);
            self.calls.borrow_mut().push(call);
            if failing { Err(CapsError::from("injected failure")) } else { Ok(()) }
        }
    }

    impl CapSyscall for Recording {
        fn read(&self, set: CapSet) -> Result<CapsHashSet, CapsError> {
            self.record(Call::Read(set_name(set)))?;
            Ok(match set {
                CapSet::Bounding => self.bounding.clone(),
                _ => self.permitted.clone(),
            })
        }
        fn drop_bounding(&self, cap: Capability) -> Result<(), CapsError> {
            self.record(Call::DropBounding(cap))
        }
        fn clear_ambient(&self) -> Result<(), CapsError> {
            self.record(Call::ClearAmbient)
        }
        fn set(&self, set: CapSet, caps: &CapsHashSet) -> Result<(), CapsError> {
            self.record(Call::Set(set_name(set), sorted(caps.iter().copied())))
        }
    }

    #[test]
    fn keeps_only_what_is_needed_and_empties_the_rest() {
        let sys = Recording::root();
        restrict(&sys, AGENT_CAPS).unwrap();
        let calls = sys.calls.into_inner();
        let keep = sorted(AGENT_CAPS.iter().copied());
        let dropped: Vec<Capability> = calls
            .iter()
            .filter_map(|c| if let Call::DropBounding(cap) = c { Some(*cap) } else { None })
            .collect();
        // Every capability but the kept ones leaves the bounding set, each exactly once.
        assert_eq!(dropped.len(), caps::all().len() - AGENT_CAPS.len());
        assert!(dropped.iter().all(|c| !AGENT_CAPS.contains(c)));
        assert!(dropped.contains(&Capability::CAP_DAC_OVERRIDE));
        assert!(dropped.contains(&Capability::CAP_SYS_PTRACE));
        let tail = &calls[calls.len() - 4..];
        assert_eq!(
            tail,
            [
                Call::ClearAmbient,
                Call::Set("inheritable", vec![]),
                Call::Set("effective", keep.clone()),
                Call::Set("permitted", keep),
            ]
        );
        // Nothing was changed before the sets were read.
        assert_eq!(calls[0], Call::Read("permitted"));
        assert_eq!(calls[1], Call::Read("bounding"));
    }

    #[test]
    fn refuses_without_needed_capabilities_and_changes_nothing() {
        let mut sys = Recording::root();
        sys.permitted.remove(&Capability::CAP_IPC_LOCK);
        sys.permitted.remove(&Capability::CAP_SYS_ADMIN);
        let err = restrict(&sys, AGENT_CAPS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the agent lacks capabilities it needs: CAP_IPC_LOCK, CAP_SYS_ADMIN; run it as root \
             with them granted (docker: --cap-add for each)"
        );
        assert_eq!(sys.calls.into_inner(), [Call::Read("permitted")]);
    }

    #[test]
    fn a_failing_step_is_named() {
        let mut sys = Recording::root();
        sys.fail = Some(Call::DropBounding(Capability::CAP_NET_RAW));
        let err = restrict(&sys, AGENT_CAPS).unwrap_err();
        assert!(matches!(err, PrivsError::DropBounding { cap: Capability::CAP_NET_RAW, .. }));
        assert!(err.to_string().starts_with("cannot drop CAP_NET_RAW from the bounding set"));
        // It stops at the failure: the sets that grant power were not touched.
        assert!(!sys.calls.into_inner().iter().any(|c| matches!(c, Call::Set(..))));

        let mut sys = Recording::root();
        sys.fail = Some(Call::Set("permitted", sorted(AGENT_CAPS.iter().copied())));
        let err = restrict(&sys, AGENT_CAPS).unwrap_err();
        assert!(err.to_string().starts_with("cannot set the permitted capability set"));
    }

    #[test]
    fn already_dropped_bounding_caps_are_left_alone() {
        let mut sys = Recording::root();
        sys.bounding = AGENT_CAPS.iter().copied().chain([Capability::CAP_CHOWN]).collect();
        restrict(&sys, AGENT_CAPS).unwrap();
        let drops: Vec<Call> = sys
            .calls
            .into_inner()
            .into_iter()
            .filter(|c| matches!(c, Call::DropBounding(_)))
            .collect();
        assert_eq!(drops, [Call::DropBounding(Capability::CAP_CHOWN)]);
    }
}
