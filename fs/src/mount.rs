//! [`mount`] and [`Mount`]: putting the filesystem on a directory, swapping snapshots, and
//! taking it down again.
//!
//! The mount is made here with `mount(2)` on a `/dev/fuse` descriptor and handed to fuser with
//! `Session::from_fd`, so fuser never unmounts anything by itself. Quirk seen in fuser 0.18's
//! source: its `is_mounted` check reads POLLERR on the device (a dead connection) as "still
//! mounted", so the unmount its `Mount` runs on drop always calls `umount(path)`, by then
//! possibly on someone else's mount at the same path; and its `AutoUnmount` needs fusermount3.
//! We unmount with `umount2(MNT_DETACH)` after checking in mountinfo that the mount on top of
//! the path is still ours, then join the session thread.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use fuser::{BackgroundSession, Config, INodeNo, Notifier, Session, SessionACL};
use nix::mount::{MntFlags, MsFlags};

use crate::access::{AccessObserver, CallerPolicy};
use crate::error::FsError;
use crate::filesystem::{SecretsFs, Shared};
use crate::mountinfo::{self, MountEntry};
use crate::snapshot::Snapshot;
use crate::tree::{self, Inodes, Invalidation, Tree};

/// How long to wait for the session thread to end after the unmount. The thread ends as soon as
/// the kernel drops the connection, which happens at once unless a process still holds a file
/// open; then the connection is aborted.
const SESSION_END_WAIT: Duration = Duration::from_millis(500);
/// How long to wait again after aborting the connection.
const SESSION_ABORT_WAIT: Duration = Duration::from_secs(2);
/// Where the kernel's FUSE control filesystem lives; `<dev>/abort` ends a connection.
const FUSECTL_DIR: &str = "/sys/fs/fuse/connections";

/// Who uses the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Owner of every file and directory (the sandbox user).
    pub uid: u32,
    /// Group of every file and directory.
    pub gid: u32,
    /// Besides root (0) and `uid`, who may open files (usually empty). When not empty, modes
    /// are widened to 0444/0555 so the kernel lets these uids reach `open`, and the filesystem
    /// refuses (and records) every other uid itself.
    pub allowed_uids: Vec<u32>,
    /// Shown in /proc/mounts as the source, e.g. "maestro-secrets".
    pub fsname: String,
}

impl MountOptions {
    /// File and directory permission bits for these options.
    fn perms(&self) -> (u16, u16) {
        let extra = self.allowed_uids.iter().any(|&u| u != 0 && u != self.uid);
        if extra { (0o444, 0o555) } else { (0o400, 0o500) }
    }
}

/// A mounted secrets filesystem. Dropping it unmounts it (best effort); call
/// [`Mount::unmount`] to see errors.
pub struct Mount {
    path: PathBuf,
    fsname: String,
    shared: Arc<Shared>,
    /// Held while a snapshot is built, swapped and invalidated, so swaps never interleave.
    inodes: Mutex<Inodes>,
    notifier: Notifier,
    session: Option<BackgroundSession>,
    /// The mount's device as mountinfo shows it, to recognise it again.
    device: Option<(u32, u32)>,
    unmounted: bool,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("path", &self.path)
            .field("fsname", &self.fsname)
            .field("device", &self.device)
            .field("unmounted", &self.unmounted)
            .finish_non_exhaustive()
    }
}

/// Mounts an empty secrets filesystem at `dir` (an existing directory) and serves it on a
/// background thread. Needs root (CAP_SYS_ADMIN). Publish a snapshot to show files.
pub fn mount(
    dir: &Path,
    options: MountOptions,
    observer: Arc<dyn AccessObserver>,
) -> Result<Mount, FsError> {
    check_fsname(&options.fsname)?;
    let path = dir
        .canonicalize()
        .map_err(|source| FsError::MountPoint { path: dir.to_path_buf(), source })?;
    if !path.is_dir() {
        return Err(FsError::MountPointNotDirectory { path });
    }
    let (file_perm, dir_perm) = options.perms();
    let now = SystemTime::now();
    let shared = Arc::new(Shared::new(
        Tree::empty(now),
        CallerPolicy::new(options.uid, &options.allowed_uids),
        (options.uid, options.gid),
        (file_perm, dir_perm),
        observer,
    ));

    let dev_fuse = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|source| FsError::OpenDevFuse { source })?;
    let fd: OwnedFd = dev_fuse.into();
    let data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions,allow_other",
        fd.as_raw_fd(),
        libc::S_IFDIR | u32::from(dir_perm),
        nix::unistd::geteuid(),
        nix::unistd::getegid(),
    );
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    nix::mount::mount(
        Some(options.fsname.as_str()),
        &path,
        Some("fuse"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|source| FsError::MountSyscall { path: path.clone(), source })?;

    // From here on, a failure must take the mount down again.
    let device = match mountinfo::top_at(&path) {
        Ok(Some(m)) if m.is_fuse() && m.source == options.fsname => Some((m.major, m.minor)),
        _ => None,
    };
    let mut config = Config::default();
    config.n_threads = Some(1);
    // The kernel queued FUSE_INIT at mount time; from_fd answers it before returning.
    let session =
        match Session::from_fd(SecretsFs::new(Arc::clone(&shared)), fd, SessionACL::All, config) {
            Ok(session) => session,
            Err(source) => {
                detach_quietly(&path);
                return Err(FsError::Handshake { path, source });
            }
        };
    let notifier = session.notifier();
    let background = match session.spawn() {
        Ok(background) => background,
        Err(source) => {
            detach_quietly(&path);
            return Err(FsError::SpawnSession { path, source });
        }
    };
    tracing::info!(path = %path.display(), fsname = %options.fsname, "mounted secrets filesystem");
    Ok(Mount {
        path,
        fsname: options.fsname,
        shared,
        inodes: Mutex::new(Inodes::new()),
        notifier,
        session: Some(background),
        device,
        unmounted: false,
    })
}

impl Mount {
    /// Makes `snapshot` the content of the mount, atomically: an `open` that starts after this
    /// call returns sees the new files only. Then tells the kernel to forget every removed or
    /// changed name and inode, and returns once those notifications are sent. Handles opened
    /// on a file that is now gone or changed fail their next read (ESTALE).
    ///
    /// Must not be called from an [`AccessObserver`]: the kernel may wait for the filesystem
    /// thread, which would be waiting here.
    pub fn publish(&self, snapshot: Snapshot) {
        let files = snapshot.len();
        let mut inodes = self.inodes.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.shared.current();
        let new = tree::build(snapshot, &old, &mut inodes, SystemTime::now());
        let invalidations = tree::invalidations(&old, &new);
        let replaced = self.shared.swap(new);
        // The replaced tree's values are zeroized here, or when the last in-flight read reply
        // that still holds it is sent.
        drop(old);
        drop(replaced);
        let failed = invalidations.iter().filter_map(|i| self.send(i).err()).collect::<Vec<_>>();
        if let Some(error) = failed.first() {
            tracing::warn!(
                path = %self.path.display(),
                failed = failed.len(),
                %error,
                "kernel invalidation failed; cached names and attributes expire within 1 s"
            );
        }
        drop(inodes);
        tracing::debug!(
            path = %self.path.display(),
            files,
            invalidations = invalidations.len(),
            "published snapshot"
        );
    }

    /// Removes every file: `publish(Snapshot::empty())`.
    pub fn clear(&self) {
        self.publish(Snapshot::empty());
    }

    /// The mount point (canonical).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Clears the files, detaches the mount (`umount2(MNT_DETACH)`, so a busy mount goes too)
    /// and joins the session thread. If a process still holds a file open, the FUSE connection
    /// is aborted (through fusectl) so that the thread can end.
    pub fn unmount(mut self) -> Result<(), FsError> {
        self.shutdown()
    }

    /// Sends one notification. fuser turns ENOENT (the kernel had nothing cached) into Ok.
    fn send(&self, invalidation: &Invalidation) -> std::io::Result<()> {
        match invalidation {
            Invalidation::Entry { parent, name } => {
                self.notifier.inval_entry(INodeNo(*parent), name.as_ref())
            }
            Invalidation::Inode { ino } => self.notifier.inval_inode(INodeNo(*ino), 0, 0),
        }
    }

    fn shutdown(&mut self) -> Result<(), FsError> {
        if self.unmounted {
            return Ok(());
        }
        self.unmounted = true;
        self.clear();
        let detach_result = self.detach();
        let join_result = match self.session.take() {
            Some(session) => self.end_session(session),
            None => Ok(()),
        };
        tracing::info!(path = %self.path.display(), "unmounted secrets filesystem");
        detach_result.and(join_result)
    }

    /// Detaches the mount if the mount on top of the path is still ours.
    fn detach(&self) -> Result<(), FsError> {
        let top = match mountinfo::top_at(&self.path) {
            Ok(top) => top,
            Err(error) => {
                tracing::warn!(%error, "cannot check the mount before unmounting; detaching anyway");
                return detach(&self.path);
            }
        };
        match top {
            Some(entry) if self.is_ours(&entry) => detach(&self.path),
            Some(_) | None => {
                // Unmounted by someone else, or covered by another mount we must not detach.
                tracing::warn!(path = %self.path.display(), "secrets mount is not on top of its path any more; not detaching");
                Ok(())
            }
        }
    }

    fn is_ours(&self, entry: &MountEntry) -> bool {
        entry.is_fuse()
            && entry.source == self.fsname
            && self.device.is_none_or(|d| d == (entry.major, entry.minor))
    }

    fn end_session(&self, session: BackgroundSession) -> Result<(), FsError> {
        if !wait_finished(&session, SESSION_END_WAIT) {
            tracing::warn!(
                path = %self.path.display(),
                "files under the unmounted secrets filesystem are still open; aborting the FUSE connection"
            );
            if let Some(device) = self.device
                && let Err(error) = abort_connection(device)
            {
                tracing::warn!(%error, "cannot abort the FUSE connection");
            }
            if !wait_finished(&session, SESSION_ABORT_WAIT) {
                // Dropping the handle leaves the thread to end when the last file is closed.
                // It serves an empty tree until then.
                return Err(FsError::SessionBusy { path: self.path.clone() });
            }
        }
        session
            .join()
            .map_err(|e| FsError::SessionEnded { path: self.path.clone(), reason: e.to_string() })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(%error, "unmounting the secrets filesystem on drop failed");
        }
    }
}

fn check_fsname(fsname: &str) -> Result<(), FsError> {
    let ok = !fsname.is_empty()
        && fsname.len() <= 64
        && fsname.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok { Ok(()) } else { Err(FsError::InvalidFsName { fsname: fsname.to_owned() }) }
}

fn detach(path: &Path) -> Result<(), FsError> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: nothing is mounted there any more.
        Ok(()) | Err(nix::Error::EINVAL) => Ok(()),
        Err(source) => Err(FsError::Unmount { path: path.to_path_buf(), source }),
    }
}

fn detach_quietly(path: &Path) {
    if let Err(error) = detach(path) {
        tracing::warn!(%error, "cleaning up a failed mount");
    }
}

fn wait_finished(session: &BackgroundSession, limit: Duration) -> bool {
    let start = Instant::now();
    while !session.guard.is_finished() {
        if start.elapsed() >= limit {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Aborts the FUSE connection of the filesystem with device `major:minor` through fusectl,
/// mounting fusectl first if needed. Every pending and later request then fails (ENOTCONN)
/// and the session thread's read returns ENODEV.
fn abort_connection((major, minor): (u32, u32)) -> std::io::Result<()> {
    // The directory is named after the kernel's dev_t: MKDEV(major, minor).
    let conn = (u64::from(major) << 20) | u64::from(minor);
    let abort = PathBuf::from(format!("{FUSECTL_DIR}/{conn}/abort"));
    if !abort.exists() {
        let fusectl_mounted =
            mountinfo::read().map(|all| all.iter().any(|m| m.fstype == "fusectl")).unwrap_or(false);
        if !fusectl_mounted {
            nix::mount::mount(
                Some("fusectl"),
                FUSECTL_DIR,
                Some("fusectl"),
                MsFlags::empty(),
                None::<&str>,
            )?;
        }
    }
    std::fs::write(abort, b"1")
}
