//! The two system calls that std does not wrap, straight through libc (a wrapper crate would be
//! one more dependency for two calls): who serves a unix socket, and whether a file is
//! executable for the caller.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The uid of the process at the other end of `stream` (SO_PEERCRED: for a connected client,
/// the process that called listen(2)).
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
    let size = size_of::<libc::ucred>();
    let mut len = libc::socklen_t::try_from(size).map_err(io::Error::other)?;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a live `ucred` of exactly that
    // size, and the descriptor belongs to `stream`, borrowed for the whole call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if usize::try_from(len).ok() != Some(size) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short SO_PEERCRED answer"));
    }
    Ok(cred.uid)
}

/// Whether the caller may execute `path` (access(2) with X_OK, by the real uid and gid, as a
/// shell checks PATH entries).
pub fn is_executable(path: &Path) -> bool {
    // A path from PATH or argv never holds a NUL; if one did, it is not an executable.
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: `path` is a NUL-terminated string that outlives the call; access(2) only reads it.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn the_peer_of_our_own_listener_is_us() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let stream = UnixStream::connect(&path).unwrap();
        let own = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(peer_uid(&stream).unwrap(), own);
    }

    #[test]
    fn executable_means_the_x_bit_for_us() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Root may execute a file when any x bit is set, and not when none is.
        assert!(!is_executable(&file));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(is_executable(&file));
        assert!(!is_executable(&dir.path().join("missing")));
    }
}
