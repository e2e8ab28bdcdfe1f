//! The agent's settings after validation, and the parsers its command line uses.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Default mount point of the secrets filesystem.
pub const DEFAULT_MOUNT: &str = "/run/secrets";
/// Default sandbox user: the first regular user of most images.
pub const DEFAULT_USER: &str = "1000:1000";
/// Default lease: how long secrets survive without the broker.
pub const DEFAULT_LEASE: &str = "60s";
/// Default time between SIGTERM and SIGKILL at teardown.
pub const DEFAULT_GRACE: &str = "5s";
/// Largest bundle file the agent reads.
pub const MAX_BUNDLE_BYTES: u64 = 64 * 1024;
/// Environment variables that point at the bundle; removed from the agent's own environment so
/// that the processes it starts do not inherit them.
pub const BUNDLE_ENV: &str = "MAESTRO_BUNDLE";

/// The sandbox user: the only non-root uid the socket serves and the filesystem admits, and the
/// identity CMD runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// Parses `UID[:GID]`; the group defaults to the uid.
pub fn parse_user(text: &str) -> Result<User, String> {
    let number = |part: &str, what: &str| {
        part.parse::<u32>().map_err(|_| {
            format!("{what} {part:?} is not a number; give --user as UID[:GID], e.g. 1000:1000")
        })
    };
    let (uid, gid) = match text.split_once(':') {
        Some((u, g)) => (number(u, "uid")?, number(g, "gid")?),
        None => {
            let uid = number(text, "uid")?;
            (uid, uid)
        }
    };
    // (uid_t)-1 means "unchanged" to setresuid; it can never be a real user.
    if uid == u32::MAX || gid == u32::MAX {
        return Err("uid and gid must be below 4294967295".to_owned());
    }
    Ok(User { uid, gid })
}

/// Parses a duration such as `60s`, `500ms`, `2m`; zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 60s, 500ms or 2m"))?;
    if d.is_zero() {
        return Err("the duration must be longer than zero".to_owned());
    }
    Ok(d)
}

/// Everything `maestro-agent run` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub bundle: PathBuf,
    /// `--broker-url`: broker URLs that replace the bundle's (in the order to try them).
    pub broker_urls: Vec<String>,
    pub mount: PathBuf,
    pub socket: PathBuf,
    pub user: User,
    pub lease: Duration,
    pub grace: Duration,
    /// CMD and its arguments; empty when the agent runs alone.
    pub command: Vec<OsString>,
    /// The egress proxy for sealed secrets.
    pub egress: EgressConfig,
}

/// The egress proxy's settings from the command line.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// A loopback address; port 0 picks a free one.
    pub listen: std::net::SocketAddr,
    /// Host patterns that always get a plain tunnel (clients that pin certificates).
    pub pass_through: Vec<String>,
    /// TEST ONLY: host pattern -> address to connect to instead.
    pub test_only_upstreams: Vec<(String, std::net::SocketAddr)>,
    /// TEST ONLY: a PEM file of one more root trusted for upstream connections.
    pub test_only_upstream_ca: Option<PathBuf>,
}

/// The default address of the egress proxy.
pub const DEFAULT_PROXY_LISTEN: &str = "127.0.0.1:0";

/// `HOST=ADDR` of `--test-only-upstream`.
pub fn parse_upstream(text: &str) -> Result<(String, std::net::SocketAddr), String> {
    let (host, addr) = text.split_once('=').ok_or_else(|| {
        format!("'{text}' is not HOST=ADDRESS:PORT (e.g. api.openai.com=127.0.0.1:8443)")
    })?;
    let addr = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not an ADDRESS:PORT (e.g. 127.0.0.1:8443)"))?;
    Ok((host.trim().to_ascii_lowercase(), addr))
}

impl Config {
    /// Whether the socket is somewhere else than where `maestro-exec` looks by default, so that
    /// CMD must be told (`MAESTRO_AGENT_SOCK`).
    pub fn socket_is_default(&self) -> bool {
        self.socket == std::path::Path::new(maestro_wire::sock::DEFAULT_SOCKET)
    }

    /// The mount path as a string, for rendering variables that hold file paths.
    pub fn mount_str(&self) -> Result<String, String> {
        self.mount.to_str().map(|s| s.trim_end_matches('/').to_owned()).ok_or_else(|| {
            format!("mount path {} is not UTF-8; choose a plain path", self.mount.display())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        assert_eq!(parse_user("1000").unwrap(), User { uid: 1000, gid: 1000 });
        assert_eq!(parse_user("1000:50").unwrap(), User { uid: 1000, gid: 50 });
        assert_eq!(parse_user("0:0").unwrap(), User { uid: 0, gid: 0 });
        assert!(parse_user("bob").unwrap_err().contains("UID[:GID]"));
        assert!(parse_user("1:x").unwrap_err().contains("gid \"x\""));
        assert!(parse_user("4294967295").is_err());
        assert!(parse_user("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("60s"));
    }
}
