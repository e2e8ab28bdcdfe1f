//! Reading `/proc/self/mountinfo`: which filesystems are mounted where.
//!
//! Used to find our own mount again before unmounting it (so we never detach someone else's
//! mount that was put on the same path) and to find stale FUSE mounts without touching them:
//! a `stat` on a dead FUSE mount fails with ENOTCONN, reading mountinfo never does.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::error::FsError;

/// Largest mountinfo we read. A machine with this many mounts has other problems.
const MAX_MOUNTINFO_BYTES: u64 = 16 * 1024 * 1024;

/// One line of mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// The "major:minor" device of the mounted filesystem.
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) mount_point: PathBuf,
    pub(crate) fstype: String,
    pub(crate) source: String,
}

impl MountEntry {
    /// Whether this is a FUSE filesystem (`fuse`, `fuse.<subtype>`, `fuseblk`).
    pub(crate) fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype == "fuseblk" || self.fstype.starts_with("fuse.")
    }
}

/// Every mount of this process's mount namespace, in mount order (the last one listed at a path
/// is the one on top).
pub(crate) fn read() -> Result<Vec<MountEntry>, FsError> {
    use std::io::Read;
    let file = std::fs::File::open("/proc/self/mountinfo")
        .map_err(|source| FsError::ReadMountInfo { source })?;
    let mut text = String::new();
    file.take(MAX_MOUNTINFO_BYTES)
        .read_to_string(&mut text)
        .map_err(|source| FsError::ReadMountInfo { source })?;
    Ok(parse(&text))
}

/// The mount on top at `path` (an absolute, canonical path), if any.
pub(crate) fn top_at(path: &Path) -> Result<Option<MountEntry>, FsError> {
    Ok(read()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// Parses mountinfo text; lines that do not parse are skipped.
pub(crate) fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

// Format (proc(5)): id parent major:minor root mount-point options [optional...] - fstype
// source super-options
fn parse_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let _root = fields.next()?;
    let mount_point = unescape(fields.next()?);
    let mut rest = after.split(' ');
    let fstype = unescape(rest.next()?);
    let source = unescape(rest.next()?);
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mount_point: PathBuf::from(OsString::from_vec(mount_point)),
        fstype: String::from_utf8_lossy(&fstype).into_owned(),
        source: String::from_utf8_lossy(&source).into_owned(),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\012` for a newline, `\134` for `\`).
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_with_optional_fields_and_escapes() {
        let text = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
99 22 0:77 / /tmp/with\\040space ro,nosuid,nodev,noexec - fuse maestro-secrets ro,user_id=0
100 22 0:78 / /tmp/x rw - fuse.sshfs host:/ rw
garbage line
";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].fstype, "proc");
        assert!(!mounts[0].is_fuse());
        assert_eq!(mounts[1].mount_point, Path::new("/tmp/with space"));
        assert_eq!((mounts[1].major, mounts[1].minor), (0, 77));
        assert_eq!(mounts[1].source, "maestro-secrets");
        assert!(mounts[1].is_fuse());
        assert!(mounts[2].is_fuse());
    }

    #[test]
    fn unescapes_octal_and_keeps_other_backslashes() {
        assert_eq!(unescape("a\\134b"), b"a\\b");
        assert_eq!(unescape("a\\012"), b"a\n");
        assert_eq!(unescape("a\\9"), b"a\\9");
        assert_eq!(unescape("end\\"), b"end\\");
    }

    #[test]
    fn reads_this_process_mounts() {
        let mounts = read().unwrap();
        assert!(mounts.iter().any(|m| m.mount_point == Path::new("/")));
    }
}
