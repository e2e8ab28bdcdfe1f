//! From the agent's active secrets to what the egress proxy needs: for each sealed secret, its
//! hosts, the places in a request its values may go, each placeholder with its real value, and
//! for AWS the real keys to re-sign with. Built afresh on every change of the active set (the
//! store's watcher), so a deactivation reaches the proxy before `Store::remove` returns.

use maestro_wire::catalog::{self, Sealing};

use crate::proxy::{SealedSecret, SealedSet, SigV4Keys, Swap};
use crate::state::{Entry, Secrets};

/// The AWS fields (catalog `aws`).
const KEY_ID: &str = "access_key_id";
const SECRET_KEY: &str = "secret_access_key";
const SESSION_TOKEN: &str = "session_token";

fn sealed_secret(e: &Entry) -> Option<SealedSecret> {
    let kind = catalog::kind(&e.material.kind)?;
    let (seal, sigv4) = match &kind.sealing {
        Sealing::Swap(seal) => (seal, false),
        Sealing::SigV4(seal) => (seal, true),
        Sealing::Agent(_) | Sealing::Unsupported { .. } => return None,
    };
    let real = |field: &str| e.material.fields.get(field).cloned();
    let mut swaps = Vec::new();
    let mut keys = None;
    for (field, placeholder) in &e.placeholders {
        if sigv4 && field == KEY_ID {
            continue;
        }
        let real = if sigv4 && field == SECRET_KEY {
            // The secret key never travels: its placeholder is watched for leaks only, and
            // where it may go it stays what it is.
            maestro_wire::SecretValue::from(placeholder.as_str())
        } else {
            real(field)?
        };
        swaps.push(Swap { placeholder: placeholder.clone(), real });
    }
    if sigv4 {
        keys = Some(SigV4Keys {
            placeholder_key_id: e.placeholders.get(KEY_ID)?.clone(),
            key_id: real(KEY_ID)?,
            secret_key: real(SECRET_KEY)?,
            session_token: real(SESSION_TOKEN),
        });
    }
    Some(SealedSecret {
        name: e.material.name.clone(),
        hosts: e.material.hosts.clone(),
        swaps,
        sigv4: keys,
        places: seal.places.to_vec(),
    })
}

/// The sealed set of the active secrets (none while out of touch: nothing is served then).
pub fn sealed_set(secrets: &Secrets) -> SealedSet {
    if !secrets.in_touch() {
        return SealedSet::default();
    }
    SealedSet {
        secrets: secrets.entries().filter(|e| e.is_sealed()).filter_map(sealed_secret).collect(),
    }
}
