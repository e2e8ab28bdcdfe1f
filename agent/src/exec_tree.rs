//! Which processes run under `maestro-exec` (issue 12, rule `outside_exec`): every process that
//! asked the socket for an environment or material is an exec root, and a file read is "through
//! exec" when its reader is a root or a descendant of one. `maestro-exec` may run CMD in its
//! own process or as a child (output masking forks), so the reader's parent chain is walked
//! from `/proc/<pid>/stat`, at most [`MAX_DEPTH`] steps.
//!
//! Bounded: at most [`MAX_ROOTS`] roots are remembered (the oldest is forgotten first; a read
//! by a descendant of a forgotten root reads as outside exec, which errs toward flagging).
//! A pid reused by an unrelated process after its exec root exited reads as inside: the broker
//! only flags reads outside exec, so reuse can hide a read but never raise a false alert.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Parents walked at most from a reader toward init.
pub const MAX_DEPTH: usize = 32;
/// Exec roots remembered at most.
pub const MAX_ROOTS: usize = 4096;

/// The exec roots seen, oldest first.
#[derive(Default)]
pub struct ExecTree {
    roots: Mutex<(VecDeque<u32>, HashSet<u32>)>,
}

impl ExecTree {
    /// Remembers `pid` as a process that asked for secrets through the socket.
    pub fn started(&self, pid: u32) {
        let mut guard = self.roots.lock().unwrap_or_else(|p| p.into_inner());
        let (order, set) = &mut *guard;
        if !set.insert(pid) {
            return;
        }
        order.push_back(pid);
        while order.len() > MAX_ROOTS {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }

    /// Whether `pid` is an exec root or descends from one (`parent` reads a pid's parent).
    pub fn contains_with(&self, pid: u32, parent: impl Fn(u32) -> Option<u32>) -> bool {
        let guard = self.roots.lock().unwrap_or_else(|p| p.into_inner());
        let mut current = pid;
        for _ in 0..MAX_DEPTH {
            if guard.1.contains(&current) {
                return true;
            }
            match parent(current) {
                Some(p) if p > 1 && p != current => current = p,
                _ => return false,
            }
        }
        false
    }

    /// Whether `pid` runs under `maestro-exec`, from `/proc`.
    pub fn contains(&self, pid: u32) -> bool {
        self.contains_with(pid, parent_of)
    }
}

/// A process's parent pid, from `/proc/<pid>/stat` (the field after the `)` closing `comm`,
/// which may itself hold spaces and parentheses).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_of_a_root_are_inside_and_others_outside() {
        let tree = ExecTree::default();
        tree.started(100);
        // 300 -> 200 -> 100 (root) -> 1
        let parent = |p: u32| match p {
            300 => Some(200),
            200 => Some(100),
            100 => Some(1),
            400 => Some(1),
            _ => None,
        };
        assert!(tree.contains_with(300, parent));
        assert!(tree.contains_with(100, parent));
        assert!(!tree.contains_with(400, parent));
        assert!(!tree.contains_with(999, parent));
    }

    #[test]
    fn the_walk_and_the_roots_are_bounded() {
        let tree = ExecTree::default();
        tree.started(1_000_000);
        // A chain longer than MAX_DEPTH never reaches the root.
        let deep = |p: u32| Some(p + 1);
        assert!(!tree.contains_with(1_000_000 - MAX_DEPTH as u32 - 5, deep));
        assert!(tree.contains_with(1_000_000 - 3, deep));
        for pid in 2..(MAX_ROOTS as u32 + 10) {
            tree.started(pid);
        }
        assert!(!tree.contains_with(1_000_000, |_| None), "the oldest root was forgotten");
    }

    #[test]
    fn this_process_parent_is_read_from_proc() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }
}
