//! The working-tree walk of `maestro-exec scan`: regular files under each PATH, opened by this
//! process (so the kernel checks the caller's own rights), in name order. Symbolic links below
//! a PATH are not followed (they could lead out of the tree, or loop); `.git` is skipped (the
//! history scan reads the repository through git); FIFOs, sockets and devices are skipped (a
//! read could block or never end).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use maestro_wire::sock::ScanItem;

use super::Scan;
use crate::client::Failure;

/// Deepest directory nesting followed.
const MAX_DEPTH: usize = 256;

/// Scans `path`: a file, or every file below a directory, or standard input for `-`. A PATH
/// named on the command line is followed if it is a link.
pub fn walk(scan: &mut Scan, path: &Path) -> Result<(), Failure> {
    if path.as_os_str() == "-" {
        // Standard input (`git diff | maestro-exec scan -`), to its end.
        let item = ScanItem { label: "(stdin)".to_owned(), lines: true };
        return scan.item(item, &mut io::stdin().lock(), 0);
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => dir(scan, path, 0),
        Ok(meta) if meta.is_file() => file(scan, path, true),
        Ok(_) => {
            scan.problem(&format!("{}: not a regular file or directory; skipped", path.display()));
            Ok(())
        }
        Err(e) => {
            scan.problem(&format!("cannot read {}: {e}", path.display()));
            Ok(())
        }
    }
}

fn dir(scan: &mut Scan, path: &Path, depth: usize) -> Result<(), Failure> {
    if depth > MAX_DEPTH {
        scan.problem(&format!(
            "{}: nested deeper than {MAX_DEPTH} directories; skipped",
            path.display()
        ));
        return Ok(());
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            scan.problem(&format!("cannot read {}: {e}", path.display()));
            return Ok(());
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name() == ".git" {
            continue;
        }
        let Ok(kind) = entry.file_type() else { continue };
        let child = entry.path();
        if kind.is_dir() {
            dir(scan, &child, depth + 1)?;
        } else if kind.is_file() {
            file(scan, &child, false)?;
        }
    }
    Ok(())
}

/// Opens without following a final link (unless `follow`, for a PATH the user named) and
/// without blocking (a FIFO swapped in after the walk saw a file must not hang the scan), then
/// checks that what was opened is a regular file.
fn open(path: &Path, follow: bool) -> io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new().read(true).custom_flags(flags).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

fn file(scan: &mut Scan, path: &Path, follow: bool) -> Result<(), Failure> {
    let label = path.to_string_lossy();
    let label = label.strip_prefix("./").unwrap_or(&label).to_owned();
    let mut file = match open(path, follow) {
        Ok(f) => f,
        Err(e) => {
            scan.problem(&format!("cannot read {label}: {e}"));
            return Ok(());
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    scan.item(ScanItem { label, lines: true }, &mut file, size)
}
