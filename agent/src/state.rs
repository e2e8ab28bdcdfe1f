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
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use maestro_fs::{FileEntry, FsError, Snapshot};
use maestro_wire::SecretValue;
use maestro_wire::agent_api::SecretMaterial;
use maestro_wire::catalog::{self, Rendered};
use maestro_wire::names::is_valid_secret_name;
use maestro_wire::sock::{EnvVar, ListedSecret, ListedSession, MaterialEntry};

use crate::decoys::DecoySet;
use crate::placeholders;
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
    /// The real values, as the broker sent them.
    pub material: SecretMaterial,
    /// What the sandbox sees: for a sealed secret, rendered from placeholders.
    pub rendered: Rendered,
    /// For a sealed secret: each sealed field's placeholder. Empty for a plain one.
    pub placeholders: BTreeMap<String, String>,
    /// The fields as the sandbox sees them (the credential helpers' answers).
    pub shown: BTreeMap<String, SecretValue>,
}

impl Entry {
    /// The values of the fields that the catalog says are not secret (never a value).
    pub fn shown_fields(&self) -> BTreeMap<String, String> {
        let Some(kind) = catalog::kind(&self.material.kind) else { return BTreeMap::new() };
        kind.fields
            .iter()
            .filter(|f| f.shown)
            .filter_map(|f| {
                let v = self.material.fields.get(f.name)?;
                Some((f.name.to_owned(), v.expose().to_owned()))
            })
            .collect()
    }

    /// The git host of a secret that serves only some owners (see
    /// [`catalog::owners`]); `None` for every other secret.
    fn git_path_host(&self) -> Option<String> {
        let kind = catalog::kind(&self.material.kind)?;
        let Some(catalog::Helper::GitCredential { host, host_field, .. }) = kind.helper else {
            return None;
        };
        if !kind.is_scoped(self.material.fields.keys().map(String::as_str)) {
            return None;
        }
        let host = match host_field {
            Some(f) => self.material.fields.get(f).map_or(host, |v| v.expose()),
            None => host,
        };
        Some(host.to_ascii_lowercase())
    }

    pub fn is_sealed(&self) -> bool {
        !self.placeholders.is_empty()
    }
}

impl Clone for Entry {
    fn clone(&self) -> Self {
        Entry {
            material: self.material.clone(),
            // `Rendered` is not `Clone`; copied value by value.
            rendered: Rendered {
                variables: self.rendered.variables.clone(),
                files: self.rendered.files.clone(),
            },
            placeholders: self.placeholders.clone(),
            shown: self.shown.clone(),
        }
    }
}

/// Renders a secret's variables and files for the mount at `mount`, keeping the placeholders
/// of `previous` (the same secret's entry before this version) where they still fit.
pub fn render(
    material: SecretMaterial,
    mount: &str,
    previous: Option<&Entry>,
) -> Result<Entry, StateError> {
    render_in(material, mount, "", previous)
}

/// The same, `sockets` being the directory of the agent's own sockets for sealed secrets it
/// serves itself (an ssh-agent socket per sealed `ssh` key, a PostgreSQL relay socket per
/// sealed `postgres` login; see [`crate::relay`]).
pub fn render_in(
    material: SecretMaterial,
    mount: &str,
    sockets: &str,
    previous: Option<&Entry>,
) -> Result<Entry, StateError> {
    if !is_valid_secret_name(&material.name) {
        return Err(StateError::InvalidName(material.name.chars().take(80).collect()));
    }
    let kind = catalog::kind(&material.kind).ok_or_else(|| StateError::UnknownKind {
        name: material.name.clone(),
        kind: material.kind.chars().take(80).collect(),
    })?;
    let empty = BTreeMap::new();
    let shown = placeholders::show(kind, &material, previous.map_or(&empty, |e| &e.placeholders));
    let socket = crate::relay::socket_path(kind, sockets, &material.name);
    let rendered = match (material.exposure, socket) {
        (catalog::Exposure::Sealed, Some(socket)) => {
            catalog::render_agent_sealed(kind, &shown.fields, mount, &socket.to_string_lossy())
        }
        _ => None,
    }
    .unwrap_or_else(|| catalog::render(kind, &shown.fields, mount));
    Ok(Entry { material, rendered, placeholders: shown.placeholders, shown: shown.fields })
}

/// The egress proxy as the sandbox reaches it, for the variables and files that point the
/// sandbox's tools at it while a sealed secret is active.
#[derive(Debug, Clone)]
pub struct Egress {
    /// `http://127.0.0.1:PORT`.
    pub proxy_url: String,
    /// The session CA's certificate (PEM).
    pub ca_pem: String,
    /// The system's roots and the session CA (PEM).
    pub bundle_pem: String,
}

/// The owner shown for the egress files in the filesystem's records: not a valid secret name,
/// so that reads of these public files are never taken for uses of a secret.
pub const EGRESS_FILES_OWNER: &str = "(maestro)";
/// The session CA's certificate, relative to the mount.
pub const CA_FILE: &str = "maestro/ca.pem";
/// The system's roots plus the session CA, relative to the mount.
pub const CA_BUNDLE_FILE: &str = "maestro/ca-bundle.pem";
/// Where the sandbox's tools must not go through the proxy.
const NO_PROXY: &str = "localhost,127.0.0.1,::1";

impl Egress {
    fn files(&self) -> [(&'static str, &str); 2] {
        [(CA_FILE, &self.ca_pem), (CA_BUNDLE_FILE, &self.bundle_pem)]
    }

    /// The variables real clients read for a proxy and for the roots they trust.
    fn variables(&self, mount: &str) -> Vec<EnvVar> {
        let mount = mount.trim_end_matches('/');
        let bundle = format!("{mount}/{CA_BUNDLE_FILE}");
        let ca = format!("{mount}/{CA_FILE}");
        let proxy = self.proxy_url.as_str();
        [
            // curl reads the lower-case names (and HTTPS_PROXY); Python, Go and git read both.
            ("HTTPS_PROXY", proxy),
            ("https_proxy", proxy),
            ("HTTP_PROXY", proxy),
            ("http_proxy", proxy),
            ("NO_PROXY", NO_PROXY),
            ("no_proxy", NO_PROXY),
            // OpenSSL-based clients, Go, httpx; requests; curl; git; botocore; Node.js.
            ("SSL_CERT_FILE", &bundle),
            ("REQUESTS_CA_BUNDLE", &bundle),
            ("CURL_CA_BUNDLE", &bundle),
            ("GIT_SSL_CAINFO", &bundle),
            ("AWS_CA_BUNDLE", &bundle),
            ("NODE_EXTRA_CA_CERTS", &ca),
        ]
        .into_iter()
        .map(|(name, value)| EnvVar {
            name: name.to_owned(),
            value: SecretValue::from(value),
            secret: None,
        })
        .collect()
    }
}

/// The set of active secrets, and whether they may be served.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    mount: String,
    /// The directory of the agent's sockets for sealed secrets it serves itself.
    sockets: String,
    active: BTreeMap<String, Entry>,
    in_touch: bool,
    egress: Option<Egress>,
    /// The decoys served beside the real secrets, when the session has them.
    decoys: Option<Arc<DecoySet>>,
}

impl Secrets {
    pub fn new(mount: &str) -> Self {
        Secrets {
            mount: mount.to_owned(),
            sockets: String::new(),
            active: BTreeMap::new(),
            in_touch: false,
            egress: None,
            decoys: None,
        }
    }

    /// Where the egress proxy is, once it runs.
    pub fn set_egress(&mut self, egress: Egress) {
        self.egress = Some(egress);
    }

    /// Serves these decoys beside the real secrets (`None`: no decoys).
    pub fn set_decoys(&mut self, decoys: Option<Arc<DecoySet>>) {
        self.decoys = decoys;
    }

    /// Where the agent's own sockets for sealed secrets go (set once, before any secret).
    pub fn set_sockets(&mut self, dir: &str) {
        self.sockets = dir.to_owned();
    }

    /// The active secrets.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.active.values()
    }

    /// The egress proxy, when one runs and a sealed secret is among `entries`.
    fn egress_for<'a>(&self, mut entries: impl Iterator<Item = &'a Entry>) -> Option<&Egress> {
        self.egress.as_ref().filter(|_| entries.any(Entry::is_sealed))
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
            // A snapshot after a reconnect is not a new activation: placeholders stay.
            let previous = self.active.get(&m.name);
            match render_in(m, &self.mount, &self.sockets, previous) {
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
        let material_name = material.name.clone();
        let e = render_in(material, &self.mount, &self.sockets, self.active.get(&material_name))?;
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
        let mut files: Vec<FileEntry> = self
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
        if let Some(egress) = self.egress_for(self.active.values()) {
            files.extend(egress.files().into_iter().map(|(path, content)| FileEntry {
                path: path.to_owned(),
                secret: EGRESS_FILES_OWNER.to_owned(),
                content: SecretValue::from(content),
            }));
        }
        if let Some(decoys) = &self.decoys {
            let names = self.names();
            let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            let beside = decoys.files_beside(&names, &paths);
            files.extend(beside);
        }
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
        let mut vars: Vec<EnvVar> = selected
            .iter()
            .flat_map(|e| {
                // What maestro-exec masks: not a sealed secret's placeholders, nor a variable
                // that names one of the secret's files (a path is no value), nor one that holds
                // a field the catalog says is not secret (a host, a region).
                // A sealed secret's variables (placeholders, an ssh-agent socket) hold no value.
                let plain = e.material.exposure == maestro_wire::catalog::Exposure::Plain;
                let secret = (plain && !e.is_sealed()).then(|| e.material.name.clone());
                let files = format!("{}/", self.mount);
                let kind = catalog::kind(&e.material.kind);
                e.rendered.variables.iter().map(move |(name, value)| EnvVar {
                    name: name.clone(),
                    value: value.clone(),
                    secret: secret.clone().filter(|_| {
                        !value.expose().starts_with(&files)
                            && !kind.is_some_and(|k| k.variable_is_shown(name))
                    }),
                })
            })
            .collect();
        if let Some(egress) = self.egress_for(selected.iter().copied()) {
            vars.extend(egress.variables(&self.mount));
        }
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
                exposure: e.material.exposure,
                hosts: if e.is_sealed() { e.material.hosts.clone() } else { Vec::new() },
                active_until: e.material.active_until.clone(),
                shown_fields: e.shown_fields(),
            })
            .collect())
    }

    /// The hosts of active git secrets that serve only some owners, for which git must send
    /// the repository path to its credential helper (`credential.https://HOST.useHttpPath`).
    /// Empty while out of touch.
    pub fn git_path_hosts(&self) -> Vec<String> {
        if !self.in_touch {
            return Vec::new();
        }
        let mut hosts: Vec<String> =
            self.active.values().filter_map(Entry::git_path_host).collect();
        hosts.sort();
        hosts.dedup();
        hosts
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
                // Placeholders for a sealed secret: the helpers answer with what the sandbox
                // may hold.
                fields: e.shown.clone(),
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

/// Told of every change of the active set, with the lock held, so that changes arrive in order
/// and a deactivation has reached it when [`Store::remove`] returns (the egress proxy).
pub type Watcher = Box<dyn Fn(&Secrets) + Send + Sync>;

/// The secrets, the lease and the filesystem they are published to, behind one lock.
pub struct Store {
    inner: Mutex<Inner>,
    fs: Box<dyn Publish>,
    watcher: std::sync::OnceLock<Watcher>,
    /// The decoys' values, made at start; served while the session has decoys.
    decoy_set: OnceLock<Arc<DecoySet>>,
    /// The session's id and label, as the broker's last snapshot named them.
    session: Mutex<Option<ListedSession>>,
}

impl Store {
    pub fn new(mount: &str, lease: Duration, fs: Box<dyn Publish>) -> Self {
        Store {
            inner: Mutex::new(Inner { secrets: Secrets::new(mount), lease: Lease::new(lease) }),
            fs,
            watcher: std::sync::OnceLock::new(),
            decoy_set: OnceLock::new(),
            session: Mutex::new(None),
        }
    }

    /// The session as the broker's snapshot names it (its label may change between snapshots).
    pub fn set_session(&self, id: String, label: Option<String>) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(ListedSession { id, label });
    }

    /// The session's id and label, once the broker has sent a snapshot.
    pub fn session(&self) -> Option<ListedSession> {
        self.session.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the one watcher (the egress proxy) and tells it the current set; a second call is
    /// ignored.
    pub fn watch(&self, watcher: Watcher) {
        let inner = self.lock();
        if self.watcher.set(watcher).is_ok() {
            self.notify(&inner.secrets);
        }
    }

    fn notify(&self, secrets: &Secrets) {
        if let Some(w) = self.watcher.get() {
            w(secrets);
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
        self.notify(&inner.secrets);
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

    /// Where the egress proxy is: its variables and CA files appear while a sealed secret is
    /// active.
    pub fn set_egress(&self, egress: Egress) -> Result<(), StateError> {
        self.change(|s| {
            s.set_egress(egress);
            Ok(())
        })
    }

    /// The decoys' values (made at start); a second call is ignored.
    pub fn prepare_decoys(&self, set: DecoySet) {
        let _ = self.decoy_set.set(Arc::new(set));
    }

    /// Serves the decoys or stops serving them, as the broker's snapshot says. Without prepared
    /// values there is nothing to serve (logged once per snapshot).
    pub fn set_decoys(&self, on: bool) -> Result<(), StateError> {
        let set = if on { self.decoy_set.get().cloned() } else { None };
        if on && set.is_none() {
            tracing::error!("the session has decoys but this agent could not make them");
        }
        let changed = self.read(|s| s.decoys.is_some() != set.is_some());
        if !changed {
            return Ok(());
        }
        self.change(|s| {
            s.set_decoys(set);
            Ok(())
        })
    }

    /// Where the agent's own sockets for sealed secrets go (see [`Secrets::set_sockets`]).
    pub fn set_sockets(&self, dir: &str) {
        self.lock().secrets.set_sockets(dir);
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
        self.notify(&inner.secrets);
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
            active_until: None,
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
    fn a_sealed_secret_shows_placeholders_and_the_proxy_variables_and_files() {
        let (store, rec) = store(Duration::from_secs(60));
        let mut sealed =
            material("AI", "openai", &[("api_key", "sk-proj-REALrealREALreal0123456789")]);
        sealed.exposure = maestro_wire::catalog::Exposure::Sealed;
        sealed.hosts = vec!["api.openai.com".into()];
        let plain = material("API", "generic", &[("API_TOKEN", "tok-1")]);
        store.sync(vec![plain, sealed.clone()], Instant::now()).unwrap();
        // No proxy yet: placeholders, but no proxy variables.
        let (vars, _) = store.read(|s| s.env(&[])).unwrap();
        let key =
            vars.iter().find(|v| v.name == "OPENAI_API_KEY").unwrap().value.expose().to_owned();
        assert!(key.starts_with("sk-proj-") && !key.contains("REAL"), "{key}");
        assert!(!vars.iter().any(|v| v.name == "HTTPS_PROXY"));
        store
            .set_egress(Egress {
                proxy_url: "http://127.0.0.1:4321".into(),
                ca_pem: "CA".into(),
                bundle_pem: "ROOTS+CA".into(),
            })
            .unwrap();
        let (vars, _) = store.read(|s| s.env(&[])).unwrap();
        let var = |n: &str| vars.iter().find(|v| v.name == n).map(|v| v.value.expose().to_owned());
        assert_eq!(var("HTTPS_PROXY").as_deref(), Some("http://127.0.0.1:4321"));
        assert_eq!(var("SSL_CERT_FILE").as_deref(), Some("/m/maestro/ca-bundle.pem"));
        assert_eq!(var("NODE_EXTRA_CA_CERTS").as_deref(), Some("/m/maestro/ca.pem"));
        assert_eq!(var("OPENAI_API_KEY"), Some(key.clone()));
        // What maestro-exec masks: the plain secret's value, named; not the placeholder, nor
        // the proxy's settings.
        let secret = |n: &str| vars.iter().find(|v| v.name == n).and_then(|v| v.secret.clone());
        assert_eq!(secret("API_TOKEN").as_deref(), Some("API"));
        assert_eq!(secret("OPENAI_API_KEY"), None);
        assert_eq!(secret("HTTPS_PROXY"), None);
        assert_eq!(secret("SSL_CERT_FILE"), None);
        // Only the plain secret selected: no proxy.
        let (vars, _) = store.read(|s| s.env(&["API".to_owned()])).unwrap();
        assert!(!vars.iter().any(|v| v.name == "HTTPS_PROXY"));
        // Files: the placeholder and the CA files; never the value.
        let last = rec.last();
        assert!(last.contains(&("OPENAI_API_KEY".to_owned(), key.clone())));
        assert!(last.contains(&("maestro/ca-bundle.pem".to_owned(), "ROOTS+CA".to_owned())));
        assert!(!last.iter().any(|(_, c)| c.contains("REAL")));
        // The helpers get placeholders too.
        let m = store.read(|s| s.material(&[], &["AI".to_owned()])).unwrap();
        assert_eq!(m[0].fields["api_key"].expose(), key);
        // A new version of the same shape keeps the placeholder; a fresh activation does not.
        let mut v2 = sealed.clone();
        v2.fields.insert("api_key".into(), SecretValue::from("sk-proj-NEWWnewwNEWWneww0123456789"));
        store.upsert(v2).unwrap();
        let again = store.read(|s| s.get("AI").unwrap().placeholders["api_key"].clone());
        assert_eq!(again, key);
        store.remove("AI").unwrap();
        assert!(
            !rec.paths().contains(&"maestro/ca.pem".to_owned()),
            "CA files go with the last sealed secret"
        );
        store.upsert(sealed).unwrap();
        let fresh = store.read(|s| s.get("AI").unwrap().placeholders["api_key"].clone());
        assert_ne!(fresh, key);
    }

    #[test]
    fn a_variable_that_names_a_file_is_not_masked() {
        let (store, _rec) = store(Duration::from_secs(60));
        let key = r#"{"type":"service_account","client_email":"ci@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"}"#;
        let gcp = material("GCP", "gcp", &[("service_account_json", key)]);
        store.sync(vec![gcp], Instant::now()).unwrap();
        let (vars, _) = store.read(|s| s.env(&[])).unwrap();
        let path = vars.iter().find(|v| v.name == "GOOGLE_APPLICATION_CREDENTIALS").unwrap();
        assert!(path.value.expose().starts_with("/m/"), "{}", path.value.expose());
        assert_eq!(path.secret, None);
    }

    #[test]
    fn a_variable_of_a_field_that_is_not_secret_is_not_masked() {
        let (store, _rec) = store(Duration::from_secs(60));
        let pg = material(
            "PG",
            "postgres",
            &[("host", "db.internal"), ("port", "5432"), ("user", "app"), ("password", "pw-9f1c2")],
        );
        store.sync(vec![pg], Instant::now()).unwrap();
        let (vars, _) = store.read(|s| s.env(&[])).unwrap();
        let masked = |name: &str| vars.iter().find(|v| v.name == name).unwrap().secret.is_some();
        assert!(!masked("PGHOST") && !masked("PGPORT") && !masked("PGUSER"));
        assert!(masked("PGPASSWORD") && masked("DATABASE_URL"));
    }

    #[test]
    fn the_watcher_has_seen_a_removal_when_remove_returns() {
        let (store, _rec) = store(Duration::from_secs(60));
        let seen = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
        let s2 = seen.clone();
        store.watch(Box::new(move |s: &Secrets| {
            s2.lock().unwrap().push(s.entries().map(|e| e.material.name.clone()).collect())
        }));
        store
            .sync(vec![material("API", "generic", &[("API_TOKEN", "t")])], Instant::now())
            .unwrap();
        store.remove("API").unwrap();
        assert_eq!(seen.lock().unwrap().last().unwrap(), &Vec::<String>::new());
        store.upsert(material("API", "generic", &[("API_TOKEN", "t")])).unwrap();
        store.drop_all();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 5, "initial, sync, remove, upsert, drop_all: {seen:?}");
        assert!(seen.last().unwrap().is_empty());
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
    fn git_secrets_with_owners_are_listed_with_them_and_ask_git_for_the_path() {
        let mut s = Secrets::new("/m");
        assert!(s.git_path_hosts().is_empty(), "out of touch");
        s.replace_all(vec![
            material("GH", "github", &[("token", "ghp_default")]),
            material("GH_WORK", "github", &[("token", "ghp_work"), ("owners", "acme")]),
            material(
                "GL",
                "gitlab",
                &[("token", "glpat-x"), ("host", "Git.Example.com:8443"), ("owners", "g/sub")],
            ),
            material("DB", "postgres", &[("host", "db"), ("user", "u"), ("password", "pw")]),
        ]);
        assert_eq!(s.git_path_hosts(), ["git.example.com:8443", "github.com"]);
        let listed = s.list().unwrap();
        let by = |n: &str| listed.iter().find(|l| l.name == n).unwrap();
        assert_eq!(by("GH_WORK").shown_fields["owners"], "acme");
        assert!(by("GH_WORK").variables.is_empty() && by("GH_WORK").files.is_empty());
        assert_eq!(by("GH").variables, ["GH_TOKEN", "GITHUB_TOKEN"]);
        // Only the fields the catalog says are not secret, never a value.
        assert_eq!(by("DB").shown_fields.get("password"), None);
        assert_eq!(by("DB").shown_fields["host"], "db");
        assert!(by("GH").shown_fields.is_empty());
        let (vars, _) = s.env(&[]).unwrap();
        assert_eq!(vars.iter().filter(|v| v.name == "GH_TOKEN").count(), 1);
        assert!(vars.iter().all(|v| v.value.expose() != "ghp_work"));
    }

    #[test]
    fn invalid_names_from_the_broker_are_refused() {
        let mut s = Secrets::new("/m");
        let err = s.upsert(material("../X", "generic", &[("X", "1")])).unwrap_err();
        assert!(matches!(err, StateError::InvalidName(_)));
    }

    #[test]
    fn decoys_are_files_only_while_the_session_has_them_and_never_variables_or_listed() {
        let (store, rec) = store(Duration::from_secs(60));
        store.prepare_decoys(DecoySet::generate().unwrap());
        let t0 = Instant::now();
        store.sync(vec![material("API", "generic", &[("API_TOKEN", "tok-1")])], t0).unwrap();
        assert_eq!(rec.paths(), ["API_TOKEN"]);
        store.set_decoys(true).unwrap();
        assert_eq!(rec.paths(), ["API_TOKEN", "aws-prod-admin/credentials", "deploy-token/token"]);
        let token = rec.last().into_iter().find(|(p, _)| p == "deploy-token/token").unwrap().1;
        assert!(token.starts_with("ghp_"));
        let (vars, used) = store.read(|s| s.env(&[])).unwrap();
        assert_eq!(used, ["API"]);
        assert!(vars.iter().all(|v| v.value.expose() != token.trim_end()));
        let listed: Vec<String> =
            store.read(|s| s.list()).unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(listed, ["API"]);
        // Out of touch: nothing at all; back in touch: the decoys again, with the same values.
        store.drop_all();
        assert!(rec.paths().is_empty());
        store.sync(vec![], t0).unwrap();
        let again = rec.last().into_iter().find(|(p, _)| p == "deploy-token/token").unwrap().1;
        assert_eq!(again, token);
        store.set_decoys(false).unwrap();
        assert!(rec.paths().is_empty());
    }
}
