//! The enrollment bundle file that `sessions create --bundle-out PATH` writes for a sandbox.
//!
//! The file holds a one-time enrollment token, so it is created with mode 0600 from the start
//! (a temporary file in the target's directory, made with that mode, then renamed over the
//! target): it is never world-readable, not even for an instant, and an existing file at the
//! path is replaced, not rewritten in place with its old mode. The temporary file is made before
//! the session is created, so an unwritable path fails before anything changes at the broker.

use std::fs::Permissions;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use maestro_wire::agent_api::Bundle;
use tempfile::NamedTempFile;
use zeroize::Zeroizing;

/// Why the bundle cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("--bundle-out {path} is a directory; give a file path")]
    IsDirectory { path: String },
    #[error("cannot create the bundle in {dir} ({source}); choose a writable --bundle-out path")]
    Create { dir: String, source: io::Error },
    #[error("cannot encode the bundle ({0})")]
    Encode(serde_json::Error),
    #[error("cannot write the bundle {path} ({source})")]
    Write { path: String, source: io::Error },
}

/// A bundle file being prepared: the 0600 temporary file exists, the target is untouched.
pub struct PendingBundle {
    file: NamedTempFile,
    path: PathBuf,
}

/// Checks the target and makes the temporary file next to it.
pub fn prepare(path: &Path) -> Result<PendingBundle, BundleError> {
    if path.is_dir() {
        return Err(BundleError::IsDirectory { path: path.display().to_string() });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let file = tempfile::Builder::new()
        .prefix(".maestro-bundle-")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(&dir)
        .map_err(|source| BundleError::Create { dir: dir.display().to_string(), source })?;
    Ok(PendingBundle { file, path: path.to_owned() })
}

impl PendingBundle {
    /// Writes the bundle and moves it into place.
    pub fn finish(mut self, bundle: &Bundle) -> Result<(), BundleError> {
        let path = self.path.display().to_string();
        let write_err = |source| BundleError::Write { path: path.clone(), source };
        let mut buf = Zeroizing::new(Vec::with_capacity(8192));
        serde_json::to_writer_pretty(&mut *buf, bundle).map_err(BundleError::Encode)?;
        buf.push(b'\n');
        self.file.write_all(&buf).map_err(write_err)?;
        self.file.as_file().sync_all().map_err(write_err)?;
        self.file.persist(&self.path).map_err(|e| write_err(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use maestro_wire::SecretValue;

    use super::*;

    fn bundle() -> Bundle {
        Bundle {
            broker_url: "https://127.0.0.1:8443".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            session_id: "s1".into(),
            enrollment_token: SecretValue::from("enroll-planted"),
            enrollment_expires_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn writes_0600_and_replaces_a_world_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.json");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        prepare(&path).unwrap().finish(&bundle()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let back: Bundle = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back.enrollment_token.expose(), "enroll-planted");
        assert_eq!(back.session_id, "s1");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn bad_targets_fail_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(prepare(dir.path()), Err(BundleError::IsDirectory { .. })));
        let e = prepare(&dir.path().join("missing/bundle.json")).err().unwrap();
        assert!(matches!(e, BundleError::Create { .. }));
        assert!(!e.to_string().contains('\n'));
        // A prepared bundle that is dropped leaves nothing.
        drop(prepare(&dir.path().join("b.json")).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
