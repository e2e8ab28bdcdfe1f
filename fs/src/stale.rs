//! [`clean_stale_mount`]: removing a FUSE mount left behind by a process that was killed.
//!
//! When the serving process dies without unmounting, the kernel aborts the FUSE connection but
//! the mount stays: every access to it fails with ENOTCONN ("Transport endpoint is not
//! connected") and a new mount at the same path would stack on top of it. The next agent calls
//! this before mounting.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

use crate::error::FsError;
use crate::mountinfo;

/// Most mounts stacked at one path that we take down; a bound so that a path that keeps being
/// remounted by someone else cannot keep us looping.
const MAX_STACKED: usize = 16;

/// A FUSE mount left at `dir` by a killed process (ENOTCONN, or listed in /proc/self/mountinfo
/// as fuse): lazily unmount it. Returns whether something was cleaned.
///
/// Only FUSE mounts are touched: if the mount on top of `dir` is of another type, nothing is
/// done. A live FUSE mount at `dir` is detached too, since two agents cannot share a path.
///
/// Call it before anything else touches `dir`: on a dead mount even `stat` fails, so "create
/// the directory if missing" steps misfire. A `dir` whose parent does not exist has nothing
/// mounted on it: `Ok(false)`.
pub fn clean_stale_mount(dir: &Path) -> Result<bool, FsError> {
    let Some(path) = absolute(dir)? else {
        return Ok(false);
    };
    let mut cleaned = false;
    for _ in 0..MAX_STACKED {
        let top = mountinfo::top_at(&path)?;
        let dead = matches!(
            std::fs::metadata(&path),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN)
        );
        let fuse_on_top = top.as_ref().is_some_and(|m| m.is_fuse());
        if !fuse_on_top && !dead {
            break;
        }
        match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed a stale FUSE mount");
                cleaned = true;
            }
            Err(nix::Error::EINVAL) => break,
            Err(source) => return Err(FsError::Unmount { path, source }),
        }
    }
    Ok(cleaned)
}

/// The absolute path of `dir` without touching `dir` itself (a dead mount point cannot be
/// stat'ed): the parent is canonicalized and the last component kept as is. `None` when the
/// parent does not exist.
fn absolute(dir: &Path) -> Result<Option<PathBuf>, FsError> {
    let mount_point_error =
        |source: io::Error| FsError::MountPoint { path: dir.to_path_buf(), source };
    let name = dir.file_name().ok_or_else(|| {
        mount_point_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no final component",
        ))
    })?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match parent.canonicalize() {
        Ok(parent) => Ok(Some(parent.join(name))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(mount_point_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_directory_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!clean_stale_mount(dir.path()).unwrap());
        assert!(dir.path().is_dir());
    }

    #[test]
    fn missing_paths_have_nothing_to_clean() {
        assert!(!clean_stale_mount(Path::new("/nonexistent-maestro/x")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!clean_stale_mount(&dir.path().join("not-yet")).unwrap());
        let e = clean_stale_mount(Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("no final component"), "{e}");
    }
}
