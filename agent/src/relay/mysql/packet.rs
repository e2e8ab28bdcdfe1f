//! MySQL packets the relay reads and writes during the handshake: framing (3-byte length,
//! sequence id), the server's greeting (HandshakeV10), the client's login (HandshakeResponse41)
//! and ERR packets. After the handshake the relay copies bytes and parses nothing.
//!
//! Written here rather than taken from `mysql_common`: the relay must pass on what it does not
//! interpret byte for byte (MariaDB's extended capabilities in the reserved bytes, the client's
//! connection attributes), which typed packets rebuild, and it needs only these few.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// Capability flags (https://dev.mysql.com/doc/dev/mysql-server/latest/group__group__cs__capabilities__flags.html).
pub mod cap {
    pub const LONG_PASSWORD: u32 = 1;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const COMPRESS: u32 = 1 << 5;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const SSL: u32 = 1 << 11;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    pub const ZSTD_COMPRESSION: u32 = 1 << 26;
    pub const MULTI_FACTOR_AUTHENTICATION: u32 = 1 << 28;
    pub const SSL_VERIFY_SERVER_CERT: u32 = 1 << 30;
    /// Flags that only shape the login packet itself: the relay sets them upstream as its own
    /// login needs, whatever the client chose, without changing what follows the login.
    pub const LOGIN_ONLY: u32 = CONNECT_WITH_DB
        | SECURE_CONNECTION
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_CLIENT_DATA;
    /// Flags the relay never passes on: compression and TLS (the relay's own socket is a unix
    /// socket; TLS upstream is the relay's business), and logins it cannot do for the client.
    pub const NEVER: u32 =
        COMPRESS | SSL | ZSTD_COMPRESSION | MULTI_FACTOR_AUTHENTICATION | SSL_VERIFY_SERVER_CERT;
}

/// The longest packet read during the handshake (a login with connection attributes, a
/// server's RSA key): anything longer is not a handshake.
pub const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;
/// The length of the nonce (scramble) a greeting carries.
pub const NONCE_LEN: usize = 20;

/// Why a packet could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("a handshake packet of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// One packet: its sequence id and payload (zeroized when dropped: a login carries a scramble).
pub struct Packet {
    pub seq: u8,
    pub payload: Zeroizing<Vec<u8>>,
}

/// Reads one packet of at most [`MAX_HANDSHAKE_PACKET`] bytes.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Packet, PacketError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if len > MAX_HANDSHAKE_PACKET {
        return Err(PacketError::TooLong(len));
    }
    let mut payload = Zeroizing::new(vec![0u8; len]);
    r.read_exact(&mut payload).await?;
    Ok(Packet { seq: header[3], payload })
}

/// Writes one packet (a payload under 16 MiB: every handshake packet is).
pub async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    seq: u8,
    payload: &[u8],
) -> Result<(), PacketError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l < 0xff_ffff)
        .ok_or(PacketError::Malformed("packet: too long to send"))?;
    let mut out = Zeroizing::new(Vec::with_capacity(4 + payload.len()));
    out.extend_from_slice(&len.to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(())
}

/// An ERR packet (protocol 4.1 form): the client prints `ERROR code (state): message`.
pub fn err(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    let mut state = state.as_bytes().to_vec();
    state.resize(5, b'0');
    p.extend_from_slice(&state);
    p.extend_from_slice(message.as_bytes());
    p
}

/// A cursor over a payload.
struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PacketError> {
        if self.buf.len() < n {
            return Err(PacketError::Malformed(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, PacketError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PacketError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PacketError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A NUL-terminated string; at the end of the packet, the rest.
    fn nul(&mut self) -> &'a [u8] {
        match self.buf.iter().position(|b| *b == 0) {
            Some(i) => {
                let s = &self.buf[..i];
                self.buf = &self.buf[i + 1..];
                s
            }
            None => std::mem::take(&mut self.buf),
        }
    }
    /// A length-encoded integer.
    fn lenenc(&mut self) -> Result<u64, PacketError> {
        Ok(match self.u8()? {
            n @ 0..=0xfa => u64::from(n),
            0xfc => u64::from(self.u16()?),
            0xfd => {
                let b = self.take(3)?;
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16
            }
            0xfe => {
                let b = self.take(8)?;
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
            _ => return Err(PacketError::Malformed(self.what)),
        })
    }
    fn lenenc_bytes(&mut self) -> Result<&'a [u8], PacketError> {
        let n = usize::try_from(self.lenenc()?).map_err(|_| PacketError::Malformed(self.what))?;
        self.take(n)
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// A length-encoded integer, written.
fn put_lenenc(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=0xfa => out.push(n as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
    }
}

/// The server's greeting (HandshakeV10).
#[derive(Debug, Clone)]
pub struct Greeting {
    pub version: Vec<u8>,
    pub connection_id: u32,
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    /// MariaDB's extended capabilities (the last 4 of the 10 reserved bytes).
    pub mariadb_caps: [u8; 4],
    pub nonce: Vec<u8>,
    pub plugin: Vec<u8>,
}

impl Greeting {
    pub fn parse(p: &[u8]) -> Result<Greeting, PacketError> {
        let mut c = Cursor { buf: p, what: "server greeting" };
        if c.u8()? != 10 {
            return Err(PacketError::Malformed("server greeting (not protocol 10)"));
        }
        let version = c.nul().to_vec();
        let connection_id = c.u32()?;
        let mut nonce = c.take(8)?.to_vec();
        c.u8()?;
        let low = c.u16()?;
        let charset = c.u8()?;
        let status = c.u16()?;
        let high = c.u16()?;
        let capabilities = u32::from(low) | u32::from(high) << 16;
        let data_len = usize::from(c.u8()?);
        let reserved = c.take(10)?;
        let mariadb_caps = [reserved[6], reserved[7], reserved[8], reserved[9]];
        if capabilities & cap::SECURE_CONNECTION != 0 {
            let n = data_len.saturating_sub(8).max(13);
            let part = c.take(n.min(c.buf.len()))?;
            nonce.extend_from_slice(part);
        }
        // The nonce is 20 bytes and a NUL the server adds.
        nonce.truncate(NONCE_LEN);
        let plugin =
            if capabilities & cap::PLUGIN_AUTH != 0 { c.nul().to_vec() } else { Vec::new() };
        Ok(Greeting {
            version,
            connection_id,
            capabilities,
            charset,
            status,
            mariadb_caps,
            nonce,
            plugin,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(&self.version);
        p.push(0);
        p.extend_from_slice(&self.connection_id.to_le_bytes());
        p.extend_from_slice(&self.nonce[..8]);
        p.push(0);
        p.extend_from_slice(&(self.capabilities as u16).to_le_bytes());
        p.push(self.charset);
        p.extend_from_slice(&self.status.to_le_bytes());
        p.extend_from_slice(&((self.capabilities >> 16) as u16).to_le_bytes());
        p.push((self.nonce.len() + 1) as u8);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&self.mariadb_caps);
        p.extend_from_slice(&self.nonce[8..]);
        p.push(0);
        p.extend_from_slice(&self.plugin);
        p.push(0);
        p
    }
}

/// The client's login (HandshakeResponse41), or its request to start TLS.
#[derive(Debug, Clone)]
pub struct Login {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
    /// The 23 bytes after the charset: zeros, and MariaDB's extended capabilities in the last 4.
    pub filler: [u8; 23],
    pub user: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub plugin: Option<Vec<u8>>,
    /// The connection attributes, as sent (without their length).
    pub attributes: Option<Vec<u8>>,
}

/// What the client sent first.
pub enum ClientHello {
    Login(Login),
    /// An SSLRequest: the client wants TLS before logging in.
    Tls,
}

impl Login {
    /// Parses the client's first packet. Its auth response is read past and dropped: the
    /// socket is the authentication.
    pub fn parse(p: &[u8]) -> Result<ClientHello, PacketError> {
        let mut c = Cursor { buf: p, what: "login packet" };
        let capabilities = c.u32()?;
        if capabilities & cap::PROTOCOL_41 == 0 {
            return Err(PacketError::Malformed("login packet (protocol 4.1 is required)"));
        }
        let max_packet = c.u32()?;
        let charset = c.u8()?;
        let mut filler = [0u8; 23];
        filler.copy_from_slice(c.take(23)?);
        if c.is_empty() && capabilities & cap::SSL != 0 {
            return Ok(ClientHello::Tls);
        }
        let user = c.nul().to_vec();
        if capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            c.lenenc_bytes()?;
        } else if capabilities & cap::SECURE_CONNECTION != 0 {
            let n = usize::from(c.u8()?);
            c.take(n)?;
        } else {
            c.nul();
        }
        let database = (capabilities & cap::CONNECT_WITH_DB != 0 && !c.is_empty())
            .then(|| c.nul().to_vec())
            .filter(|d| !d.is_empty());
        let plugin =
            (capabilities & cap::PLUGIN_AUTH != 0 && !c.is_empty()).then(|| c.nul().to_vec());
        let attributes = if capabilities & cap::CONNECT_ATTRS != 0 && !c.is_empty() {
            Some(c.lenenc_bytes()?.to_vec())
        } else {
            None
        };
        Ok(ClientHello::Login(Login {
            capabilities,
            max_packet,
            charset,
            filler,
            user,
            database,
            plugin,
            attributes,
        }))
    }

    /// The SSLRequest of this login (its first 32 bytes, with `capabilities`).
    pub fn tls_request(&self, capabilities: u32) -> Vec<u8> {
        let mut p = Vec::with_capacity(32);
        p.extend_from_slice(&capabilities.to_le_bytes());
        p.extend_from_slice(&self.max_packet.to_le_bytes());
        p.push(self.charset);
        p.extend_from_slice(&self.filler);
        p
    }

    /// This login with `capabilities`, `auth` for `plugin` and `database`, as sent upstream.
    pub fn encode(
        &self,
        capabilities: u32,
        auth: &[u8],
        plugin: &[u8],
        database: Option<&[u8]>,
    ) -> Zeroizing<Vec<u8>> {
        let mut p = Zeroizing::new(self.tls_request(capabilities));
        p.extend_from_slice(&self.user);
        p.push(0);
        if capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc(&mut p, auth.len());
        } else {
            // SECURE_CONNECTION: one length byte (every scramble fits).
            p.push(auth.len().min(255) as u8);
        }
        p.extend_from_slice(auth);
        if let Some(db) = database.filter(|_| capabilities & cap::CONNECT_WITH_DB != 0) {
            p.extend_from_slice(db);
            p.push(0);
        }
        if capabilities & cap::PLUGIN_AUTH != 0 {
            p.extend_from_slice(plugin);
            p.push(0);
        }
        if let Some(attrs) =
            self.attributes.as_ref().filter(|_| capabilities & cap::CONNECT_ATTRS != 0)
        {
            put_lenenc(&mut p, attrs.len());
            p.extend_from_slice(attrs);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting() -> Greeting {
        Greeting {
            version: b"10.11.14-MariaDB".to_vec(),
            connection_id: 42,
            capabilities: 0xf7fe | (0x81bf << 16),
            charset: 45,
            status: 2,
            mariadb_caps: [0x1d, 0, 0, 0],
            nonce: (1..=20).collect(),
            plugin: b"mysql_native_password".to_vec(),
        }
    }

    #[test]
    fn greetings_round_trip() {
        let g = greeting();
        let back = Greeting::parse(&g.encode()).unwrap();
        assert_eq!(back.version, g.version);
        assert_eq!(back.connection_id, 42);
        assert_eq!(back.capabilities, g.capabilities);
        assert_eq!(back.mariadb_caps, g.mariadb_caps);
        assert_eq!(back.nonce, g.nonce);
        assert_eq!(back.plugin, g.plugin);
        assert!(Greeting::parse(&[9, 0]).is_err());
        assert!(Greeting::parse(&g.encode()[..20]).is_err());
    }

    #[test]
    fn logins_round_trip_keeping_what_the_relay_does_not_read() {
        let caps = cap::PROTOCOL_41
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH
            | cap::CONNECT_WITH_DB
            | cap::CONNECT_ATTRS
            | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA;
        let mut filler = [0u8; 23];
        filler[19] = 0x1d;
        let login = Login {
            capabilities: caps,
            max_packet: 1 << 24,
            charset: 45,
            filler,
            user: b"app".to_vec(),
            database: Some(b"appdb".to_vec()),
            plugin: Some(b"mysql_native_password".to_vec()),
            attributes: Some(b"\x04_pid\x0412345".to_vec()),
        };
        let bytes = login.encode(caps, &[7; 20], b"mysql_native_password", Some(b"appdb"));
        let Ok(ClientHello::Login(back)) = Login::parse(&bytes) else { panic!("not a login") };
        assert_eq!(back.user, b"app");
        assert_eq!(back.database.as_deref(), Some(&b"appdb"[..]));
        assert_eq!(back.plugin.as_deref(), Some(&b"mysql_native_password"[..]));
        assert_eq!(back.attributes, login.attributes);
        assert_eq!(back.filler, filler);
        // Without the length-encoded auth data, and without a database.
        let caps2 = caps & !cap::PLUGIN_AUTH_LENENC_CLIENT_DATA & !cap::CONNECT_WITH_DB;
        let bytes = login.encode(caps2, &[7; 20], b"x", Some(b"appdb"));
        let Ok(ClientHello::Login(back)) = Login::parse(&bytes) else { panic!("not a login") };
        assert_eq!(back.database, None);
        assert_eq!(back.plugin.as_deref(), Some(&b"x"[..]));
        // An SSLRequest, garbage, protocol 3.20.
        assert!(matches!(Login::parse(&login.tls_request(caps | cap::SSL)), Ok(ClientHello::Tls)));
        assert!(Login::parse(b"GET / HTTP/1.1\r\n").is_err());
        assert!(Login::parse(&[0, 0, 0, 0, 1]).is_err());
        let mut truncated = login.encode(caps, &[7; 20], b"x", None).to_vec();
        truncated.truncate(40);
        assert!(Login::parse(&truncated).is_err());
    }

    #[test]
    fn err_packets_carry_code_state_and_message() {
        let p = err(1045, "28000", "no");
        assert_eq!(p, b"\xff\x15\x04#28000no");
    }
}
