//! [`Snapshot`]: an immutable, validated set of files to show under the mount.
//!
//! Validation happens here, once, so that the FUSE callbacks can trust every path they meet and
//! a bad set of files is refused before anything under the mount changes.

use std::collections::BTreeSet;

use maestro_wire::SecretValue;

use crate::error::FsError;

/// Most files in one snapshot.
pub const MAX_FILES: usize = 4096;
/// Largest content of one file.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Largest content of all files of one snapshot together.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;
/// Longest relative path of a file.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest component of a path (the kernel's NAME_MAX).
pub const MAX_NAME_BYTES: usize = 255;
/// Most components in a path.
pub const MAX_DEPTH: usize = 16;
/// Longest secret name attached to a file.
pub const MAX_SECRET_NAME_BYTES: usize = 256;

/// One file under the mount: a relative '/'-separated path ("AWS_REGION", "aws/credentials").
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Relative path under the mount.
    pub path: String,
    /// Name of the secret the file comes from, for the audit trail.
    pub secret: String,
    /// What a read returns.
    pub content: SecretValue,
}

/// An immutable set of files; validated (relative paths, no "..", no empty components, no
/// duplicates, a file may not also be a directory).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Sorted by path.
    entries: Vec<FileEntry>,
}

impl Snapshot {
    /// Validates `entries` and makes a snapshot of them. Nothing is shown until it is published.
    pub fn new(mut entries: Vec<FileEntry>) -> Result<Snapshot, FsError> {
        if entries.len() > MAX_FILES {
            return Err(FsError::TooManyFiles { count: entries.len(), max: MAX_FILES });
        }
        let mut total = 0usize;
        for entry in &entries {
            check_path(&entry.path)?;
            check_secret_name(entry)?;
            if entry.content.len() > MAX_FILE_BYTES {
                return Err(FsError::FileTooLarge {
                    path: entry.path.clone(),
                    size: entry.content.len(),
                    max: MAX_FILE_BYTES,
                });
            }
            total = total.saturating_add(entry.content.len());
        }
        if total > MAX_SNAPSHOT_BYTES {
            return Err(FsError::SnapshotTooLarge { size: total, max: MAX_SNAPSHOT_BYTES });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        for pair in entries.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(FsError::DuplicatePath { path: pair[0].path.clone() });
            }
        }
        check_files_are_not_directories(&entries)?;
        Ok(Snapshot { entries })
    }

    /// The snapshot with no file: an empty mount.
    pub fn empty() -> Snapshot {
        Snapshot { entries: Vec::new() }
    }

    /// The files, sorted by path.
    pub fn entries(&self) -> &[FileEntry] {
        &self.entries
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no file.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn into_entries(self) -> Vec<FileEntry> {
        self.entries
    }
}

fn invalid(path: &str, reason: &'static str) -> FsError {
    FsError::InvalidPath { path: path.to_owned(), reason }
}

fn check_path(path: &str) -> Result<(), FsError> {
    if path.is_empty() {
        return Err(invalid(path, "it is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(invalid(path, "it is longer than 1024 bytes"));
    }
    if path.starts_with('/') {
        return Err(invalid(path, "it is absolute"));
    }
    let mut depth = 0usize;
    for component in path.split('/') {
        depth += 1;
        match component {
            "" => return Err(invalid(path, "it has an empty component")),
            "." | ".." => return Err(invalid(path, "it has a '.' or '..' component")),
            _ => {}
        }
        if component.len() > MAX_NAME_BYTES {
            return Err(invalid(path, "a component is longer than 255 bytes"));
        }
        // Control characters (NUL, newline, ...) make names that break tools and log lines.
        if component.chars().any(char::is_control) {
            return Err(invalid(path, "it has a control character"));
        }
    }
    if depth > MAX_DEPTH {
        return Err(invalid(path, "it is nested more than 16 levels deep"));
    }
    Ok(())
}

fn check_secret_name(entry: &FileEntry) -> Result<(), FsError> {
    let reason = if entry.secret.is_empty() {
        "empty"
    } else if entry.secret.len() > MAX_SECRET_NAME_BYTES {
        "longer than 256 bytes"
    } else if entry.secret.chars().any(char::is_control) {
        "has a control character"
    } else {
        return Ok(());
    };
    Err(FsError::InvalidSecretName { path: entry.path.clone(), reason })
}

/// Refuses "a" next to "a/b": "a" cannot be a file and a directory at once.
fn check_files_are_not_directories(entries: &[FileEntry]) -> Result<(), FsError> {
    let files: BTreeSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for entry in entries {
        let mut end = 0;
        while let Some(pos) = entry.path[end..].find('/') {
            let dir = &entry.path[..end + pos];
            if files.contains(dir) {
                return Err(FsError::FileIsDirectory {
                    file: dir.to_owned(),
                    nested: entry.path.clone(),
                });
            }
            end += pos + 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> FileEntry {
        FileEntry { path: path.into(), secret: "S".into(), content: SecretValue::from("v") }
    }

    fn err(paths: &[&str]) -> String {
        Snapshot::new(paths.iter().map(|p| entry(p)).collect()).unwrap_err().to_string()
    }

    #[test]
    fn accepts_flat_and_nested_and_sorts() {
        let s = Snapshot::new(vec![entry("b/c"), entry("A"), entry("b/d/e")]).unwrap();
        let paths: Vec<&str> = s.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["A", "b/c", "b/d/e"]);
        assert_eq!(s.len(), 3);
        assert!(Snapshot::empty().is_empty());
    }

    #[test]
    fn refuses_bad_paths() {
        assert!(err(&[""]).contains("it is empty"));
        assert!(err(&["/etc/passwd"]).contains("absolute"));
        assert!(err(&["a/../b"]).contains("'..'"));
        assert!(err(&[".."]).contains("'..'"));
        assert!(err(&["./a"]).contains("'.'"));
        assert!(err(&["a//b"]).contains("empty component"));
        assert!(err(&["a/"]).contains("empty component"));
        assert!(err(&["a\nb"]).contains("control character"));
        assert!(err(&["a\0b"]).contains("control character"));
        assert!(err(&[&"x".repeat(256)]).contains("255"));
        assert!(err(&["a/".repeat(20).trim_end_matches('/')]).contains("16 levels"));
        assert!(err(&[&"abcdefgh/".repeat(120)]).contains("1024"));
    }

    #[test]
    fn refuses_duplicates_and_file_directory_clashes() {
        assert_eq!(
            err(&["A", "B", "A"]),
            "two files have the same path \"A\"; give each file its own path"
        );
        let e = err(&["aws/credentials/x", "aws/credentials"]);
        assert!(e.contains("\"aws/credentials\" is a file"), "{e}");
        assert!(e.contains("\"aws/credentials/x\""), "{e}");
        // A shared prefix that is not a directory boundary is fine.
        Snapshot::new(vec![entry("ab"), entry("a/b")]).unwrap();
    }

    #[test]
    fn refuses_too_many_and_too_large() {
        let many: Vec<FileEntry> = (0..=MAX_FILES).map(|i| entry(&format!("F{i}"))).collect();
        assert!(Snapshot::new(many).unwrap_err().to_string().contains("too many files"));
        let big = FileEntry {
            path: "BIG".into(),
            secret: "S".into(),
            content: SecretValue::new("x".repeat(MAX_FILE_BYTES + 1)),
        };
        let e = Snapshot::new(vec![big]).unwrap_err().to_string();
        assert!(e.contains("BIG") && e.contains("at most"), "{e}");
    }

    #[test]
    fn refuses_bad_secret_names_and_never_shows_content() {
        let mut e = entry("A");
        e.secret = String::new();
        e.content = SecretValue::from("planted-value-123");
        let msg = Snapshot::new(vec![e.clone()]).unwrap_err().to_string();
        assert!(msg.contains("invalid secret"), "{msg}");
        assert!(!msg.contains("planted-value-123"));
        assert!(!format!("{e:?}").contains("planted-value-123"));
    }
}
