//! Finding, checking and rotating the master key.
//!
//! The key comes from `MAESTRO_MASTER_KEY` (base64) when set, else from `<data-dir>/master.key`,
//! which is made at first start. A sealed check value in the database proves that the key is
//! the one the data was sealed with, so a wrong key stops start-up instead of failing later, one
//! secret at a time. A missing key file never gets silently replaced once the database holds
//! sealed data.
//!
//! Rotation is crash-safe: the new key is written to `master.key.new` first, every data key is
//! re-wrapped and the check value replaced in one transaction, and only then is the file
//! renamed over `master.key`. At start, if `master.key` fails the check but `master.key.new`
//! passes it, the rotation committed and the rename is finished; if `master.key` passes and a
//! `master.key.new` is lying around, the rotation never committed and the file is removed.

use std::path::Path;

use tracing::{info, warn};

use crate::datadir::{self, DataDir, DataDirError};
use crate::oauth::store::OAuthStore;
use crate::seal::{KeyBinding, MasterKey, SealError};
use crate::store::alerts::AlertStore;
use crate::store::{Store, StoreError};

/// The meta key of the master key check value.
pub const CHECK_META_KEY: &str = "master_key_check";
/// The environment variable that holds the master key instead of the key file.
pub const ENV_MASTER_KEY: &str = "MAESTRO_MASTER_KEY";
/// With [`ENV_MASTER_KEY`], `rotate-master-key` takes the new key from this variable.
pub const ENV_NEW_MASTER_KEY: &str = "MAESTRO_NEW_MASTER_KEY";
const MAX_KEY_FILE: u64 = 1024;

/// Why the master key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "master key does not open the data keys in {db}: wrong key? restore {file} or set {ENV_MASTER_KEY}"
    )]
    Wrong { db: String, file: String },
    #[error(
        "{file} is missing but {db} holds data sealed with it: restore {file} from a backup or set {ENV_MASTER_KEY}"
    )]
    Missing { db: String, file: String },
    #[error(
        "{ENV_MASTER_KEY} is set, so the new key must come from {ENV_NEW_MASTER_KEY} (32 random bytes, base64); nothing was changed"
    )]
    NewKeyNeeded,
    #[error(
        "the data key of secret {secret_id} does not open under the current master key ({source}); nothing was changed"
    )]
    Unwrap { secret_id: String, source: SealError },
    #[error("{0}")]
    Seal(#[from] SealError),
    #[error(transparent)]
    Files(#[from] DataDirError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn wrong(dir: &DataDir) -> KeyError {
    KeyError::Wrong { db: dir.database_label(), file: dir.master_key().display().to_string() }
}

fn read_key_file(path: &Path) -> Result<Option<MasterKey>, KeyError> {
    match datadir::read_small(path, MAX_KEY_FILE)? {
        None => Ok(None),
        Some(bytes) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            let text = std::str::from_utf8(&bytes).map_err(|_| SealError::BadMasterKey {
                source_name: path.display().to_string(),
                problem: "not text",
            })?;
            Ok(Some(MasterKey::from_base64(text, &path.display().to_string())?))
        }
    }
}

/// The master key for this data directory, checked against the database; see the module docs.
pub async fn open_master_key(dir: &DataDir, store: &dyn Store) -> Result<MasterKey, KeyError> {
    let check = store.meta_get(CHECK_META_KEY).await?;
    if let Ok(text) = std::env::var(ENV_MASTER_KEY) {
        let key = MasterKey::from_base64(&text, ENV_MASTER_KEY)?;
        return match check {
            None => {
                store.meta_put(CHECK_META_KEY, &key.check_value()?).await?;
                Ok(key)
            }
            Some(c) if key.opens_check(&c) => Ok(key),
            Some(_) => Err(wrong(dir)),
        };
    }
    let current = read_key_file(&dir.master_key())?;
    let Some(check) = check else {
        // A fresh database: use the key file, or make one.
        let key = match current {
            Some(key) => key,
            None => {
                let key = MasterKey::generate()?;
                datadir::write_private(&dir.master_key(), key.to_base64().as_bytes())?;
                info!(path = %dir.master_key().display(), "made a new master key");
                key
            }
        };
        store.meta_put(CHECK_META_KEY, &key.check_value()?).await?;
        return Ok(key);
    };
    let pending = read_key_file(&dir.master_key_new())?;
    match current {
        Some(key) if key.opens_check(&check) => {
            if pending.is_some() {
                warn!(
                    path = %dir.master_key_new().display(),
                    "removing a new master key left by a rotation that did not commit"
                );
                std::fs::remove_file(dir.master_key_new())
                    .map_err(|source| DataDirError::Write { path: dir.master_key_new(), source })?;
            }
            Ok(key)
        }
        current => {
            if let Some(next) = pending.filter(|k| k.opens_check(&check)) {
                datadir::rename_synced(&dir.master_key_new(), &dir.master_key())?;
                info!(
                    "finished an interrupted master key rotation: master.key.new is now master.key"
                );
                return Ok(next);
            }
            if current.is_none() {
                Err(KeyError::Missing {
                    db: dir.database_label(),
                    file: dir.master_key().display().to_string(),
                })
            } else {
                Err(wrong(dir))
            }
        }
    }
}

/// Re-wraps every data key (secrets', OAuth providers' and tokens' from `oauth`, webhook
/// signing secrets' from `alerts`) under a
/// new master key in one transaction; returns how many. The caller holds the data directory's
/// lock (no broker is running on it).
pub async fn rotate(
    dir: &DataDir,
    store: &dyn Store,
    oauth: &dyn OAuthStore,
    alerts: &dyn AlertStore,
) -> Result<usize, KeyError> {
    let current = open_master_key(dir, store).await?;
    let from_env = std::env::var(ENV_MASTER_KEY).is_ok();
    let next = if from_env {
        let text = std::env::var(ENV_NEW_MASTER_KEY).map_err(|_| KeyError::NewKeyNeeded)?;
        MasterKey::from_base64(&text, ENV_NEW_MASTER_KEY)?
    } else {
        let next = MasterKey::generate()?;
        datadir::write_private(&dir.master_key_new(), next.to_base64().as_bytes())?;
        next
    };
    let result = rewrap(&current, &next, store, oauth, alerts).await;
    match result {
        Ok(count) => {
            if !from_env {
                datadir::rename_synced(&dir.master_key_new(), &dir.master_key())?;
            }
            Ok(count)
        }
        Err(e) => {
            if !from_env {
                // Not committed: the old key stays the key.
                let _ = std::fs::remove_file(dir.master_key_new());
            }
            Err(e)
        }
    }
}

async fn rewrap(
    current: &MasterKey,
    next: &MasterKey,
    store: &dyn Store,
    oauth: &dyn OAuthStore,
    alerts: &dyn AlertStore,
) -> Result<usize, KeyError> {
    let mut rows = store.data_keys().await?;
    rows.extend(oauth.oauth_data_keys().await?);
    rows.extend(alerts.alert_data_keys().await?);
    let mut rewrapped = Vec::with_capacity(rows.len());
    for row in &rows {
        let binding = KeyBinding {
            key_id: &row.id,
            owner_id: row.owner_id,
            secret_id: &row.secret_id,
            version: row.version,
        };
        let key = current
            .unwrap_key(&row.wrapped, &binding)
            .map_err(|source| KeyError::Unwrap { secret_id: row.secret_id.clone(), source })?;
        rewrapped.push((row.id.clone(), next.wrap(&key, &binding)?));
    }
    store.rewrap_data_keys(&rewrapped, CHECK_META_KEY, &next.check_value()?).await?;
    Ok(rewrapped.len())
}
