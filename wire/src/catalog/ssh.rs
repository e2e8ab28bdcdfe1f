//! SSH keys (catalog kind `ssh`): reading a private key as the user pasted it (OpenSSH or PEM,
//! maybe passphrase-protected), the `hosts` list of a key, and what a `known_hosts` text says a
//! host key belongs to.
//!
//! The parsing is the `ssh-key` crate's; errors name what is wrong in one line and never hold
//! key material. The agent uses the same functions to load a sealed key and to decide whether a
//! server (known by its host key, from OpenSSH's `session-bind@openssh.com`) is one of the
//! key's hosts.

use ssh_key::known_hosts::{HostPatterns, KnownHosts};
use ssh_key::{LineEnding, PrivateKey, public::KeyData};
use zeroize::Zeroizing;

const OPENSSH_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
/// The PEM labels OpenSSH reads besides its own format (PKCS#1 RSA, SEC1 EC, DSA, PKCS#8).
const PEM_LABELS: &[&str] =
    &["RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "PRIVATE KEY"];
/// A `hosts` list names at most this many patterns.
pub const MAX_HOST_PATTERNS: usize = 32;

/// What a pasted private key is.
pub enum KeyText {
    /// OpenSSH's own format, parsed (still encrypted when it has a passphrase).
    OpenSsh(Box<PrivateKey>),
    /// A PEM key (PKCS#1, SEC1, PKCS#8): well-formed, not parsed further (`ssh` reads it).
    Pem,
}

/// Reads a private key's text. The error is one line and holds no key material.
pub fn parse_key(text: &str) -> Result<KeyText, String> {
    let t = text.trim();
    if t.starts_with(OPENSSH_BEGIN) {
        return PrivateKey::from_openssh(t).map(|k| KeyText::OpenSsh(Box::new(k))).map_err(|e| {
            format!("is not an OpenSSH private key that can be read ({e}); paste the whole file, BEGIN and END lines included")
        });
    }
    let label = t
        .lines()
        .next()
        .and_then(|l| l.trim().strip_prefix("-----BEGIN "))
        .and_then(|l| l.strip_suffix("-----"));
    let Some(label) = label.filter(|l| PEM_LABELS.contains(l)) else {
        return Err(
            "is not a private key: it must start with -----BEGIN OPENSSH PRIVATE KEY----- \
                    (or a PEM RSA/EC/PKCS#8 private key); a public key (.pub) is not enough"
                .to_owned(),
        );
    };
    if t.contains("Proc-Type:") || t.contains("ENCRYPTED") {
        return Err("is an encrypted PEM key; convert it to the OpenSSH format with `ssh-keygen -p -f FILE` (which keeps its passphrase) and paste that".to_owned());
    }
    let end = format!("-----END {label}-----");
    let body: String =
        t.lines().skip(1).take_while(|l| l.trim() != end).flat_map(|l| l.trim().chars()).collect();
    let body = Zeroizing::new(body);
    use base64::Engine as _;
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(body.as_bytes()).map(Zeroizing::new);
    if !t.ends_with(&end) || decoded.map_or(true, |d| d.is_empty()) {
        return Err(format!(
            "is not a well-formed PEM key (the base64 body or the -----END {label}----- line is broken); paste the whole file"
        ));
    }
    Ok(KeyText::Pem)
}

/// Checks a key with its passphrase (if any): an encrypted OpenSSH key needs the right one, a
/// key without a passphrase must not be given one.
pub fn check_key(text: &str, passphrase: Option<&str>) -> Result<(), String> {
    match (parse_key(text)?, passphrase) {
        (KeyText::OpenSsh(key), Some(p)) if key.is_encrypted() => key
            .decrypt(p.as_bytes())
            .map(|_| ())
            .map_err(|_| "cannot be decrypted with the passphrase given; check the passphrase field".to_owned()),
        (KeyText::OpenSsh(key), None) if key.is_encrypted() => Err(
            "is protected by a passphrase; add --field passphrase=... (or remove it with `ssh-keygen -p -f FILE`)"
                .to_owned(),
        ),
        (_, Some(_)) => Err(
            "is not protected by a passphrase, yet one was given; drop the passphrase field".to_owned(),
        ),
        _ => Ok(()),
    }
}

/// The key as a file `ssh` reads without asking anything: decrypted (OpenSSH format) when it
/// has a passphrase, else as given; ending with a line break (OpenSSH needs one).
pub fn key_file(text: &str, passphrase: Option<&str>) -> Option<Zeroizing<String>> {
    if let (Some(p), Ok(KeyText::OpenSsh(key))) = (passphrase, parse_key(text))
        && key.is_encrypted()
    {
        let plain = key.decrypt(p.as_bytes()).ok()?;
        return plain.to_openssh(LineEnding::LF).ok();
    }
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 1));
    out.push_str(text.trim());
    out.push('\n');
    Some(out)
}

/// The decrypted key for the agent (a sealed key): OpenSSH format only.
pub fn load_key(text: &str, passphrase: Option<&str>) -> Result<PrivateKey, String> {
    match parse_key(text)? {
        KeyText::Pem => Err("is a PEM key; a sealed key must be in the OpenSSH format: convert it with `ssh-keygen -p -f FILE`".to_owned()),
        KeyText::OpenSsh(key) if key.is_encrypted() => {
            let p = passphrase.ok_or("is protected by a passphrase and none was given")?;
            key.decrypt(p.as_bytes()).map_err(|_| "cannot be decrypted with its passphrase".to_owned())
        }
        KeyText::OpenSsh(key) => Ok(*key),
    }
}

/// Whether the agent signs with this key: Ed25519 and ECDSA (RSA signing in `ssh-key` 0.6 is
/// not trusted; a plain RSA key works, `ssh` signs itself).
pub fn agent_can_sign(key: &PrivateKey) -> bool {
    matches!(
        key.key_data(),
        ssh_key::private::KeypairData::Ed25519(_) | ssh_key::private::KeypairData::Ecdsa(_)
    )
}

/// The patterns of a `hosts` value: split on commas and white space, lowercased.
pub fn host_patterns(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Checks a `hosts` value: host names or addresses, with `*` and `?` wildcards as in
/// ssh_config's `Host`.
pub fn check_hosts(text: &str) -> Result<(), String> {
    let patterns = host_patterns(text);
    if patterns.is_empty() {
        return Err("names no host; give host patterns separated by commas or spaces".to_owned());
    }
    if patterns.len() > MAX_HOST_PATTERNS {
        return Err(format!("names {} hosts; the limit is {MAX_HOST_PATTERNS}", patterns.len()));
    }
    for p in &patterns {
        let ok = p.len() <= 255
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.*?:_".contains(&b))
            && p.bytes().any(|b| b.is_ascii_alphanumeric());
        if !ok {
            let shown: String = p.chars().take(80).collect();
            return Err(format!(
                "has '{shown}', which is not a host pattern; use names or addresses with * and ? \
                 (git.example.com, *.corp.example, 10.0.0.?)"
            ));
        }
    }
    Ok(())
}

/// ssh_config-style matching: `*` any run of characters, `?` one character; no case.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&n[ni])) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The host of a known_hosts name: `[host]:port` gives `host`.
fn bare_host(name: &str) -> &str {
    name.strip_prefix('[').and_then(|r| r.split(']').next()).unwrap_or(name)
}

/// The host names `known_hosts` gives for `host_key` (plain entries only: a hashed name cannot
/// be read back; `@revoked` and `@cert-authority` lines are skipped), lowercased, without port.
pub fn names_for_key(known_hosts: &str, host_key: &KeyData) -> Vec<String> {
    let mut out = Vec::new();
    for entry in KnownHosts::new(known_hosts).flatten() {
        if entry.marker().is_some() || entry.public_key().key_data() != host_key {
            continue;
        }
        if let HostPatterns::Patterns(names) = entry.host_patterns() {
            for n in names {
                // Negations and wildcards in known_hosts do not name a host.
                if !n.starts_with('!') && !n.contains(['*', '?']) {
                    out.push(bare_host(n).to_ascii_lowercase());
                }
            }
        }
    }
    out
}

/// Whether a server with `host_key` is one of the `hosts` patterns, by the names `known_hosts`
/// gives that key. Returns the first matching name.
pub fn allowed_host(hosts: &str, known_hosts: &str, host_key: &KeyData) -> Option<String> {
    let patterns = host_patterns(hosts);
    names_for_key(known_hosts, host_key)
        .into_iter()
        .find(|name| patterns.iter().any(|p| glob(p, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway key made with `ssh-keygen -t ed25519 -N '' -C test` for these tests only.
    pub(crate) const ED25519: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACC7f+AdGxHo7H+GHcBkj6pLQauxz0262S/X1ye/4mGmAQAAAIhcTJy2XEyc
tgAAAAtzc2gtZWQyNTUxOQAAACC7f+AdGxHo7H+GHcBkj6pLQauxz0262S/X1ye/4mGmAQ
AAAEAS1bGqBxCzDNAM0UXhb5znyjZ/rCa7yijESWISV18sX7t/4B0bEejsf4YdwGSPqktB
q7HPTbrZL9fXJ7/iYaYBAAAABHRlc3QB
-----END OPENSSH PRIVATE KEY-----
";

    #[test]
    fn keys_are_read_and_mistakes_named() {
        assert!(check_key(ED25519, None).is_ok());
        let e = check_key(ED25519, Some("x")).unwrap_err();
        assert!(e.contains("not protected"), "{e}");
        let e = check_key("ssh-ed25519 AAAAC3Nza test", None).unwrap_err();
        assert!(e.contains("public key"), "{e}");
        let broken = ED25519.replace("QyNTUxOQAAACC7f+Ad", "QyNTUxOQAAACC");
        let e = check_key(&broken, None).unwrap_err();
        assert!(!e.contains('\n') && e.contains("OpenSSH"), "{e}");
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----\n";
        assert!(check_key(pem, None).is_ok());
        assert!(check_key(&pem.replace("-----END RSA PRIVATE KEY-----", ""), None).is_err());
        assert!(load_key(pem, None).is_err());
        let f = key_file(ED25519.trim_end(), None).unwrap();
        assert!(f.ends_with("-----\n"));
    }

    #[test]
    fn passphrases_are_checked_and_keys_decrypted() {
        let key = PrivateKey::from_openssh(ED25519).unwrap();
        let mut rng = ssh_key::rand_core::OsRng;
        let enc = key.encrypt(&mut rng, "pw").unwrap().to_openssh(LineEnding::LF).unwrap();
        assert!(check_key(&enc, Some("pw")).is_ok());
        assert!(check_key(&enc, Some("nope")).unwrap_err().contains("passphrase"));
        assert!(check_key(&enc, None).unwrap_err().contains("passphrase"));
        let file = key_file(&enc, Some("pw")).unwrap();
        assert!(!PrivateKey::from_openssh(file.as_str()).unwrap().is_encrypted());
        assert_eq!(load_key(&enc, Some("pw")).unwrap().public_key(), key.public_key());
    }

    #[test]
    fn a_sealed_key_must_be_one_the_agent_can_use() {
        use crate::SecretValue;
        use crate::catalog::kind;
        use crate::catalog::seal::{Exposure, SealError, check_agent_fields, check_exposure};
        let ssh = kind("ssh").unwrap();
        let fields = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), SecretValue::from(*v)))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----\n";
        let kh = "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILt/4B0bEejsf4YdwGSPqktBq7HPTbrZL9fXJ7/iYaYB";
        let ok = fields(&[("private_key", ED25519)]);
        assert_eq!(check_agent_fields(ssh, Exposure::Sealed, &ok), Ok(()));
        let pem_key = fields(&[("private_key", pem)]);
        let e = check_agent_fields(ssh, Exposure::Sealed, &pem_key).unwrap_err().to_string();
        assert!(e.contains("PEM") && e.contains("ssh-keygen -p"), "{e}");
        // A plain PEM key is fine: ssh reads it.
        assert_eq!(check_agent_fields(ssh, Exposure::Plain, &pem_key), Ok(()));
        let no_kh = fields(&[("private_key", ED25519), ("hosts", "git.example.com")]);
        let e = check_agent_fields(ssh, Exposure::Sealed, &no_kh).unwrap_err().to_string();
        assert!(e.contains("known_hosts"), "{e}");
        let with_kh =
            fields(&[("private_key", ED25519), ("hosts", "git.example.com"), ("known_hosts", kh)]);
        assert_eq!(check_agent_fields(ssh, Exposure::Sealed, &with_kh), Ok(()));
        // --allow-host is not how a sealed key names its hosts.
        assert_eq!(check_exposure(ssh, Exposure::Sealed, None, &[]), Ok(()));
        assert!(matches!(
            check_exposure(ssh, Exposure::Sealed, None, &["git.example.com".into()]),
            Err(SealError::HostsInField { .. })
        ));
    }

    #[test]
    fn host_lists_and_globs() {
        assert!(check_hosts("git.example.com, *.corp.example 10.0.0.?").is_ok());
        assert!(check_hosts(" , ").is_err());
        assert!(check_hosts("git.example.com/x").is_err());
        assert!(glob("*.corp.example", "a.b.corp.example"));
        assert!(!glob("*.corp.example", "corp.example"));
        assert!(glob("10.0.0.?", "10.0.0.7"));
        assert!(!glob("10.0.0.?", "10.0.0.17"));
        assert!(glob("GIT.example.com", "git.example.com"));
        assert!(!glob("git.example.com", "git.example.com.evil"));
    }

    #[test]
    fn known_hosts_names_a_key() {
        let key = PrivateKey::from_openssh(ED25519).unwrap();
        let public = key.public_key().to_openssh().unwrap();
        let kh = format!(
            "# comment\n[127.0.0.1]:2222,git.example.com {public}\n@revoked evil.example.com {public}\n|1|c2FsdA==|aGFzaA== {public}\n"
        );
        let data = key.public_key().key_data();
        assert_eq!(names_for_key(&kh, data), ["127.0.0.1", "git.example.com"]);
        assert_eq!(allowed_host("*.example.com", &kh, data).as_deref(), Some("git.example.com"));
        assert_eq!(allowed_host("other.example.com", &kh, data), None);
        assert_eq!(allowed_host("127.0.0.1", "", data), None);
    }
}
