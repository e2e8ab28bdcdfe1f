//! Who is on the other end of a loopback TCP connection: the socket's owner uid and inode from
//! `/proc/net/tcp` and `/proc/net/tcp6` (matched by the connection's address pair), and the
//! process holding that inode, from `/proc/<pid>/fd` (best effort: a socket passed between
//! processes has several holders; the first found is named).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;

/// The owner of a connecting socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub inode: u64,
}

/// Finds the socket whose local address is `client` and remote address is `server` (the
/// proxy's side of the connection), in this network namespace.
pub fn owner_of(client: SocketAddr, server: SocketAddr) -> Option<Owner> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        if let Some(o) = find_in_table(&text, client, server) {
            return Some(o);
        }
    }
    None
}

/// Searches one table's text.
pub fn find_in_table(text: &str, client: SocketAddr, server: SocketAddr) -> Option<Owner> {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        if f.len() < 10 {
            continue;
        }
        let (Some(local), Some(remote)) = (parse_addr(f[1]), parse_addr(f[2])) else { continue };
        if same(local, client) && same(remote, server) {
            let uid = f[7].parse().ok()?;
            let inode = f[9].parse().ok()?;
            return Some(Owner { uid, inode });
        }
    }
    None
}

/// Addresses compare equal across the IPv4 and IPv4-mapped IPv6 forms.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && canon(a.ip()) == canon(b.ip())
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6): the kernel prints each 32-bit word of the
/// address as it lies in memory read as a host-order integer, so `to_ne_bytes` gives the
/// address bytes back.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::from(word(ip)?),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::from(b)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The pid of a process of `uid` that holds the socket `inode`, if any is found. Only that
/// uid's processes are looked at (the agent cannot read other users' fd tables without taking
/// their uid as its filesystem uid, as [`maestro_fs::executable_of`] does for `exe`).
pub fn pid_of(owner: Owner) -> Option<u32> {
    let want = format!("socket:[{}]", owner.inode);
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.uid() != owner.uid {
            continue;
        }
        if holds(pid, meta.uid(), meta.gid(), &want) {
            return Some(pid);
        }
    }
    None
}

/// Whether `/proc/<pid>/fd` has a link to `want`, read with the process's ids as this thread's
/// filesystem ids when the agent's own are refused.
fn holds(pid: u32, uid: u32, gid: u32, want: &str) -> bool {
    let scan = || -> Option<bool> {
        let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        Some(dir.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == std::ffi::OsStr::new(want))
        }))
    };
    if let Some(found) = scan() {
        return found;
    }
    let old_gid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
    let old_uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
    let found = scan();
    nix::unistd::setfsuid(old_uid);
    nix::unistd::setfsgid(old_gid);
    found.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_address_forms() {
        assert_eq!(parse_addr("0100007F:1F90"), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_addr("0000000000000000FFFF00000100007F:0050"),
            Some("[::ffff:127.0.0.1]:80".parse().unwrap())
        );
        assert!(same("[::ffff:127.0.0.1]:80".parse().unwrap(), "127.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn finds_the_owner_and_the_pid_of_a_socket_this_process_opened() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let owner = owner_of(peer, server).unwrap();
        assert_eq!(owner.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(pid_of(owner), Some(std::process::id()));
        // The accepted side is another socket: reversed, it is found as the server's.
        let other = owner_of(server, peer).unwrap();
        assert_ne!(other.inode, owner.inode);
        assert_eq!(owner_of(peer, "127.0.0.1:1".parse().unwrap()), None);
    }
}
