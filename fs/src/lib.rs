//! The secrets filesystem of the Maestro agent: a read-only FUSE tree (normally at
//! `/run/secrets`) rendered from a snapshot of the session's active secrets.
//!
//! What it does:
//!
//! * shows each file of a [`Snapshot`] under the mount, owned by the sandbox user, files 0400
//!   and directories 0500, with the kernel checking modes (`default_permissions`); mounted
//!   `ro,nosuid,nodev,noexec,allow_other`;
//! * checks every `open` against the current snapshot (gone: ENOENT) and the caller (root, the
//!   sandbox user, or [`MountOptions::allowed_uids`]; others: EACCES), and reports it, allowed
//!   or denied, to an [`AccessObserver`] with pid, uid, executable (`/proc/<pid>/exe`) and
//!   command name; an allowed open the observer cannot record fails with EIO (fail closed);
//! * swaps snapshots atomically ([`Mount::publish`]) and tells the kernel to forget what
//!   changed, so a removed file is gone at once; a file's pages stay in the kernel's page cache
//!   between opens only while its content is current (every change or removal drops them), and
//!   a handle opened before a change cannot read content that is no longer there;
//! * refuses every change (EROFS);
//! * cleans up a mount left behind by a killed process ([`clean_stale_mount`]).
//!
//! What it never does: log, return in an error, or copy a file's content. Values live in
//! [`maestro_wire::SecretValue`] (zeroized on drop) inside the current snapshot only, and read
//! replies are written to the kernel straight from that buffer.
//!
//! Design: the snapshot is rendered into an inode table whose inode numbers stay
//! stable for the life of the mount. The table sits behind an `Arc` that callbacks clone and
//! `publish` replaces. fuser's session runs on a background thread; the mount itself is made
//! here with `mount(2)` so that only this crate ever unmounts it, with `umount2(MNT_DETACH)`.
//!
//! Needs root (CAP_SYS_ADMIN) and `/dev/fuse`; no libfuse and no fusermount.
//!
//! ```no_run
//! use std::sync::Arc;
//! use maestro_fs::{FileEntry, MountOptions, Snapshot};
//! use maestro_wire::SecretValue;
//!
//! # fn main() -> Result<(), maestro_fs::FsError> {
//! let dir = std::path::Path::new("/run/secrets");
//! maestro_fs::clean_stale_mount(dir)?;
//! let options = MountOptions { uid: 1000, gid: 1000, allowed_uids: vec![], fsname: "maestro-secrets".into() };
//! let mount = maestro_fs::mount(dir, options, Arc::new(|access: maestro_fs::Access| {
//!     // Queue it for the broker; never block here.
//!     let _ = access;
//! }))?;
//! mount.publish(Snapshot::new(vec![FileEntry {
//!     path: "OPENAI_API_KEY".into(),
//!     secret: "OPENAI".into(),
//!     content: SecretValue::from("sk-..."),
//! }])?);
//! mount.unmount()?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod access;
mod error;
mod filesystem;
mod mount;
mod mountinfo;
mod snapshot;
mod stale;
mod tree;

pub use access::{Access, AccessObserver, NotRecorded, executable_of};
pub use error::FsError;
pub use mount::{Mount, MountOptions, mount};
pub use snapshot::{
    FileEntry, MAX_DEPTH, MAX_FILE_BYTES, MAX_FILES, MAX_NAME_BYTES, MAX_PATH_BYTES,
    MAX_SECRET_NAME_BYTES, MAX_SNAPSHOT_BYTES, Snapshot,
};
pub use stale::clean_stale_mount;
