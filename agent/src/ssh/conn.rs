//! One ssh-agent connection: the protocol (framing bounded here, messages decoded and encoded by
//! `ssh-agent-lib`), identity listing, `session-bind@openssh.com`, and signing.
//!
//! What `hosts` enforces, precisely: a signature is given only when the connection carries a
//! session binding (OpenSSH 8.9 and later send one before authenticating) whose server
//! signature over the session id verifies with the bound host key, the binding is not for a
//! forwarded agent, the data to sign starts with that same session id (an SSH user
//! authentication request is bound to its session), and the key's `known_hosts` lists that
//! host key under a name matching one of `hosts` (plain names only: hashed known_hosts lines
//! cannot be read back). A client that does not bind (an old OpenSSH, another SSH library) gets
//! no signature from a key limited to hosts. Without `hosts`, every signature request of the
//! sandbox user is answered (and recorded).

use std::sync::Arc;
use std::time::Duration;

use maestro_wire::agent_api::UsageAction;
use maestro_wire::catalog::ssh::{allowed_host, names_for_key};
use ssh_agent_lib::proto::extension::SessionBind;
use ssh_agent_lib::proto::{Extension, Identity, PublicCredential, Request, Response, SignRequest};
use ssh_agent_lib::ssh_encoding::{Decode, Encode};
use ssh_key::HashAlg;
use ssh_key::public::KeyData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

use super::Shared;
use crate::dispatch::Peer;
use crate::proxy::audit::report;

/// OpenSSH's own agent refuses messages longer than this (`AGENT_MAX_LEN`).
pub const MAX_MESSAGE: usize = 256 * 1024;
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(300);
/// Session bindings kept per connection (OpenSSH sends one per hop).
const MAX_BINDINGS: usize = 16;
const SESSION_BIND: &str = "session-bind@openssh.com";

/// A verified `session-bind@openssh.com`.
struct Binding {
    host_key: KeyData,
    session_id: Vec<u8>,
    forwarding: bool,
}

/// Serves one connection until it closes, errs, idles or is aborted.
pub async fn serve(mut stream: UnixStream, uid: u32, pid: Option<u32>, shared: Arc<Shared>) {
    let mut bindings: Vec<Binding> = Vec::new();
    let mut peer: Option<Peer> = None;
    loop {
        let message = match tokio::time::timeout(IDLE, read_message(&mut stream)).await {
            Ok(Ok(Some(m))) => m,
            _ => return,
        };
        let response = match Request::decode(&mut &message[..]) {
            Ok(Request::RequestIdentities) => Response::IdentitiesAnswer(vec![Identity {
                credential: PublicCredential::Key(
                    shared.key.private.public_key().key_data().clone(),
                ),
                comment: shared.key.name.clone(),
            }]),
            Ok(Request::SignRequest(request)) => {
                if peer.is_none() {
                    peer = Some(
                        tokio::task::spawn_blocking(move || Peer::identify(uid, pid))
                            .await
                            .unwrap_or_else(|_| Peer::identify(uid, None)),
                    );
                }
                let who = peer.as_ref().map_or_else(|| Peer::identify(uid, pid), Clone::clone);
                sign(&shared, &bindings, &who, request)
            }
            Ok(Request::Extension(ext)) if ext.name == SESSION_BIND => bind(&mut bindings, &ext),
            // Adding, removing, locking, smartcards, other extensions: this agent holds one
            // key the sandbox cannot change.
            _ => Response::Failure,
        };
        if write_message(&mut stream, &response).await.is_err() {
            return;
        }
    }
}

/// Reads one message (without its length); `None` at the end of the stream.
async fn read_message(stream: &mut UnixStream) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_MESSAGE {
        return Err(std::io::Error::other("message length out of bounds"));
    }
    let mut body = Zeroizing::new(vec![0u8; len]);
    stream.read_exact(&mut body).await?;
    Ok(Some(body))
}

async fn write_message(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let mut out = Vec::new();
    let encoded = response
        .encoded_len()
        .and_then(|len| (len as u32).encode(&mut out))
        .and_then(|()| response.encode(&mut out));
    if encoded.is_err() {
        // Nothing that fails to encode is sent half; the client gets a plain failure.
        out.clear();
        out.extend_from_slice(&[0, 0, 0, 1, 5]);
    }
    stream.write_all(&out).await
}

/// Records a verified session binding.
fn bind(bindings: &mut Vec<Binding>, ext: &Extension) -> Response {
    let Ok(Some(b)) = ext.parse_message::<SessionBind>() else { return Response::Failure };
    if b.verify_signature().is_err() || bindings.len() >= MAX_BINDINGS {
        return Response::Failure;
    }
    bindings.push(Binding {
        host_key: b.host_key,
        session_id: b.session_id,
        forwarding: b.is_forwarding,
    });
    Response::Success
}

/// The session id an SSH user-authentication request starts with (an SSH string).
fn session_id_of(data: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    data.get(4..4 + len)
}

/// The server a signature is for, by name where known_hosts gives one, else by fingerprint.
fn server_of(shared: &Shared, binding: Option<&Binding>) -> String {
    let Some(b) = binding else {
        return "a server the client did not name (no session binding)".to_owned();
    };
    names_for_key(&shared.key.known_hosts, &b.host_key).into_iter().next().unwrap_or_else(|| {
        format!("the server with host key {}", b.host_key.fingerprint(HashAlg::Sha256))
    })
}

/// Decides, records and signs.
fn sign(shared: &Shared, bindings: &[Binding], peer: &Peer, request: SignRequest) -> Response {
    let key = &shared.key;
    if request.credential.key_data() != key.private.public_key().key_data() {
        return Response::Failure;
    }
    let bound = session_id_of(&request.data)
        .and_then(|id| bindings.iter().rev().find(|b| b.session_id == id));
    let host = match &key.hosts {
        None => server_of(shared, bound),
        Some(hosts) => {
            let verdict = match bound {
                None => Err("the client did not bind the request to an SSH session (session-bind@openssh.com; OpenSSH 8.9 or later does)".to_owned()),
                Some(_) if bindings.iter().any(|b| b.forwarding) => {
                    Err("the key is used through a forwarded agent".to_owned())
                }
                Some(b) => allowed_host(hosts, &key.known_hosts, &b.host_key).ok_or_else(|| {
                    format!("{} is not one of the key's hosts ({hosts})", server_of(shared, Some(b)))
                }),
            };
            match verdict {
                Ok(host) => host,
                Err(why) => {
                    tracing::warn!(secret = %key.name, uid = peer.uid, pid = peer.pid, "ssh signature refused: {why}");
                    shared.usage.push_denial(report(
                        peer,
                        UsageAction::Denied,
                        Some(&key.name),
                        format!("ssh signature refused: {why}"),
                    ));
                    return Response::Failure;
                }
            }
        }
    };
    // Fail closed: a signature that cannot be recorded is not given.
    let record =
        report(peer, UsageAction::Injected, Some(&key.name), format!("ssh signature for {host}"));
    if shared.usage.push(record).is_err() {
        tracing::warn!(secret = %key.name, "ssh signature refused: the usage queue is full");
        return Response::Failure;
    }
    match signature::Signer::try_sign(&key.private, &request.data) {
        Ok(sig) => {
            shared.signed_for(peer.pid);
            Response::SignResponse(sig)
        }
        Err(_) => Response::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::Key;
    use crate::usage::UsageQueue;
    use maestro_wire::agent_api::UsageReport;
    use signature::{Signer as _, Verifier as _};
    use ssh_key::{Algorithm, PrivateKey, Signature};

    fn random_key() -> PrivateKey {
        PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap()
    }

    fn shared(key: &PrivateKey, hosts: Option<(&str, String)>) -> Arc<Shared> {
        let (hosts, known_hosts) = match hosts {
            Some((h, kh)) => (Some(h.to_owned()), kh),
            None => (None, String::new()),
        };
        Arc::new(Shared {
            key: Key { name: "DEPLOY".into(), private: key.clone(), hosts, known_hosts },
            usage: UsageQueue::new(64),
            signers: std::sync::Mutex::new(Vec::new()),
        })
    }

    async fn ask(c: &mut UnixStream, request: &Request) -> Option<Response> {
        let mut out = Vec::new();
        (request.encoded_len().unwrap() as u32).encode(&mut out).unwrap();
        request.encode(&mut out).unwrap();
        c.write_all(&out).await.ok()?;
        let mut len = [0u8; 4];
        c.read_exact(&mut len).await.ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        c.read_exact(&mut body).await.ok()?;
        Some(Response::decode(&mut &body[..]).unwrap())
    }

    fn connect(shared: &Arc<Shared>) -> UnixStream {
        let (client, server) = UnixStream::pair().unwrap();
        tokio::spawn(serve(server, 1000, None, shared.clone()));
        client
    }

    fn sign_request(key: &PrivateKey, data: &[u8]) -> Request {
        Request::SignRequest(SignRequest {
            credential: PublicCredential::Key(key.public_key().key_data().clone()),
            data: data.to_vec(),
            flags: 0,
        })
    }

    /// A `session-bind@openssh.com` for `session_id`, signed by `signer` but naming `host`.
    fn binding(host: &PrivateKey, signer: &PrivateKey, session_id: &[u8]) -> Request {
        let signature: Signature = signer.try_sign(session_id).unwrap();
        Request::Extension(
            Extension::new_message(SessionBind {
                host_key: host.public_key().key_data().clone(),
                session_id: session_id.to_vec(),
                signature,
                is_forwarding: false,
            })
            .unwrap(),
        )
    }

    /// User-authentication data of session `id` (what ssh asks the agent to sign).
    fn userauth(id: &[u8]) -> Vec<u8> {
        let mut d = (id.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(id);
        d.extend_from_slice(&[50, 0, 0, 0, 4, b'u', b's', b'e', b'r']);
        d
    }

    /// The records' actions and details, one per use (the queue coalesces repeated ones).
    fn details(usage: &UsageQueue) -> Vec<(UsageAction, String)> {
        usage
            .take(100)
            .into_iter()
            .flat_map(|r: UsageReport| {
                let n = r.count.unwrap_or(1) as usize;
                std::iter::repeat_n((r.action, r.detail.unwrap_or_default()), n)
            })
            .collect()
    }

    #[tokio::test]
    async fn lists_the_public_half_and_signs_for_the_sandbox_user_recording_each_signature() {
        let key = random_key();
        let shared = shared(&key, None);
        let mut c = connect(&shared);
        let Some(Response::IdentitiesAnswer(ids)) = ask(&mut c, &Request::RequestIdentities).await
        else {
            panic!("no identities")
        };
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].credential.key_data(), key.public_key().key_data());
        assert_eq!(ids[0].comment, "DEPLOY");
        let data = userauth(b"session-1");
        let Some(Response::SignResponse(sig)) = ask(&mut c, &sign_request(&key, &data)).await
        else {
            panic!("no signature")
        };
        key.public_key().key_data().verify(&data, &sig).unwrap();
        // Another key's request, and requests that would change the agent: failures.
        let other = random_key();
        assert!(matches!(ask(&mut c, &sign_request(&other, &data)).await, Some(Response::Failure)));
        assert!(matches!(
            ask(&mut c, &Request::RemoveAllIdentities).await,
            Some(Response::Failure)
        ));
        assert!(matches!(ask(&mut c, &Request::Lock("x".into())).await, Some(Response::Failure)));
        let recorded = details(&shared.usage);
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(recorded[0].0, UsageAction::Injected);
        assert_eq!(
            recorded[0].1,
            "ssh signature for a server the client did not name (no session binding)"
        );
    }

    #[tokio::test]
    async fn a_key_limited_to_hosts_signs_only_inside_a_verified_binding_to_one_of_them() {
        let key = random_key();
        let host = random_key();
        let known = format!(
            "git.example.com,[10.0.0.5]:2222 {}\n",
            host.public_key().to_openssh().unwrap()
        );
        let shared = shared(&key, Some(("*.example.com", known.clone())));
        let mut c = connect(&shared);
        let data = userauth(b"session-A");
        // No binding: refused.
        assert!(matches!(ask(&mut c, &sign_request(&key, &data)).await, Some(Response::Failure)));
        // A forged binding (the session id signed by another key than the host key it names).
        let forger = random_key();
        assert!(matches!(
            ask(&mut c, &binding(&host, &forger, b"session-A")).await,
            Some(Response::Failure)
        ));
        assert!(matches!(ask(&mut c, &sign_request(&key, &data)).await, Some(Response::Failure)));
        // A real binding: signatures for that session only.
        assert!(matches!(
            ask(&mut c, &binding(&host, &host, b"session-A")).await,
            Some(Response::Success)
        ));
        assert!(matches!(
            ask(&mut c, &sign_request(&key, &data)).await,
            Some(Response::SignResponse(_))
        ));
        let elsewhere = userauth(b"session-B");
        assert!(matches!(
            ask(&mut c, &sign_request(&key, &elsewhere)).await,
            Some(Response::Failure)
        ));
        let recorded = details(&shared.usage);
        assert!(
            recorded.contains(&(UsageAction::Injected, "ssh signature for git.example.com".into())),
            "{recorded:?}"
        );
        assert_eq!(
            recorded.iter().filter(|(a, _)| *a == UsageAction::Denied).count(),
            3,
            "{recorded:?}"
        );

        // A server known_hosts names outside the hosts: refused, named in the record.
        let shared = crate::ssh::conn::tests::shared(&key, Some(("other.example.org", known)));
        let mut c = connect(&shared);
        assert!(matches!(ask(&mut c, &binding(&host, &host, b"s")).await, Some(Response::Success)));
        assert!(matches!(
            ask(&mut c, &sign_request(&key, &userauth(b"s"))).await,
            Some(Response::Failure)
        ));
        let recorded = details(&shared.usage);
        assert!(
            recorded[0].1.contains("git.example.com is not one of the key's hosts"),
            "{recorded:?}"
        );
        // A host key known_hosts does not list: named by its fingerprint.
        let stranger = random_key();
        let mut c = connect(&shared);
        assert!(matches!(
            ask(&mut c, &binding(&stranger, &stranger, b"t")).await,
            Some(Response::Success)
        ));
        assert!(matches!(
            ask(&mut c, &sign_request(&key, &userauth(b"t"))).await,
            Some(Response::Failure)
        ));
        let recorded = details(&shared.usage);
        assert!(recorded[0].1.contains("host key SHA256:"), "{recorded:?}");
    }

    #[tokio::test]
    async fn ecdsa_keys_sign_too() {
        for curve in [ssh_key::EcdsaCurve::NistP256, ssh_key::EcdsaCurve::NistP384] {
            let key =
                PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ecdsa { curve })
                    .unwrap();
            assert!(maestro_wire::catalog::ssh::agent_can_sign(&key));
            let shared = shared(&key, None);
            let mut c = connect(&shared);
            let data = userauth(b"session-ecdsa");
            let Some(Response::SignResponse(sig)) = ask(&mut c, &sign_request(&key, &data)).await
            else {
                panic!("no signature for {curve:?}")
            };
            key.public_key().key_data().verify(&data, &sig).unwrap();
        }
    }

    #[tokio::test]
    async fn oversized_or_garbled_messages_end_the_connection_or_fail() {
        let key = random_key();
        let shared = shared(&key, None);
        let mut c = connect(&shared);
        // An unknown message type: a failure answer, the connection stays.
        c.write_all(&[0, 0, 0, 1, 200]).await.unwrap();
        let mut answer = [0u8; 5];
        c.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, [0, 0, 0, 1, 5]);
        // A length over the limit: closed without reading on.
        c.write_all(&((MAX_MESSAGE as u32 + 1).to_be_bytes())).await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
        // A zero length too.
        let mut c = connect(&shared);
        c.write_all(&[0, 0, 0, 0]).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    }

    #[test]
    fn session_ids_are_read_from_userauth_data() {
        let mut data = vec![0, 0, 0, 3, b'a', b'b', b'c', 50];
        assert_eq!(session_id_of(&data), Some(&b"abc"[..]));
        data.truncate(5);
        assert_eq!(session_id_of(&data), None);
        assert_eq!(session_id_of(&[0xff, 0xff, 0xff, 0xff]), None);
    }
}
