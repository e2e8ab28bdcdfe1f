//! Real FUSE mounts in temporary directories: listing, reading, modes, read-only refusals,
//! snapshot swaps, other uids, the audit observer, and unmounting.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failure")]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use common::{OWNER, OWNER_GID, TestMount, fuse_available, mounts_at, secret_of};

/// Runs `cat path` as `uid` (groups cleared by std when dropping from root).
fn cat_as(uid: u32, path: &std::path::Path) -> (Output, u32) {
    let child = Command::new("cat")
        .arg(path)
        .uid(uid)
        .gid(uid)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn lists_and_reads_files_and_nested_files() {
    if !fuse_available() {
        return;
    }
    let t = TestMount::new(vec![]);
    assert!(names(&t.dir).is_empty(), "a new mount is empty");
    t.publish(&[
        ("AWS_REGION", "eu-west-1"),
        ("aws/credentials", "[default]\naws_access_key_id = AKIA\n"),
        ("gcp/keys/sa.json", "{\"type\":\"service_account\"}"),
    ]);
    assert_eq!(names(&t.dir), ["AWS_REGION", "aws", "gcp"]);
    assert_eq!(names(&t.path("gcp")), ["keys"]);
    assert_eq!(fs::read_to_string(t.path("AWS_REGION")).unwrap(), "eu-west-1");
    assert_eq!(
        fs::read_to_string(t.path("aws/credentials")).unwrap(),
        "[default]\naws_access_key_id = AKIA\n"
    );
    assert_eq!(
        fs::read_to_string(t.path("gcp/keys/sa.json")).unwrap(),
        "{\"type\":\"service_account\"}"
    );
    // Partial reads at an offset.
    let mut f = File::open(t.path("AWS_REGION")).unwrap();
    f.seek(SeekFrom::Start(3)).unwrap();
    let mut buf = [0u8; 4];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"west");
    assert_eq!(fs::metadata(t.path("nope")).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(fs::metadata(t.path("aws/nope")).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn modes_owners_and_mount_options() {
    if !fuse_available() {
        return;
    }
    let t = TestMount::new(vec![]);
    t.publish(&[("TOKEN", "abc"), ("dir/inner", "xyz")]);
    for (path, mode, size) in
        [("", 0o040500, None), ("dir", 0o040500, None), ("TOKEN", 0o100400, Some(3))]
    {
        let m = fs::metadata(t.path(path)).unwrap();
        assert_eq!(m.mode(), mode, "mode of {path:?}");
        assert_eq!((m.uid(), m.gid()), (OWNER, OWNER_GID), "owner of {path:?}");
        if let Some(size) = size {
            assert_eq!(m.len(), size);
        }
    }
    assert_eq!(fs::metadata(t.path("")).unwrap().ino(), 1, "root is inode 1");
    let ino = fs::metadata(t.path("TOKEN")).unwrap().ino();
    t.publish(&[("TOKEN", "changed"), ("OTHER", "1")]);
    t.publish(&[("TOKEN", "again")]);
    assert_eq!(fs::metadata(t.path("TOKEN")).unwrap().ino(), ino, "inode stable per path");

    let lines = mounts_at(&t.dir);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(fields[0], "maestro-test");
    assert_eq!(fields[2], "fuse");
    let opts: Vec<&str> = fields[3].split(',').collect();
    for want in ["ro", "nosuid", "nodev", "noexec", "default_permissions", "allow_other"] {
        assert!(opts.contains(&want), "{want} missing from {opts:?}");
    }

    // Extra allowed uids need the kernel to let them through: modes widen, the filesystem
    // checks the uid itself.
    let wide = TestMount::new(vec![2345]);
    wide.publish(&[("TOKEN", "abc"), ("dir/inner", "xyz")]);
    assert_eq!(fs::metadata(wide.path("TOKEN")).unwrap().mode(), 0o100444);
    assert_eq!(fs::metadata(wide.path("dir")).unwrap().mode(), 0o040555);
}

#[test]
fn every_change_is_refused() {
    if !fuse_available() {
        return;
    }
    let t = TestMount::new(vec![]);
    t.publish(&[("TOKEN", "abc"), ("dir/inner", "xyz")]);
    let token = t.path("TOKEN");
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs(OpenOptions::new().write(true).open(&token).map(drop), "open for write");
    erofs(OpenOptions::new().read(true).write(true).open(&token).map(drop), "open rw");
    erofs(OpenOptions::new().append(true).open(&token).map(drop), "open append");
    erofs(File::create(t.path("NEW")).map(drop), "create");
    erofs(File::create(&token).map(drop), "create over");
    erofs(fs::write(t.path("dir/NEW"), b"x"), "write new nested");
    erofs(fs::create_dir(t.path("newdir")), "mkdir");
    erofs(fs::remove_file(&token), "unlink");
    erofs(fs::remove_dir(t.path("dir")), "rmdir");
    erofs(fs::rename(&token, t.path("MOVED")), "rename");
    erofs(fs::hard_link(&token, t.path("LINK")), "link");
    erofs(std::os::unix::fs::symlink("TOKEN", t.path("SYM")), "symlink");
    erofs(fs::set_permissions(&token, fs::Permissions::from_mode(0o444)), "chmod");
    erofs(std::os::unix::fs::chown(&token, Some(0), Some(0)), "chown");
    erofs(nix::unistd::truncate(&token, 0).map_err(std::io::Error::from), "truncate");
    let f = File::open(&token).unwrap();
    // ftruncate on a read-only descriptor is EINVAL from the kernel, before any filesystem.
    assert_eq!(f.set_len(0).unwrap_err().raw_os_error(), Some(libc::EINVAL));
    erofs(f.set_modified(std::time::SystemTime::now()), "utimes");
    // Nothing changed.
    assert_eq!(fs::read_to_string(&token).unwrap(), "abc");
    assert_eq!(names(&t.dir), ["TOKEN", "dir"]);
}

#[test]
fn publish_swaps_at_once() {
    if !fuse_available() {
        return;
    }
    let t = TestMount::new(vec![]);
    t.publish(&[("KEEP", "same"), ("GONE", "bye"), ("CHANGE", "v1"), ("d/GONE", "x")]);
    // Let the kernel cache names and attributes, as a real reader would have.
    for p in ["KEEP", "GONE", "CHANGE", "d/GONE"] {
        fs::read(t.path(p)).unwrap();
        fs::metadata(t.path(p)).unwrap();
    }
    let mut keep = File::open(t.path("KEEP")).unwrap();
    let mut gone = File::open(t.path("GONE")).unwrap();
    let mut change = File::open(t.path("CHANGE")).unwrap();
    // A name looked up while absent must not stay absent in a cache.
    assert_eq!(fs::metadata(t.path("ADDED")).unwrap_err().kind(), ErrorKind::NotFound);

    t.publish(&[("KEEP", "same"), ("CHANGE", "version-2"), ("ADDED", "new")]);
    // Right after publish: no cached name, size or data survives.
    assert_eq!(fs::metadata(t.path("GONE")).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(fs::metadata(t.path("d")).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(File::open(t.path("GONE")).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(fs::metadata(t.path("CHANGE")).unwrap().len(), 9);
    assert_eq!(fs::read_to_string(t.path("CHANGE")).unwrap(), "version-2");
    assert_eq!(fs::read_to_string(t.path("ADDED")).unwrap(), "new");
    assert_eq!(names(&t.dir), ["ADDED", "CHANGE", "KEEP"]);

    // Handles opened before the swap: unchanged content still reads, a removed file cannot,
    // and a changed file never gives its old content: ESTALE, or (the page cache holds the
    // current content once a newer open read it, as CHANGE's did above) the current content.
    let mut s = String::new();
    keep.read_to_string(&mut s).unwrap();
    assert_eq!(s, "same");
    let e = gone.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}");
    let mut buf = [0u8; 16];
    match change.read(&mut buf) {
        Ok(n) => assert_eq!(&buf[..n], b"version-2"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
    }
    // A handle whose file changed again while nobody read the new content: ESTALE.
    let mut stale = File::open(t.path("CHANGE")).unwrap();
    t.publish(&[("KEEP", "same"), ("CHANGE", "version-3"), ("ADDED", "new")]);
    let e = stale.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}");
    assert_eq!(fs::read_to_string(t.path("CHANGE")).unwrap(), "version-3");

    // Many swaps in a row: each open right after publish sees exactly the new state.
    for i in 0..200 {
        let value = format!("value-{i}");
        if i % 3 == 0 {
            t.publish(&[("KEEP", "same")]);
            assert_eq!(File::open(t.path("CHANGE")).unwrap_err().kind(), ErrorKind::NotFound);
        } else {
            t.publish(&[("KEEP", "same"), ("CHANGE", &value)]);
            assert_eq!(fs::read_to_string(t.path("CHANGE")).unwrap(), value);
            assert_eq!(fs::metadata(t.path("CHANGE")).unwrap().len(), value.len() as u64);
        }
    }

    t.mount().clear();
    assert!(names(&t.dir).is_empty());
    assert_eq!(fs::metadata(t.path("KEEP")).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn other_uid_is_refused_and_owner_is_recorded() {
    if !fuse_available() {
        return;
    }
    let t = TestMount::new(vec![]);
    t.publish(&[("TOKEN", "owner-can-read")]);
    let token = t.path("TOKEN");

    let (out, pid) = cat_as(OWNER, &token);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"owner-can-read");

    // The kernel refuses uid 1234 (mode 0400, directory 0500) before the filesystem sees it.
    let (out, _) = cat_as(1234, &token);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));

    let owner_reads: Vec<_> = t.recorder.all().into_iter().filter(|a| a.pid == pid).collect();
    assert_eq!(owner_reads.len(), 1, "{owner_reads:?}");
    let a = &owner_reads[0];
    assert_eq!((a.uid, a.allowed, a.reason.as_deref()), (OWNER, true, None));
    assert_eq!((a.secret.as_str(), a.path.as_str()), ("TOKEN", "TOKEN"));
    assert_eq!(a.command.as_deref(), Some("cat"));
}

#[test]
fn denial_by_the_filesystem_is_recorded() {
    if !fuse_available() {
        return;
    }
    // With an extra allowed uid the modes are wide, so the filesystem itself decides.
    let t = TestMount::new(vec![2345]);
    t.publish(&[("nested/TOKEN", "for-2345")]);
    let token = t.path("nested/TOKEN");

    let (out, denied_pid) = cat_as(1234, &token);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    assert!(out.stdout.is_empty());
    let (out, allowed_pid) = cat_as(2345, &token);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"for-2345");
    // Listing is refused to others as well.
    let ls = Command::new("ls").arg(&t.dir).uid(1234).gid(1234).output().unwrap();
    assert!(!ls.status.success());

    let all = t.recorder.all();
    let denied = all.iter().find(|a| a.pid == denied_pid).expect("denial recorded");
    assert_eq!((denied.uid, denied.allowed), (1234, false));
    assert_eq!(denied.path, "nested/TOKEN");
    assert_eq!(denied.secret, secret_of("nested/TOKEN"));
    assert_eq!(denied.command.as_deref(), Some("cat"));
    assert!(denied.reason.as_deref().unwrap().contains("not allowed"));
    let allowed = all.iter().find(|a| a.pid == allowed_pid).expect("allowed open recorded");
    assert_eq!((allowed.uid, allowed.allowed), (2345, true));
    // The executable comes from the kernel, for other uids' processes too.
    for access in [denied, allowed] {
        assert!(access.exe.as_deref().is_some_and(|e| e.ends_with("/cat")), "{access:?}");
    }
}

#[test]
fn an_open_that_cannot_be_recorded_fails_and_nothing_is_read() {
    if !fuse_available() {
        return;
    }
    let t = TestMount::new(vec![]);
    t.publish(&[("A", "unrecorded-value")]);
    t.recorder.set_refusing(true);
    let err = fs::read(t.path("A")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    t.recorder.set_refusing(false);
    assert_eq!(fs::read(t.path("A")).unwrap(), b"unrecorded-value");
    assert_eq!(t.recorder.all().len(), 1);
}

#[test]
fn observer_gets_pid_uid_and_command_of_each_open() {
    if !fuse_available() {
        return;
    }
    let t = TestMount::new(vec![]);
    t.publish(&[("A", "1"), ("aws/credentials", "2")]);
    let (out, pid_a) = cat_as(0, &t.path("A"));
    assert!(out.status.success());
    let child = Command::new("head").arg("-c1").arg(t.path("aws/credentials")).output().unwrap();
    assert!(child.status.success());
    // A stat or a listing is not an open of a file.
    fs::metadata(t.path("A")).unwrap();
    names(&t.dir);

    let all = t.recorder.all();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].pid, pid_a);
    assert_eq!((all[0].uid, all[0].command.as_deref(), all[0].allowed), (0, Some("cat"), true));
    assert_eq!((all[1].path.as_str(), all[1].secret.as_str()), ("aws/credentials", "AWS"));
    assert_eq!(all[1].command.as_deref(), Some("head"));
}

#[test]
fn unmount_leaves_nothing_mounted() {
    if !fuse_available() {
        return;
    }
    // Explicit unmount.
    let mut t = TestMount::new(vec![]);
    t.publish(&[("A", "1")]);
    assert_eq!(mounts_at(&t.dir).len(), 1);
    t.mount.take().unwrap().unmount().unwrap();
    assert!(mounts_at(&t.dir).is_empty());
    assert!(names(&t.dir).is_empty(), "the plain directory is back");

    // Drop without unmount.
    let mut t = TestMount::new(vec![]);
    t.publish(&[("A", "1")]);
    drop(t.mount.take());
    assert!(mounts_at(&t.dir).is_empty());

    // Busy: a reader still holds a file open. The mount goes at once and the reader cannot
    // read any more.
    let mut t = TestMount::new(vec![]);
    t.publish(&[("A", "held-open")]);
    let mut held = File::open(t.path("A")).unwrap();
    t.mount.take().unwrap().unmount().unwrap();
    assert!(mounts_at(&t.dir).is_empty());
    assert!(held.read(&mut [0u8; 16]).is_err());
    drop(held);

    // Mounting again at the same path works.
    let t2_dir = t.dir.clone();
    let again = maestro_fs::mount(
        &t2_dir,
        maestro_fs::MountOptions {
            uid: OWNER,
            gid: OWNER_GID,
            allowed_uids: vec![],
            fsname: "maestro-test".into(),
        },
        t.recorder.clone(),
    )
    .unwrap();
    assert_eq!(mounts_at(&t2_dir).len(), 1);
    again.unmount().unwrap();
    assert!(mounts_at(&t2_dir).is_empty());
}

#[test]
fn bad_mount_arguments_are_clear_errors() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let observer = std::sync::Arc::new(common::Recorder::default());
    let opts = |fsname: &str| maestro_fs::MountOptions {
        uid: OWNER,
        gid: OWNER_GID,
        allowed_uids: vec![],
        fsname: fsname.into(),
    };
    let e = maestro_fs::mount(&tmp.path().join("missing"), opts("ok"), observer.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing") && e.contains("create the directory"), "{e}");
    let file = tmp.path().join("file");
    fs::write(&file, b"").unwrap();
    let e = maestro_fs::mount(&file, opts("ok"), observer.clone()).unwrap_err().to_string();
    assert!(e.contains("not a directory"), "{e}");
    let e = maestro_fs::mount(tmp.path(), opts("bad name,rw"), observer).unwrap_err().to_string();
    assert!(e.contains("invalid filesystem name"), "{e}");
    assert!(mounts_at(tmp.path()).is_empty());
}

#[test]
fn mount_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<maestro_fs::Mount>();
}
