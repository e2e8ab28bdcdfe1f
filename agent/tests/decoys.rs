//! Decoys on a real FUSE mount, wired as `maestro-agent run` wires them (the store publishing to
//! the mount, the filesystem reporting to the usage queue): the decoy files appear only while
//! the session has decoys, the sandbox user (through setpriv) and root read real-looking values,
//! every read is a `decoy_read` report naming the reader, and a real secret's read stays a
//! `file_read`. No decoy value is in a `Debug` print of the reports.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maestro_agent::decoys::DecoySet;
use maestro_agent::state::Store;
use maestro_agent::teardown::MountSlot;
use maestro_agent::usage::{FsObserver, UsageQueue};
use maestro_fs::MountOptions;
use maestro_wire::SecretValue;
use maestro_wire::agent_api::{SecretMaterial, UsageAction};

const SANDBOX_UID: u32 = 1000;

fn fuse_available() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let dev = Path::new("/dev/fuse").exists();
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if root && dev && setpriv {
        return true;
    }
    let why = format!("decoy FUSE test skipped: root {root}, /dev/fuse {dev}, setpriv {setpriv}");
    assert!(std::env::var_os("MAESTRO_REQUIRE_FUSE").is_none(), "{why}");
    eprintln!("{why}");
    false
}

/// `cat PATH` as `uid` (root when `None`): its stdout, or `None` when it failed.
fn cat_as(uid: Option<u32>, path: &Path) -> Option<String> {
    let out = match uid {
        Some(uid) => Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg("--")
            .arg("cat")
            .arg(path)
            .output(),
        None => Command::new("cat").arg(path).output(),
    }
    .unwrap();
    out.status.success().then(|| String::from_utf8(out.stdout).unwrap())
}

fn generic(name: &str, var: &str, value: &str) -> SecretMaterial {
    SecretMaterial {
        active_until: None,
        name: name.into(),
        kind: "generic".into(),
        version: 1,
        fields: [(var.to_owned(), SecretValue::from(value))].into_iter().collect(),
        expires_at: None,
        needs_reauth: None,
        exposure: Default::default(),
        hosts: Vec::new(),
    }
}

#[test]
fn decoy_files_are_served_only_with_decoys_on_and_every_read_is_reported() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("secrets");
    std::fs::create_dir(&dir).unwrap();
    let queue = UsageQueue::new(1000);
    let options = MountOptions {
        uid: SANDBOX_UID,
        gid: SANDBOX_UID,
        allowed_uids: Vec::new(),
        fsname: "maestro-decoy-test".into(),
    };
    let mount = maestro_fs::mount(&dir, options, Arc::new(FsObserver(queue.clone()))).unwrap();
    let slot = MountSlot::new(mount);
    let store = Store::new(&dir.to_string_lossy(), Duration::from_secs(60), Box::new(slot.clone()));
    store.prepare_decoys(DecoySet::generate().unwrap());
    store
        .sync(vec![generic("API", "API_TOKEN", "planted-real-token-31f")], Instant::now())
        .unwrap();

    // Decoys off (the broker's snapshot says so): only the real secret.
    let names = |d: &Path| {
        let mut n: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&dir), ["API_TOKEN"]);

    // Decoys on: directories like any secret's, owned by the sandbox user.
    store.set_decoys(true).unwrap();
    assert_eq!(names(&dir), ["API_TOKEN", "aws-prod-admin", "deploy-token"]);
    let meta = std::fs::metadata(dir.join("deploy-token/token")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o400);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), SANDBOX_UID);

    let creds = cat_as(Some(SANDBOX_UID), &dir.join("aws-prod-admin/credentials")).unwrap();
    assert!(creds.starts_with("[default]\naws_access_key_id = AKIA"), "decoy file shape");
    let token = cat_as(None, &dir.join("deploy-token/token")).unwrap();
    assert!(token.starts_with("ghp_") && token.trim_end().len() == 40, "decoy token shape");
    let real = cat_as(Some(SANDBOX_UID), &dir.join("API_TOKEN")).unwrap();
    assert_eq!(real, "planted-real-token-31f");
    // A foreign uid is refused by the kernel (modes 0500/0400) before the filesystem sees it.
    assert!(cat_as(Some(1001), &dir.join("deploy-token/token")).is_none());

    let reports = queue.take(100);
    let decoy_reads: Vec<_> =
        reports.iter().filter(|r| r.action == UsageAction::DecoyRead).collect();
    assert_eq!(decoy_reads.len(), 2, "{reports:?}");
    let by_uid = |uid: u32| decoy_reads.iter().find(|r| r.uid == Some(uid)).unwrap();
    let sandbox = by_uid(SANDBOX_UID);
    assert_eq!(sandbox.secret.as_deref(), Some("aws-prod-admin"));
    assert_eq!(sandbox.detail.as_deref(), Some("aws-prod-admin/credentials"));
    assert_eq!(sandbox.command.as_deref(), Some("cat"));
    assert!(sandbox.pid.is_some_and(|p| p > 0));
    let root = by_uid(0);
    assert_eq!(root.secret.as_deref(), Some("deploy-token"));
    assert_eq!(root.detail.as_deref(), Some("deploy-token/token"));
    let reads: Vec<_> = reports.iter().filter(|r| r.action == UsageAction::FileRead).collect();
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].secret.as_deref(), Some("API"));
    let printed = format!("{reports:?}");
    assert!(!printed.contains(token.trim_end()) && !printed.contains("planted-real-token-31f"));

    // Decoys off again: gone.
    store.set_decoys(false).unwrap();
    assert_eq!(names(&dir), ["API_TOKEN"]);
    store.drop_all();
    drop(store);
    drop(slot);
}
