//! [`FsError`]: everything that can fail in this crate, one variant per failing step.
//!
//! Messages name paths and limits, never file content: a path under the mount is a variable name
//! or a documented file name, not a secret.

use std::io;
use std::path::PathBuf;

/// An error of the secrets filesystem. Each message says what went wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "fields are named after what they hold; each message says the rest")]
pub enum FsError {
    /// A snapshot entry's path is not a clean relative path.
    #[error(
        "invalid file path {path:?} under the mount: {reason}; use a relative '/'-separated path"
    )]
    InvalidPath { path: String, reason: &'static str },

    /// Two snapshot entries have the same path.
    #[error("two files have the same path {path:?}; give each file its own path")]
    DuplicatePath { path: String },

    /// One entry's path is a directory of another entry.
    #[error("{file:?} is a file but {nested:?} needs it to be a directory; rename one of them")]
    FileIsDirectory { file: String, nested: String },

    /// A snapshot has more files than the limit.
    #[error("too many files in one snapshot: {count} (at most {max}); activate fewer secrets")]
    TooManyFiles { count: usize, max: usize },

    /// One file's content is larger than the limit.
    #[error("file {path:?} is {size} bytes (at most {max}); store a smaller value")]
    FileTooLarge { path: String, size: usize, max: usize },

    /// The files of a snapshot are larger than the limit together.
    #[error("files of one snapshot add up to {size} bytes (at most {max}); activate fewer secrets")]
    SnapshotTooLarge { size: usize, max: usize },

    /// A secret name attached to an entry is empty or too long.
    #[error("file {path:?} names an invalid secret ({reason}); name the secret it comes from")]
    InvalidSecretName { path: String, reason: &'static str },

    /// The filesystem name shown in /proc/mounts is not acceptable.
    #[error("invalid filesystem name {fsname:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    InvalidFsName { fsname: String },

    /// The mount point cannot be resolved.
    #[error("mount point {path} cannot be used: {source}; create the directory first")]
    MountPoint { path: PathBuf, source: io::Error },

    /// The mount point exists but is not a directory.
    #[error("mount point {path} is not a directory; pass a directory")]
    MountPointNotDirectory { path: PathBuf },

    /// `/dev/fuse` cannot be opened.
    #[error("cannot open /dev/fuse: {source}; load the fuse module and run as root")]
    OpenDevFuse { source: io::Error },

    /// The `mount(2)` system call failed.
    #[error(
        "mounting the secrets filesystem at {path} failed: {source}; run as root (CAP_SYS_ADMIN)"
    )]
    MountSyscall { path: PathBuf, source: nix::Error },

    /// The kernel and fuser did not agree on the protocol at start.
    #[error("the FUSE handshake at {path} failed: {source}; check that the kernel supports FUSE")]
    Handshake { path: PathBuf, source: io::Error },

    /// The thread that serves the kernel's requests could not be started.
    #[error("cannot start the FUSE session thread for {path}: {source}")]
    SpawnSession { path: PathBuf, source: io::Error },

    /// `umount2(MNT_DETACH)` failed.
    #[error("unmounting {path} failed: {source}; run as root (CAP_SYS_ADMIN) or `umount -l` it")]
    Unmount { path: PathBuf, source: nix::Error },

    /// The session thread ended with an error or a panic.
    #[error("the FUSE session of {path} ended badly: {reason}; the mount is gone, nothing to do")]
    SessionEnded { path: PathBuf, reason: String },

    /// The session thread still serves open handles after the connection was aborted.
    #[error(
        "the FUSE session of {path} is still serving open files after unmount; it ends when \
         they are closed or the process exits"
    )]
    SessionBusy { path: PathBuf },

    /// `/proc/self/mountinfo` cannot be read.
    #[error("cannot read /proc/self/mountinfo: {source}; mount /proc")]
    ReadMountInfo { source: io::Error },
}
