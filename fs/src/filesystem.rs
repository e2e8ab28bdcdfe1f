//! [`SecretsFs`]: the one `fuser::Filesystem` of the crate, a read-only view of the current tree.
//!
//! Every callback replies exactly once. Helpers return `Result<_, Errno>` and the callback turns
//! the result into the reply, so there is no path that forgets to answer or panics. No callback
//! logs a file's content; read replies are sent straight from the tree's [`SecretValue`]
//! buffer (fuser writes the slice with `writev`), so no copy of a value is made here.
//!
//! [`SecretValue`]: maestro_wire::SecretValue

use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::access::{Access, AccessObserver, CallerPolicy, CommNames, NotRecorded, REASON_UID};
use crate::tree::{Node, NodeKind, Tree};

/// How long the kernel may keep names and attributes without asking again. Publishing a
/// snapshot invalidates what changed at once; this bounds the damage if a notification is lost.
/// Opens always reach the filesystem and are checked against the current snapshot.
const TTL: Duration = Duration::from_secs(1);
/// Block size reported by `stat` and `statfs`.
const BLOCK_SIZE: u32 = 4096;

/// State shared by the filesystem thread and [`crate::Mount`].
pub(crate) struct Shared {
    tree: RwLock<Arc<Tree>>,
    policy: CallerPolicy,
    uid: u32,
    gid: u32,
    file_perm: u16,
    dir_perm: u16,
    observer: Arc<dyn AccessObserver>,
    /// Callers' command names, for the audit records.
    names: CommNames,
}

impl Shared {
    pub(crate) fn new(
        tree: Tree,
        policy: CallerPolicy,
        (uid, gid): (u32, u32),
        (file_perm, dir_perm): (u16, u16),
        observer: Arc<dyn AccessObserver>,
    ) -> Shared {
        Shared {
            tree: RwLock::new(Arc::new(tree)),
            policy,
            uid,
            gid,
            file_perm,
            dir_perm,
            observer,
            names: CommNames::new(),
        }
    }

    /// The tree callbacks see now. A poisoned lock only means a thread panicked while holding
    /// it; the `Arc` inside is always whole, so it is still good to use.
    pub(crate) fn current(&self) -> Arc<Tree> {
        self.tree.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Makes `tree` current and returns the one it replaced.
    pub(crate) fn swap(&self, tree: Tree) -> Arc<Tree> {
        let mut guard = self.tree.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *guard, Arc::new(tree))
    }
}

/// The filesystem served on the session thread.
pub(crate) struct SecretsFs {
    shared: Arc<Shared>,
}

impl SecretsFs {
    pub(crate) fn new(shared: Arc<Shared>) -> SecretsFs {
        SecretsFs { shared }
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (kind, perm, size, nlink) = match &node.kind {
            NodeKind::Dir { .. } => {
                (FileType::Directory, self.shared.dir_perm, 0, 2 + node.subdirs)
            }
            NodeKind::File { content, .. } => {
                (FileType::RegularFile, self.shared.file_perm, content.len() as u64, 1)
            }
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind,
            perm,
            nlink,
            uid: self.shared.uid,
            gid: self.shared.gid,
            rdev: 0,
            blksize: BLOCK_SIZE,
            flags: 0,
        }
    }

    fn lookup_attr(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let tree = self.shared.current();
        let parent_node = tree.get(parent).ok_or(Errno::ENOENT)?;
        if !matches!(parent_node.kind, NodeKind::Dir { .. }) {
            return Err(Errno::ENOTDIR);
        }
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let (ino, node) = tree.child(parent, name).ok_or(Errno::ENOENT)?;
        Ok(self.attr(ino, node))
    }

    /// Attributes of `ino`. Asked through an open handle (`fh`: the kernel does so before it
    /// reads cached pages past the size it knows), a file that is gone or whose content changed
    /// since the open is ESTALE, as its reads are.
    fn getattr_of(&self, ino: u64, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        let tree = self.shared.current();
        let Some(node) = tree.get(ino) else {
            return Err(if fh.is_some() { Errno::ESTALE } else { Errno::ENOENT });
        };
        if let (Some(fh), NodeKind::File { generation, .. }) = (fh, &node.kind)
            && fh.0 != *generation
        {
            return Err(Errno::ESTALE);
        }
        Ok(self.attr(ino, node))
    }

    /// Checks an open against the current snapshot and the caller, and records it. The handle
    /// is the file's content generation, which `read` compares with the current one.
    fn open_file(&self, req: &Request, ino: u64, flags: OpenFlags) -> Result<FileHandle, Errno> {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        let tree = self.shared.current();
        let node = tree.get(ino).ok_or(Errno::ENOENT)?;
        let NodeKind::File { secret, generation, .. } = &node.kind else {
            return Err(Errno::EISDIR);
        };
        let (uid, pid) = (req.uid(), req.pid());
        let allowed = self.shared.policy.allows(uid);
        let (exe, command) = self.shared.names.identify(pid);
        let recorded = self.shared.observer.record(Access {
            secret: secret.clone(),
            path: node.path.clone(),
            pid,
            uid,
            exe,
            command,
            allowed,
            reason: (!allowed).then(|| REASON_UID.to_owned()),
        });
        match (allowed, recorded) {
            (false, _) => Err(Errno::EACCES),
            // The audit fails closed: an open that cannot be recorded does not happen.
            (true, Err(NotRecorded)) => Err(Errno::EIO),
            (true, Ok(())) => Ok(FileHandle(*generation)),
        }
    }

    fn open_dir(&self, req: &Request, ino: u64) -> Result<(), Errno> {
        let tree = self.shared.current();
        match tree.get(ino).map(|n| &n.kind) {
            None => Err(Errno::ENOENT),
            Some(NodeKind::File { .. }) => Err(Errno::ENOTDIR),
            // Even where modes let others in (allowed_uids), only allowed callers list names.
            Some(NodeKind::Dir { .. }) if !self.shared.policy.allows(req.uid()) => {
                Err(Errno::EACCES)
            }
            Some(NodeKind::Dir { .. }) => Ok(()),
        }
    }

    fn fill_dir(&self, ino: u64, offset: u64, reply: &mut ReplyDirectory) -> Result<(), Errno> {
        let tree = self.shared.current();
        let node = tree.get(ino).ok_or(Errno::ENOENT)?;
        let NodeKind::Dir { children } = &node.kind else {
            return Err(Errno::ENOTDIR);
        };
        let dots = [(ino, FileType::Directory, "."), (node.parent, FileType::Directory, "..")];
        let listed = children.iter().map(|(name, &child)| {
            let kind = match tree.get(child).map(|n| &n.kind) {
                Some(NodeKind::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            (child, kind, name.as_str())
        });
        let skip = usize::try_from(offset).map_err(|_| Errno::EINVAL)?;
        for (i, (child, kind, name)) in dots.into_iter().chain(listed).enumerate().skip(skip) {
            // The offset given with an entry is where the next readdir call resumes.
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        Ok(())
    }
}

/// The bytes a read returns: `size` bytes from `offset` of file `ino`, if `generation` is still
/// the file's current content.
fn read_slice(
    tree: &Tree,
    ino: u64,
    generation: u64,
    offset: u64,
    size: u32,
) -> Result<&[u8], Errno> {
    let node = tree.get(ino).ok_or(Errno::ESTALE)?;
    let NodeKind::File { content, generation: current, .. } = &node.kind else {
        return Err(Errno::EISDIR);
    };
    if *current != generation {
        return Err(Errno::ESTALE);
    }
    let bytes = content.expose().as_bytes();
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    let end = start.saturating_add(size as usize).min(bytes.len());
    Ok(&bytes[start..end])
}

impl Filesystem for SecretsFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_attr(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr_of(ino.0, fh) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_file(req, ino.0, flags) {
            // The kernel keeps the file's pages between opens (no read round trip for a hot
            // reader; about half the cost of an open+read+close). That is kernel memory, not a
            // file: nothing reaches a disk or swap from it, and `publish` drops the pages of
            // every changed or removed file (inval_inode) before it returns, so the next read,
            // even through an older handle, comes here and meets the current snapshot (ESTALE
            // for content that is gone). Every open still comes here, so the check and the
            // record are per open. No flush: there is nothing to write back.
            Ok(fh) => reply.opened(fh, FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let tree = self.shared.current();
        match read_slice(&tree, ino.0, fh.0, offset, size) {
            Ok(data) => reply.data(data),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.open_dir(req, ino.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fill_dir(ino.0, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, BLOCK_SIZE, 255, BLOCK_SIZE);
    }

    /// Not called while `default_permissions` is set (the kernel checks modes itself); answers
    /// consistently if it ever is.
    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let exists = self.shared.current().get(ino.0).is_some();
        if !exists {
            reply.error(Errno::ENOENT);
        } else if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS);
        } else if !self.shared.policy.allows(req.uid()) {
            reply.error(Errno::EACCES);
        } else {
            reply.ok();
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 { reply.size(0) } else { reply.data(&[]) }
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        reply.error(Errno::EINVAL);
    }

    // Everything below would change the tree. The mount is read-only (MS_RDONLY), so the
    // kernel refuses these before they get here; the answers are a second line of defence.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{FileEntry, Snapshot};
    use crate::tree::{Inodes, ROOT_INO, build};
    use maestro_wire::SecretValue;

    #[test]
    fn read_slice_checks_generation_and_bounds() {
        let snap = Snapshot::new(vec![FileEntry {
            path: "A".into(),
            secret: "S".into(),
            content: SecretValue::from("hello"),
        }])
        .unwrap();
        let now = SystemTime::now();
        let tree = build(snap, &Tree::empty(now), &mut Inodes::new(), now);
        let (ino, node) = tree.child(ROOT_INO, "A").unwrap();
        let NodeKind::File { generation, .. } = node.kind else { panic!() };
        assert_eq!(read_slice(&tree, ino, generation, 0, 4096).unwrap(), b"hello");
        assert_eq!(read_slice(&tree, ino, generation, 1, 3).unwrap(), b"ell");
        assert_eq!(read_slice(&tree, ino, generation, 5, 10).unwrap(), b"");
        assert_eq!(read_slice(&tree, ino, generation, u64::MAX, 10).unwrap(), b"");
        assert_eq!(read_slice(&tree, ino, generation + 1, 0, 10), Err(Errno::ESTALE));
        assert_eq!(read_slice(&tree, ino + 1, generation, 0, 10), Err(Errno::ESTALE));
        assert_eq!(read_slice(&tree, ROOT_INO, generation, 0, 10), Err(Errno::EISDIR));
    }
}
