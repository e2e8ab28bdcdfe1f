//! Logging in to the real server with the password: mysql_native_password,
//! caching_sha2_password (its fast path; its full login over TLS, or encrypted with the
//! server's RSA key named in the secret), sha256_password and mysql_clear_password (over TLS,
//! or with the key), and the server's auth switch requests.
//!
//! The password is sent in full only inside TLS or encrypted with a key the secret pins: never
//! to a key the server hands over on an unencrypted connection (a man in the middle could hand
//! over its own).

use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use zeroize::Zeroizing;

use super::packet::{self, Packet, PacketError};

pub const NATIVE: &[u8] = b"mysql_native_password";
pub const CACHING_SHA2: &[u8] = b"caching_sha2_password";
pub const SHA256: &[u8] = b"sha256_password";
pub const CLEAR: &[u8] = b"mysql_clear_password";

/// caching_sha2_password's AuthMoreData answers.
const FAST_AUTH_OK: u8 = 3;
const FULL_AUTH: u8 = 4;
/// Auth switches and more-data rounds accepted in one login at most.
const MAX_ROUNDS: usize = 8;

/// Why the login to the server failed (never holds the password).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Packet(#[from] PacketError),
    /// The server refused: its ERR packet, to pass to the client as it is.
    #[error("the server refused the login")]
    Refused(Vec<u8>),
    #[error("the server asks for the auth plugin {0}, which the relay does not speak")]
    Plugin(String),
    #[error(
        "the server asks for the full password ({0}) and the connection to it is not TLS; set the secret's ssl_mode to VERIFY_IDENTITY (or its server_public_key field)"
    )]
    NeedsTls(String),
    #[error("the server's RSA key in the secret's server_public_key field is not usable: {0}")]
    Key(String),
    #[error("the server sent an unexpected packet during the login")]
    Unexpected,
}

/// What the login may use.
pub struct Credentials<'a> {
    pub password: &'a [u8],
    /// Whether the connection to the server is TLS (the password may go in full).
    pub tls: bool,
    /// The server's RSA public key (PEM), pinned in the secret.
    pub server_key: Option<&'a str>,
}

/// SHA1(password) XOR SHA1(nonce, SHA1(SHA1(password))); empty for an empty password.
pub fn scramble_native(nonce: &[u8], password: &[u8]) -> Zeroizing<Vec<u8>> {
    if password.is_empty() {
        return Zeroizing::new(Vec::new());
    }
    let stage1 = Zeroizing::new(Sha1::digest(password));
    let stage2 = Sha1::digest(*stage1);
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(stage2);
    let mask = h.finalize();
    Zeroizing::new(stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect())
}

/// SHA256(password) XOR SHA256(SHA256(SHA256(password)), nonce); empty for an empty password.
pub fn scramble_sha256(nonce: &[u8], password: &[u8]) -> Zeroizing<Vec<u8>> {
    if password.is_empty() {
        return Zeroizing::new(Vec::new());
    }
    let stage1 = Zeroizing::new(Sha256::digest(password));
    let stage2 = Sha256::digest(*stage1);
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(nonce);
    let mask = h.finalize();
    Zeroizing::new(stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect())
}

/// The password in full: as it is (NUL-terminated) over TLS, else XORed with the nonce and
/// encrypted with the pinned RSA key (OAEP, as MySQL 8.0.5 and later expect).
fn full_password(
    plugin: &str,
    nonce: &[u8],
    creds: &Credentials<'_>,
) -> Result<Zeroizing<Vec<u8>>, AuthError> {
    let mut clear = Zeroizing::new(creds.password.to_vec());
    clear.push(0);
    if creds.tls {
        return Ok(clear);
    }
    let Some(pem) = creds.server_key else { return Err(AuthError::NeedsTls(plugin.to_owned())) };
    if nonce.is_empty() {
        return Err(AuthError::Unexpected);
    }
    for (i, b) in clear.iter_mut().enumerate() {
        *b ^= nonce[i % nonce.len()];
    }
    use rsa::pkcs8::DecodePublicKey;
    let key = rsa::RsaPublicKey::from_public_key_pem(pem.trim())
        .or_else(|_| {
            use rsa::pkcs1::DecodeRsaPublicKey;
            rsa::RsaPublicKey::from_pkcs1_pem(pem.trim())
        })
        .map_err(|e| AuthError::Key(e.to_string()))?;
    let encrypted = key
        .encrypt(&mut rsa::rand_core::OsRng, rsa::Oaep::new::<Sha1>(), &clear)
        .map_err(|e| AuthError::Key(e.to_string()))?;
    Ok(Zeroizing::new(encrypted))
}

/// The first answer for `plugin` with `nonce`.
fn answer(
    plugin: &[u8],
    nonce: &[u8],
    creds: &Credentials<'_>,
) -> Result<Zeroizing<Vec<u8>>, AuthError> {
    match plugin {
        NATIVE => Ok(scramble_native(nonce, creds.password)),
        CACHING_SHA2 => Ok(scramble_sha256(nonce, creds.password)),
        SHA256 if creds.password.is_empty() => Ok(Zeroizing::new(vec![0])),
        SHA256 | CLEAR => full_password(&String::from_utf8_lossy(plugin), nonce, creds),
        other => Err(AuthError::Plugin(String::from_utf8_lossy(other).chars().take(64).collect())),
    }
}

/// The plugin the first login answer is made for: the server's, or native when the relay
/// does not speak the server's (the server then switches to the account's plugin).
pub fn first_plugin(server_plugin: &[u8]) -> &'static [u8] {
    match server_plugin {
        CACHING_SHA2 => CACHING_SHA2,
        SHA256 => SHA256,
        _ => NATIVE,
    }
}

/// The first answer for the greeting's plugin (see [`first_plugin`]).
pub fn first_answer(
    server_plugin: &[u8],
    nonce: &[u8],
    creds: &Credentials<'_>,
) -> Result<Zeroizing<Vec<u8>>, AuthError> {
    answer(first_plugin(server_plugin), nonce, creds)
}

/// Runs the login after the first answer went out with sequence id `seq` and plugin `plugin`,
/// until the server's OK, which is returned.
pub async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    mut plugin: Vec<u8>,
    mut nonce: Vec<u8>,
    creds: &Credentials<'_>,
) -> Result<Packet, AuthError> {
    for _ in 0..MAX_ROUNDS {
        let p = packet::read(s).await?;
        let next = p.seq.wrapping_add(1);
        match p.payload.first() {
            Some(0x00) => return Ok(p),
            Some(0xff) => return Err(AuthError::Refused(p.payload.to_vec())),
            Some(0xfe) if p.payload.len() > 1 => {
                // AuthSwitchRequest: plugin name, NUL, the new nonce (often NUL-terminated).
                let rest = &p.payload[1..];
                let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                plugin = rest[..end].to_vec();
                nonce = rest.get(end + 1..).unwrap_or(&[]).to_vec();
                if nonce.last() == Some(&0) {
                    nonce.pop();
                }
                let a = answer(&plugin, &nonce, creds)?;
                packet::write(s, next, &a).await?;
            }
            Some(0x01) if plugin == CACHING_SHA2 => match p.payload.get(1) {
                Some(&FAST_AUTH_OK) => {}
                Some(&FULL_AUTH) => {
                    let a = full_password("caching_sha2_password", &nonce, creds)?;
                    packet::write(s, next, &a).await?;
                }
                _ => return Err(AuthError::Unexpected),
            },
            _ => return Err(AuthError::Unexpected),
        }
    }
    Err(AuthError::Unexpected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    // Vectors from mysql_common's tests (its scramble_native and scramble_sha256).
    const NONCE: [u8; 20] = [
        0x4e, 0x52, 0x33, 0x48, 0x50, 0x3a, 0x71, 0x49, 0x59, 0x61, 0x5f, 0x39, 0x3d, 0x64, 0x62,
        0x3f, 0x53, 0x64, 0x7b, 0x60,
    ];
    const PASSWORD: [u8; 8] = [0x47, 0x21, 0x69, 0x64, 0x65, 0x72, 0x32, 0x37];

    #[test]
    fn scrambles_match_known_vectors() {
        assert_eq!(
            *scramble_native(&NONCE, &PASSWORD),
            [
                0x09, 0xcf, 0xf8, 0x85, 0x5e, 0x9e, 0x70, 0x53, 0x40, 0xff, 0x22, 0x70, 0xd8, 0xfb,
                0x9f, 0xad, 0xba, 0x90, 0x6b, 0x70,
            ]
        );
        assert_eq!(
            *scramble_sha256(&NONCE, &PASSWORD),
            [
                0x4f, 0x97, 0xbb, 0xfd, 0x20, 0x24, 0x01, 0xc4, 0x2a, 0x69, 0xde, 0xaa, 0xe5, 0x3b,
                0xda, 0x07, 0x7e, 0xd7, 0x57, 0x85, 0x63, 0xc1, 0xa8, 0x0e, 0xb8, 0x16, 0xc8, 0x21,
                0x19, 0xb6, 0x8d, 0x2e,
            ]
        );
        assert!(scramble_native(&NONCE, b"").is_empty());
    }

    /// A server side that checks each packet the relay sends and answers from a script.
    async fn exchange(
        plugin: &[u8],
        creds: Credentials<'_>,
        script: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    ) -> Result<Packet, AuthError> {
        let (mut relay, mut server) = duplex(4096);
        let server_task = tokio::spawn(async move {
            // Packets the server sends first, then for each scripted step: expect, answer.
            let mut seq = 2u8;
            for (expect, reply) in script {
                if let Some(expect) = expect {
                    let got = packet::read(&mut server).await.unwrap();
                    assert_eq!(*got.payload, expect, "what the relay sent");
                    seq = got.seq.wrapping_add(1);
                }
                packet::write(&mut server, seq, &reply).await.unwrap();
                seq = seq.wrapping_add(1);
            }
        });
        let out = finish(&mut relay, plugin.to_vec(), NONCE.to_vec(), &creds).await;
        server_task.await.unwrap();
        out
    }

    fn creds(tls: bool, key: Option<&str>) -> Credentials<'_> {
        Credentials { password: &PASSWORD, tls, server_key: key }
    }

    #[tokio::test]
    async fn caching_sha2_fast_path_ends_with_the_servers_ok() {
        let ok = vec![0, 0, 0, 2, 0, 0, 0];
        let got = exchange(
            CACHING_SHA2,
            creds(false, None),
            vec![(None, vec![1, FAST_AUTH_OK]), (None, ok.clone())],
        )
        .await
        .unwrap();
        assert_eq!(*got.payload, ok);
    }

    #[tokio::test]
    async fn caching_sha2_full_login_sends_the_password_over_tls_only() {
        let ok = vec![0, 0, 0, 2, 0, 0, 0];
        let mut clear = PASSWORD.to_vec();
        clear.push(0);
        let got = exchange(
            CACHING_SHA2,
            creds(true, None),
            vec![(None, vec![1, FULL_AUTH]), (Some(clear), ok.clone())],
        )
        .await
        .unwrap();
        assert_eq!(*got.payload, ok);
        // Not TLS, no pinned key: refused before anything is sent.
        let e = exchange(CACHING_SHA2, creds(false, None), vec![(None, vec![1, FULL_AUTH])])
            .await
            .err()
            .unwrap();
        assert!(matches!(e, AuthError::NeedsTls(_)), "{e}");
    }

    #[tokio::test]
    async fn caching_sha2_full_login_encrypts_with_the_pinned_key() {
        use rsa::pkcs8::EncodePublicKey;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let pem = private.to_public_key().to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let (mut relay, mut server) = duplex(4096);
        let creds = creds(false, Some(&pem));
        let server_task = tokio::spawn(async move {
            packet::write(&mut server, 2, &[1, FULL_AUTH]).await.unwrap();
            let got = packet::read(&mut server).await.unwrap();
            let clear = private.decrypt(rsa::Oaep::new::<Sha1>(), &got.payload).unwrap();
            let mut want: Vec<u8> = PASSWORD.to_vec();
            want.push(0);
            for (i, b) in want.iter_mut().enumerate() {
                *b ^= NONCE[i % NONCE.len()];
            }
            assert_eq!(clear, want);
            packet::write(&mut server, got.seq + 1, &[0, 0, 0, 2, 0, 0, 0]).await.unwrap();
        });
        let got = finish(&mut relay, CACHING_SHA2.to_vec(), NONCE.to_vec(), &creds).await.unwrap();
        assert_eq!(got.payload[0], 0);
        server_task.await.unwrap();
    }

    #[tokio::test]
    async fn auth_switches_are_answered_with_the_new_nonce_and_refusals_passed_on() {
        let new_nonce: Vec<u8> = (30..50).collect();
        let mut switch = vec![0xfe];
        switch.extend_from_slice(NATIVE);
        switch.push(0);
        switch.extend_from_slice(&new_nonce);
        switch.push(0);
        let ok = vec![0, 0, 0, 2, 0, 0, 0];
        let got = exchange(
            CACHING_SHA2,
            creds(false, None),
            vec![
                (None, switch.clone()),
                (Some(scramble_native(&new_nonce, &PASSWORD).to_vec()), ok.clone()),
            ],
        )
        .await
        .unwrap();
        assert_eq!(*got.payload, ok);
        let denied = packet::err(1045, "28000", "Access denied for user 'app'");
        let e = exchange(NATIVE, creds(false, None), vec![(None, denied.clone())]).await.err();
        assert!(matches!(e, Some(AuthError::Refused(p)) if p == denied));
        // A plugin the relay does not speak.
        let mut switch = vec![0xfe];
        switch.extend_from_slice(b"client_ed25519\0abc");
        let e = exchange(NATIVE, creds(false, None), vec![(None, switch)]).await.err();
        assert!(matches!(e, Some(AuthError::Plugin(p)) if p == "client_ed25519"));
        // Cleartext never without TLS.
        let mut switch = vec![0xfe];
        switch.extend_from_slice(b"mysql_clear_password\0");
        let e = exchange(NATIVE, creds(false, None), vec![(None, switch)]).await.err();
        assert!(matches!(e, Some(AuthError::NeedsTls(_))));
    }
}
