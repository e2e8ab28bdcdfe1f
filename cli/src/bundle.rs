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
    #[error("--broker-url {url:?} is not usable ({reason}); give an https:// URL of a broker")]
    BadUrl { url: String, reason: String },
    #[error("cannot encode the bundle ({0})")]
    Encode(serde_json::Error),
    #[error("cannot write the bundle {path} ({source})")]
    Write { path: String, source: io::Error },
}

/// The broker URLs a bundle records: the `--broker-url` flags in order, or else the URL this
/// command talks to. Each must be an `https://` URL with a host; duplicates are dropped.
pub fn broker_urls(flags: &[String], default: &str) -> Result<Vec<String>, BundleError> {
    if flags.is_empty() {
        return Ok(vec![default.to_owned()]);
    }
    let mut urls: Vec<String> = Vec::with_capacity(flags.len());
    for flag in flags {
        let text = flag.trim().trim_end_matches('/');
        let bad =
            |reason: &str| BundleError::BadUrl { url: flag.clone(), reason: reason.to_owned() };
        let url = reqwest::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(bad("not an https:// URL"));
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(bad("no host"));
        }
        if !urls.iter().any(|u| u == text) {
            urls.push(text.to_owned());
        }
    }
    Ok(urls)
}

/// Whether `url`'s host is a loopback name or address, which inside a sandbox with its own
/// network namespace is the sandbox itself.
pub fn is_loopback(url: &str) -> bool {
    maestro_wire::agent_api::is_loopback_url(url)
}

/// The bundle for a new session, with its broker URLs (`broker_urls` written only when there
/// is more than one, so a one-broker bundle stays readable by agents older than failover).
pub fn bundle_for(urls: Vec<String>, created: &maestro_wire::api::SessionCreated) -> Bundle {
    let first = urls.first().cloned().unwrap_or_default();
    Bundle {
        broker_url: first,
        broker_urls: if urls.len() > 1 { urls } else { Vec::new() },
        ca_pem: created.ca_pem.clone(),
        session_id: created.session.id.clone(),
        enrollment_token: created.enrollment_token.clone(),
        enrollment_expires_at: created.enrollment_expires_at.clone(),
    }
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
            broker_urls: Vec::new(),
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

    #[test]
    fn broker_urls_come_from_the_flags_in_order_or_the_default() {
        assert_eq!(broker_urls(&[], "https://d:1").unwrap(), ["https://d:1"]);
        let flags = ["https://a:1/".to_owned(), "https://b:2".to_owned(), "https://a:1".to_owned()];
        assert_eq!(broker_urls(&flags, "https://d:1").unwrap(), ["https://a:1", "https://b:2"]);
        for bad in ["http://a:1", "a:1", "https://", "nonsense"] {
            let e = broker_urls(&[bad.to_owned()], "https://d:1").unwrap_err();
            assert!(matches!(e, BundleError::BadUrl { .. }), "{bad}");
            assert!(!e.to_string().contains('\n'));
        }
    }
}
