//! The data directory and its files: where each lives, how it is written (mode 0600, atomically,
//! synced), and the lock that keeps two brokers (or a broker and `rotate-master-key`) apart.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::store::engine::DatabaseUrl;

/// A problem with the data directory or one of its files.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory could not be created or its mode set.
    #[error(
        "cannot create the data directory {path}: {source}; check that its parent exists and is writable"
    )]
    Create { path: PathBuf, source: io::Error },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// A file could not be written.
    #[error("cannot write {path}: {source}; check free space and permissions")]
    Write { path: PathBuf, source: io::Error },
    /// A file is larger than any file the broker writes.
    #[error("{path} is larger than {max} bytes; it is not a file the broker wrote")]
    TooLarge { path: PathBuf, max: u64 },
    /// Another process holds the lock.
    #[error(
        "another maestro-broker process is using {path} (its broker.lock is held); stop it first"
    )]
    Locked { path: PathBuf },
}

/// The data directory (`--data-dir`, `$MAESTRO_DATA_DIR`, or `./maestro-data`), and the
/// database it goes with: SQLite inside it, unless a PostgreSQL URL is given (`--database`).
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    database_url: Option<DatabaseUrl>,
}

/// The exclusive lock on a data directory, held for as long as this value lives.
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<File>,
}

impl DataDir {
    /// A data directory at `root` (not created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), database_url: None }
    }

    /// The same directory with its database in PostgreSQL at `url` (`None`: SQLite inside).
    pub fn with_database_url(mut self, url: Option<DatabaseUrl>) -> Self {
        self.database_url = url;
        self
    }

    /// The PostgreSQL database, if the store is not the SQLite file inside.
    pub fn database_url(&self) -> Option<&DatabaseUrl> {
        self.database_url.as_ref()
    }

    /// The database for messages: the SQLite file's path, or the URL without its password.
    pub fn database_label(&self) -> String {
        match &self.database_url {
            Some(url) => url.label().to_owned(),
            None => self.database().display().to_string(),
        }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The master key file (base64, 0600).
    pub fn master_key(&self) -> PathBuf {
        self.root.join("master.key")
    }

    /// The next master key, written by `rotate-master-key` before it commits.
    pub fn master_key_new(&self) -> PathBuf {
        self.root.join("master.key.new")
    }

    /// The CA private key (PEM).
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }

    /// The CA certificate (PEM): what clients and sandboxes trust.
    pub fn ca_pem(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// The server's private key (PEM), made anew at each start.
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }

    /// The server's certificate (PEM), made anew at each start.
    pub fn server_pem(&self) -> PathBuf {
        self.root.join("server.pem")
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.root.join("maestro.db")
    }

    /// The first user's API token.
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }

    fn lock_file(&self) -> PathBuf {
        self.root.join("broker.lock")
    }

    fn key_lock_file(&self) -> PathBuf {
        self.root.join("keys.lock")
    }

    /// Creates the directory if needed and makes it private (0700).
    pub fn ensure(&self) -> Result<(), DataDirError> {
        let err = |source| DataDirError::Create { path: self.root.clone(), source };
        fs::create_dir_all(&self.root).map_err(err)?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700)).map_err(err)?;
        Ok(())
    }

    /// Takes the directory's exclusive lock, or says who holds it.
    pub fn lock(&self) -> Result<DirLock, DataDirError> {
        let path = self.lock_file();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| DataDirError::Write { path: path.clone(), source })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DirLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                Err(DataDirError::Locked { path: self.root.clone() })
            }
            Err((_, errno)) => Err(DataDirError::Write {
                path,
                source: io::Error::from_raw_os_error(errno as i32),
            }),
        }
    }

    /// Takes the master key lock, waiting for it if needed. Held by `rotate-master-key` for
    /// its whole run and by every start-up while it checks the key, so that a start-up never
    /// mistakes a rotation in progress for a crashed one (and deletes or renames its file).
    /// `user add` runs beside a serving broker, which holds the directory lock but not this one.
    pub fn key_lock(&self) -> Result<DirLock, DataDirError> {
        let path = self.key_lock_file();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| DataDirError::Write { path: path.clone(), source })?;
        Flock::lock(file, FlockArg::LockExclusive).map(|lock| DirLock { _lock: lock }).map_err(
            |(_, errno)| DataDirError::Write {
                path,
                source: io::Error::from_raw_os_error(errno as i32),
            },
        )
    }

    /// Makes the database file (and its WAL companions, if any) private. SQLite creates the
    /// WAL and shared-memory files with the database file's mode, so the file is created 0600
    /// before SQLite first opens it.
    /// Nothing to do when the database is in PostgreSQL.
    pub fn prepare_database(&self) -> Result<(), DataDirError> {
        if self.database_url.is_some() {
            return Ok(());
        }
        let db = self.database();
        let err = |source| DataDirError::Write { path: db.clone(), source };
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&db)
            .map_err(err)?;
        for suffix in ["", "-wal", "-shm"] {
            let path = PathBuf::from(format!("{}{suffix}", db.display()));
            if path.exists() {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                    .map_err(|source| DataDirError::Write { path: path.clone(), source })?;
            }
        }
        Ok(())
    }
}

/// Writes a file atomically with mode 0600: a temporary file in the same directory, synced,
/// renamed over the target, and the directory synced, so that a crash leaves the old or the new
/// content, never a mix.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), DataDirError> {
    let err = |source| DataDirError::Write { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        // An existing temporary file keeps its mode: force it.
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(err)?;
        file.write_all(contents).map_err(err)?;
        file.sync_all().map_err(err)?;
    }
    fs::rename(&tmp, path).map_err(err)?;
    sync_parent(path).map_err(err)
}

/// Renames `from` to `to` and syncs the directory.
pub fn rename_synced(from: &Path, to: &Path) -> Result<(), DataDirError> {
    let err = |source| DataDirError::Write { path: to.to_owned(), source };
    fs::rename(from, to).map_err(err)?;
    sync_parent(to).map_err(err)
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Reads a small file the broker wrote; `None` if it does not exist.
pub fn read_small(path: &Path, max: u64) -> Result<Option<Vec<u8>>, DataDirError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DataDirError::Read { path: path.to_owned(), source }),
    };
    let mut buf = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|source| DataDirError::Read { path: path.to_owned(), source })?;
    if buf.len() as u64 > max {
        return Err(DataDirError::TooLarge { path: path.to_owned(), max });
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_and_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("d"));
        dir.ensure().unwrap();
        let mode = fs::metadata(dir.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        write_private(&dir.admin_token(), b"x").unwrap();
        write_private(&dir.admin_token(), b"y").unwrap();
        let mode = fs::metadata(dir.admin_token()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_small(&dir.admin_token(), 10).unwrap().unwrap(), b"y");
        assert!(read_small(&dir.ca_pem(), 10).unwrap().is_none());
        assert!(matches!(read_small(&dir.admin_token(), 0), Err(DataDirError::TooLarge { .. })));
        let held = dir.lock().unwrap();
        assert!(matches!(dir.lock(), Err(DataDirError::Locked { .. })));
        drop(held);
        dir.lock().unwrap();
    }
}
