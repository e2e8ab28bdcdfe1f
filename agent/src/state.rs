//! The active secrets: each one's material (field values), its rendered variables and files,
//! and whether the agent may serve them at all (the lease).
//!
//! Values only ever sit in [`SecretValue`]s, which zeroize when dropped; replacing or removing a
//! secret drops the old values. Every change is published to the filesystem while the lock is
//! held, so the socket and the mount never disagree, and a change that the filesystem refuses
//! leaves everything as it was.
//!
//! The lease fails closed: when the broker has not been heard from for longer than the lease,
//! every secret is dropped (empty filesystem, `unavailable` on the socket) until a new snapshot
//! from the broker brings them back.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use maestro_fs::{FileEntry, FsError, Snapshot};
use maestro_wire::agent_api::SecretMaterial;
use maestro_wire::catalog::{self, Rendered};
use maestro_wire::names::is_valid_secret_name;
use maestro_wire::sock::{EnvVar, ListedSecret, MaterialEntry};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("secret {name} is of kind {kind:?}, which this agent does not know; upgrade the agent")]
    UnknownKind { name: String, kind: String },
    #[error("the broker sent a secret with an invalid name {0:?}; upgrade the agent or the broker")]
    InvalidName(String),
    #[error("the secrets' files cannot be shown: {0}")]
    Files(#[source] FsError),
    #[error("secret {0} is not active in this session; activate it or drop it from --only")]
    NotActive(String),
    #[error(
        "secrets are unavailable: the agent is out of touch with the broker; they come back when \
         it reconnects"
    )]
    Unavailable,
}

/// One active secret.
#[derive(Debug)]
pub struct Entry {
    pub material: SecretMaterial,
    pub rendered: Rendered,
}

/// `Rendered` is not `Clone`; this copies it value by value.
fn clone_rendered(r: &Rendered) -> Rendered {
    Rendered { variables: r.variables.clone(), files: r.files.clone() }
}

/// Renders a secret's variables and files for the mount at `mount`.
pub fn render(material: SecretMaterial, mount: &str) -> Result<Entry, StateError> {
    if !is_valid_secret_name(&material.name) {
        return Err(StateError::InvalidName(material.name.chars().take(80).collect()));
    }
    let kind = catalog::kind(&material.kind).ok_or_else(|| StateError::UnknownKind {
        name: material.name.clone(),
        kind: material.kind.chars().take(80).collect(),
    })?;
    let rendered = catalog::render(kind, &material.fields, mount);
    Ok(Entry { material, rendered })
}

/// The set of active secrets, and whether they may be served.
#[derive(Debug, Default)]
pub struct Secrets {
    mount: String,
    active: BTreeMap<String, Entry>,
    in_touch: bool,
}

impl Clone for Secrets {
    fn clone(&self) -> Self {
        let active = self
            .active
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    Entry { material: e.material.clone(), rendered: clone_rendered(&e.rendered) },
                )
            })
            .collect();
        Secrets { mount: self.mount.clone(), active, in_touch: self.in_touch }
    }
}

impl Secrets {
    pub fn new(mount: &str) -> Self {
        Secrets { mount: mount.to_owned(), active: BTreeMap::new(), in_touch: false }
    }

    /// Whether secrets may be served now.
    pub fn in_touch(&self) -> bool {
        self.in_touch
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.active.keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.active.get(name)
    }

    /// Replaces the whole set (a snapshot from the broker) and marks the agent in touch. A
    /// secret that cannot be rendered is left out and reported; the others are served.
    pub fn replace_all(&mut self, materials: Vec<SecretMaterial>) -> Vec<StateError> {
        let mut skipped = Vec::new();
        let mut active = BTreeMap::new();
        for m in materials {
            match render(m, &self.mount) {
                Ok(e) => {
                    active.insert(e.material.name.clone(), e);
                }
                Err(e) => skipped.push(e),
            }
        }
        self.active = active;
        self.in_touch = true;
        skipped
    }

    /// Adds or replaces one secret.
    pub fn upsert(&mut self, material: SecretMaterial) -> Result<(), StateError> {
        let e = render(material, &self.mount)?;
        self.active.insert(e.material.name.clone(), e);
        Ok(())
    }

    /// Removes one secret; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        self.active.remove(name).is_some()
    }

    /// Drops every secret and stops serving until the next [`Secrets::replace_all`].
    pub fn drop_all(&mut self) {
        self.active.clear();
        self.in_touch = false;
    }

    /// The files to show under the mount: nothing while out of touch.
    pub fn snapshot(&self) -> Result<Snapshot, StateError> {
        if !self.in_touch {
            return Ok(Snapshot::empty());
        }
        let files: Vec<FileEntry> = self
            .active
            .values()
            .flat_map(|e| {
                e.rendered.files.iter().map(|(path, content)| FileEntry {
                    path: path.clone(),
                    secret: e.material.name.clone(),
                    content: content.clone(),
                })
            })
            .collect();
        Snapshot::new(files).map_err(StateError::Files)
    }

    fn serving(&self) -> Result<(), StateError> {
        if self.in_touch { Ok(()) } else { Err(StateError::Unavailable) }
    }

    /// The selected secrets: all when `only` is empty; every name in `only` must be active.
    fn select(&self, only: &[String]) -> Result<Vec<&Entry>, StateError> {
        self.serving()?;
        if only.is_empty() {
            return Ok(self.active.values().collect());
        }
        let mut out: Vec<&Entry> = Vec::with_capacity(only.len());
        for name in only {
            let e = self.active.get(name).ok_or_else(|| {
                StateError::NotActive(name.chars().filter(|c| !c.is_control()).take(80).collect())
            })?;
            if !out.iter().any(|o| o.material.name == e.material.name) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The variables of the selected secrets, and their names (for the audit record).
    pub fn env(&self, only: &[String]) -> Result<(Vec<EnvVar>, Vec<String>), StateError> {
        let selected = self.select(only)?;
        let vars = selected
            .iter()
            .flat_map(|e| {
                e.rendered
                    .variables
                    .iter()
                    .map(|(name, value)| EnvVar { name: name.clone(), value: value.clone() })
            })
            .collect();
        Ok((vars, selected.iter().map(|e| e.material.name.clone()).collect()))
    }

    /// Names, kinds, variables and files of the active secrets; never values.
    pub fn list(&self) -> Result<Vec<ListedSecret>, StateError> {
        let selected = self.select(&[])?;
        Ok(selected
            .iter()
            .map(|e| ListedSecret {
                name: e.material.name.clone(),
                kind: e.material.kind.clone(),
                version: e.material.version,
                variables: e.rendered.variables.iter().map(|(n, _)| n.clone()).collect(),
                files: e
                    .rendered
                    .files
                    .iter()
                    .map(|(p, _)| format!("{}/{p}", self.mount))
                    .collect(),
                needs_reauth: e.material.needs_reauth.clone(),
            })
            .collect())
    }

    /// Field values of the selected secrets of the given kinds (all kinds when empty).
    pub fn material(
        &self,
        kinds: &[String],
        only: &[String],
    ) -> Result<Vec<MaterialEntry>, StateError> {
        let selected = self.select(only)?;
        Ok(selected
            .iter()
            .filter(|e| kinds.is_empty() || kinds.contains(&e.material.kind))
            .map(|e| MaterialEntry {
                name: e.material.name.clone(),
                kind: e.material.kind.clone(),
                fields: e.material.fields.clone(),
                expires_at: e.material.expires_at.clone(),
            })
            .collect())
    }
}

/// How long the agent may serve secrets since it last heard from the broker.
#[derive(Debug, Clone)]
pub struct Lease {
    length: Duration,
    last_contact: Option<Instant>,
}

impl Lease {
    pub fn new(length: Duration) -> Self {
        Lease { length, last_contact: None }
    }

    pub fn length(&self) -> Duration {
        self.length
    }

    pub fn set_length(&mut self, length: Duration) {
        self.length = length;
    }

    /// The broker was heard from at `now`.
    pub fn touch(&mut self, now: Instant) {
        self.last_contact = Some(now);
    }

    /// When the lease runs out; `None` before the first contact.
    pub fn deadline(&self) -> Option<Instant> {
        self.last_contact.map(|t| t + self.length)
    }

    /// Whether the lease has run out at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }
}

/// Where a snapshot goes: the FUSE mount, or a recorder in tests. Publishing cannot fail: the
/// snapshot was validated when it was built.
pub trait Publish: Send + Sync {
    fn publish(&self, snapshot: Snapshot);
}

struct Inner {
    secrets: Secrets,
    lease: Lease,
}

/// The secrets, the lease and the filesystem they are published to, behind one lock.
pub struct Store {
    inner: Mutex<Inner>,
    fs: Box<dyn Publish>,
}

impl Store {
    pub fn new(mount: &str, lease: Duration, fs: Box<dyn Publish>) -> Self {
        Store {
            inner: Mutex::new(Inner { secrets: Secrets::new(mount), lease: Lease::new(lease) }),
            fs,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held leaves data that is still consistent (every change is
        // built on a copy and swapped in), so a poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` to a copy of the secrets, publishes the result, and only then keeps it.
    fn change<R>(
        &self,
        change: impl FnOnce(&mut Secrets) -> Result<R, StateError>,
    ) -> Result<R, StateError> {
        let mut inner = self.lock();
        let mut next = inner.secrets.clone();
        let out = change(&mut next)?;
        let snapshot = next.snapshot()?;
        self.fs.publish(snapshot);
        inner.secrets = next;
        Ok(out)
    }

    /// A snapshot from the broker at `now`: the whole set, and in touch again. Returns the
    /// secrets that could not be rendered (left out).
    pub fn sync(
        &self,
        materials: Vec<SecretMaterial>,
        now: Instant,
    ) -> Result<Vec<StateError>, StateError> {
        let skipped = self.change(|s| Ok(s.replace_all(materials)))?;
        self.lock().lease.touch(now);
        Ok(skipped)
    }

    /// Adds or replaces one secret (activation, update). Ignored while out of touch: the next
    /// snapshot brings the whole set.
    pub fn upsert(&self, material: SecretMaterial) -> Result<(), StateError> {
        self.change(|s| if s.in_touch() { s.upsert(material) } else { Ok(()) })
    }

    /// Removes one secret (deactivation); whether it was active.
    pub fn remove(&self, name: &str) -> Result<bool, StateError> {
        self.change(|s| Ok(s.remove(name)))
    }

    /// The broker was heard from.
    pub fn touch(&self, now: Instant) {
        self.lock().lease.touch(now);
    }

    /// Sets the lease length (the shorter of `--lease` and the broker's hint).
    pub fn set_lease(&self, length: Duration) {
        self.lock().lease.set_length(length);
    }

    pub fn lease(&self) -> Lease {
        self.lock().lease.clone()
    }

    /// Drops every secret if the lease has run out at `now`; whether it did so now.
    pub fn check_lease(&self, now: Instant) -> bool {
        let expired = {
            let inner = self.lock();
            inner.secrets.in_touch() && inner.lease.expired(now)
        };
        if expired {
            self.drop_all();
        }
        expired
    }

    /// Drops every secret (zeroizing the values): empty filesystem, `unavailable` on the socket.
    pub fn drop_all(&self) {
        let mut inner = self.lock();
        inner.secrets.drop_all();
        self.fs.publish(Snapshot::empty());
    }

    /// Reads the secrets (for the socket's answers).
    pub fn read<R>(&self, f: impl FnOnce(&Secrets) -> R) -> R {
        f(&self.lock().secrets)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use maestro_wire::SecretValue;

    use super::*;

    pub(crate) fn material(name: &str, kind: &str, fields: &[(&str, &str)]) -> SecretMaterial {
        SecretMaterial {
            name: name.into(),
            kind: kind.into(),
            version: 1,
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), SecretValue::from(*v)))
                .collect::<BTreeMap<_, _>>(),
            expires_at: None,
            exposure: Default::default(),
            hosts: Vec::new(),
            needs_reauth: None,
        }
    }

    /// Records the paths and contents of every snapshot published.
    #[derive(Default)]
    struct Recorder {
        published: Mutex<Vec<Vec<(String, String)>>>,
    }

    impl Publish for Arc<Recorder> {
        fn publish(&self, snapshot: Snapshot) {
            let files = snapshot
                .entries()
                .iter()
                .map(|e| (e.path.clone(), e.content.expose().to_owned()))
                .collect();
            self.published.lock().unwrap().push(files);
        }
    }

    impl Recorder {
        fn last(&self) -> Vec<(String, String)> {
            self.published.lock().unwrap().last().cloned().unwrap_or_default()
        }
        fn paths(&self) -> Vec<String> {
            self.last().into_iter().map(|(p, _)| p).collect()
        }
    }

    fn store(lease: Duration) -> (Store, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        (Store::new("/m", lease, Box::new(rec.clone())), rec)
    }

    #[test]
    fn sync_upsert_remove_reach_files_and_env() {
        let (store, rec) = store(Duration::from_secs(60));
        let t0 = Instant::now();
        store.read(|s| assert!(matches!(s.env(&[]), Err(StateError::Unavailable))));
        let skipped = store
            .sync(
                vec![
                    material("API", "generic", &[("API_TOKEN", "tok-1")]),
                    material(
                        "AWS_DEV",
                        "aws",
                        &[("access_key_id", "AKIA1"), ("secret_access_key", "s")],
                    ),
                    material("ODD", "nosuchkind", &[("x", "y")]),
                ],
                t0,
            )
            .unwrap();
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].to_string().contains("kind \"nosuchkind\""));
        let paths = rec.paths();
        assert!(paths.contains(&"API_TOKEN".to_owned()));
        assert!(paths.contains(&"AWS_ACCESS_KEY_ID".to_owned()));
        assert!(paths.contains(&"aws/credentials".to_owned()));
        let (vars, used) = store.read(|s| s.env(&["API".to_owned()])).unwrap();
        assert_eq!(used, ["API"]);
        assert_eq!(vars.len(), 1);
        assert_eq!((vars[0].name.as_str(), vars[0].value.expose()), ("API_TOKEN", "tok-1"));

        store.upsert(material("API", "generic", &[("API_TOKEN", "tok-2")])).unwrap();
        assert!(rec.last().contains(&("API_TOKEN".to_owned(), "tok-2".to_owned())));

        assert!(store.remove("API").unwrap());
        assert!(!rec.paths().contains(&"API_TOKEN".to_owned()));
        let err = store.read(|s| s.env(&["API".to_owned()])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret API is not active in this session; activate it or drop it from --only"
        );
        let listed = store.read(|s| s.list()).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].files.contains(&"/m/aws/credentials".to_owned()));
        // Defaults (the AWS region) are the broker's to apply: without one, no variable.
        assert!(listed[0].variables.contains(&"AWS_ACCESS_KEY_ID".to_owned()));
        assert!(!listed[0].variables.contains(&"AWS_REGION".to_owned()));
    }

    #[test]
    fn lease_expiry_with_a_fake_clock_drops_everything_until_the_next_sync() {
        let (store, rec) = store(Duration::from_secs(2));
        let t0 = Instant::now();
        store.sync(vec![material("API", "generic", &[("API_TOKEN", "v")])], t0).unwrap();
        // Heard from the broker at t0 + 1.5 s: the lease now runs to t0 + 3.5 s.
        store.touch(t0 + Duration::from_millis(1500));
        assert!(!store.check_lease(t0 + Duration::from_millis(3499)));
        assert_eq!(rec.paths(), ["API_TOKEN"]);
        assert!(store.check_lease(t0 + Duration::from_millis(3500)));
        assert!(rec.paths().is_empty());
        store.read(|s| {
            assert!(matches!(s.env(&[]), Err(StateError::Unavailable)));
            assert!(matches!(s.list(), Err(StateError::Unavailable)));
            assert!(s.is_empty());
        });
        // Already out of touch: not "dropped again".
        assert!(!store.check_lease(t0 + Duration::from_secs(10)));
        // An activation that arrives while out of touch changes nothing; a snapshot restores.
        store.upsert(material("LATE", "generic", &[("LATE", "v")])).unwrap();
        assert!(rec.paths().is_empty());
        store
            .sync(
                vec![material("API", "generic", &[("API_TOKEN", "v")])],
                t0 + Duration::from_secs(11),
            )
            .unwrap();
        assert_eq!(rec.paths(), ["API_TOKEN"]);
        assert!(store.read(|s| s.env(&[])).is_ok());
    }

    #[test]
    fn a_change_the_filesystem_refuses_changes_nothing() {
        let (store, rec) = store(Duration::from_secs(60));
        store.sync(vec![material("A", "generic", &[("X", "1")])], Instant::now()).unwrap();
        // Two secrets that would both provide X (the broker refuses this; the agent must too).
        let err = store.upsert(material("B", "generic", &[("X", "2")])).unwrap_err();
        assert!(err.to_string().contains("same path"), "{err}");
        assert_eq!(rec.last(), [("X".to_owned(), "1".to_owned())]);
        assert_eq!(store.read(|s| s.names()), ["A"]);
    }

    #[test]
    fn material_filters_by_kind_and_name() {
        let mut s = Secrets::new("/m");
        s.replace_all(vec![
            material("GH", "github", &[("token", "ghp_x")]),
            material("API", "generic", &[("K", "v")]),
        ]);
        let m = s.material(&["github".to_owned()], &[]).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].fields["token"].expose(), "ghp_x");
        assert!(s.material(&[], &["NOPE".to_owned()]).is_err());
        assert_eq!(s.material(&[], &["API".to_owned(), "API".to_owned()]).unwrap().len(), 1);
    }

    #[test]
    fn invalid_names_from_the_broker_are_refused() {
        let mut s = Secrets::new("/m");
        let err = s.upsert(material("../X", "generic", &[("X", "1")])).unwrap_err();
        assert!(matches!(err, StateError::InvalidName(_)));
    }
}
