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
/// proxy's side of the connection), in this network namespace: by one exact netlink query,
/// or, where that is refused, by reading `/proc/net/tcp` (which walks the kernel's whole
/// connection hash table: milliseconds on a machine with much memory, on every connection).
pub fn owner_of(client: SocketAddr, server: SocketAddr) -> Option<Owner> {
    if let Some(o) = diag::owner_of(client, server) {
        return Some(o);
    }
    owner_from_tables(client, server)
}

/// [`owner_of`] from `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn owner_from_tables(client: SocketAddr, server: SocketAddr) -> Option<Owner> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        if let Some(o) = find_in_table(&text, client, server) {
            return Some(o);
        }
    }
    None
}

/// The socket-diagnostics query (`NETLINK_SOCK_DIAG`, `SOCK_DIAG_BY_FAMILY`) for one TCP
/// socket by its exact addresses: the kernel looks it up in its hash table, as it does for a
/// packet, and answers with its owner uid and inode.
mod diag {
    use std::net::{IpAddr, SocketAddr};
    use std::time::Duration;

    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        setsockopt, socket, sockopt,
    };
    use nix::sys::time::TimeVal;

    use super::Owner;

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_HDR: usize = 16;
    /// `struct inet_diag_sockid`: ports, two 16-byte addresses, interface, cookie.
    const SOCKID: usize = 48;
    /// In `struct inet_diag_msg`: family, state, timer, retrans, the sockid, expires, rqueue,
    /// wqueue, then uid and inode.
    const UID_AT: usize = 4 + SOCKID + 12;
    /// Longest wait for the kernel's answer (it answers at once).
    const TIMEOUT: Duration = Duration::from_millis(200);

    fn put_addr(buf: &mut [u8], ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => buf[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => buf[..16].copy_from_slice(&v6.octets()),
        }
    }

    /// The request for the socket whose local address is `local` and remote `remote`.
    fn request(local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
        let family = if local.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u8;
        let len = NLMSG_HDR + 8 + SOCKID;
        let mut b = vec![0u8; len];
        b[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        b[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        b[8..12].copy_from_slice(&1u32.to_ne_bytes());
        let r = NLMSG_HDR;
        b[r] = family;
        b[r + 1] = libc::IPPROTO_TCP as u8;
        // idiag_states: every state.
        b[r + 4..r + 8].copy_from_slice(&u32::MAX.to_ne_bytes());
        let id = r + 8;
        b[id..id + 2].copy_from_slice(&local.port().to_be_bytes());
        b[id + 2..id + 4].copy_from_slice(&remote.port().to_be_bytes());
        put_addr(&mut b[id + 4..id + 20], local.ip());
        put_addr(&mut b[id + 20..id + 36], remote.ip());
        // No cookie: INET_DIAG_NOCOOKIE.
        b[id + 40..id + 48].copy_from_slice(&[0xff; 8]);
        b
    }

    pub fn owner_of(client: SocketAddr, server: SocketAddr) -> Option<Owner> {
        if client.is_ipv4() != server.is_ipv4() {
            return None;
        }
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )
        .ok()?;
        let wait = TimeVal::new(0, TIMEOUT.as_micros() as i64);
        setsockopt(&fd, sockopt::ReceiveTimeout, &wait).ok()?;
        use std::os::fd::AsRawFd;
        sendto(
            fd.as_raw_fd(),
            &request(client, server),
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .ok()?;
        let mut buf = [0u8; 1024];
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
        let msg = buf.get(..n)?;
        let kind = u16::from_ne_bytes(msg.get(4..6)?.try_into().ok()?);
        if kind == NLMSG_ERROR || kind != SOCK_DIAG_BY_FAMILY {
            // No such socket (ENOENT), or the query is refused: the caller reads the tables.
            return None;
        }
        let body = msg.get(NLMSG_HDR..)?;
        let word = |at: usize| {
            body.get(at..at + 4).and_then(|w| w.try_into().ok()).map(u32::from_ne_bytes)
        };
        Some(Owner { uid: word(UID_AT)?, inode: u64::from(word(UID_AT + 4)?) })
    }
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
    // A client usually opens many connections: look first in the process that held the last
    // one of this uid, before scanning every process of the uid (milliseconds for root).
    let last = LAST_HOLDER.lock().unwrap_or_else(|e| e.into_inner()).get(&owner.uid).copied();
    if let Some(pid) = last
        && let Ok(meta) = std::fs::metadata(format!("/proc/{pid}"))
        && meta.uid() == owner.uid
        && holds(pid, meta.uid(), meta.gid(), &want)
    {
        return Some(pid);
    }
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if Some(pid) == last {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.uid() != owner.uid {
            continue;
        }
        if holds(pid, meta.uid(), meta.gid(), &want) {
            let mut held = LAST_HOLDER.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: one entry per uid, and only root and the sandbox user are served.
            if held.len() < 64 || held.contains_key(&owner.uid) {
                held.insert(owner.uid, pid);
            }
            return Some(pid);
        }
    }
    None
}

/// Per uid, the process that held that uid's last connection.
static LAST_HOLDER: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<u32, u32>>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(std::collections::HashMap::new()));

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
        assert_eq!(diag::owner_of(peer, server), owner_from_tables(peer, server));
        assert!(diag::owner_of(peer, server).is_some(), "the netlink query found nothing");
        assert_eq!(owner.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(pid_of(owner), Some(std::process::id()));
        // The accepted side is another socket: reversed, it is found as the server's.
        let other = owner_of(server, peer).unwrap();
        assert_ne!(other.inode, owner.inode);
        assert_eq!(owner_of(peer, "127.0.0.1:1".parse().unwrap()), None);
    }
}
