//! Decoy credentials (`maestro sessions create --decoys`): the values the agent serves for the
//! decoys of [`maestro_wire::decoys::DECOYS`], made once at start from the system's random
//! source, real-looking and useless (no provider ever issued them).
//!
//! * `aws-prod-admin/credentials`: an AWS shared-credentials file (`[default]`, an `AKIA` key id
//!   of 16 more upper-case letters and digits, a 40-character secret key);
//! * `deploy-token/token`: a GitHub-style token (`ghp_` and 36 letters and digits).
//!
//! They are files under the mount only: no variable, and not in the socket's list (so
//! `maestro-exec --list` neither lists them nor says they are decoys; an attacker listing the
//! mount sees a directory like any secret's). Every open of one, by anyone, is reported at once
//! as [`maestro_wire::agent_api::UsageAction::DecoyRead`] ([`crate::usage::FsObserver`]).
//! Like every value, they live in [`SecretValue`]s and are never logged.

use maestro_fs::FileEntry;
use maestro_wire::SecretValue;
use maestro_wire::decoys::{DECOYS, decoy};

/// Upper-case letters and digits (an AWS access key id's alphabet).
const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// An AWS secret access key's alphabet (base64).
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// A GitHub token's alphabet.
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The system's random source failed: decoys cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make decoy credentials: the system's random source failed")]
pub struct RandomFailed;

/// The decoys' files and values, made once per agent.
#[derive(Debug, Clone)]
pub struct DecoySet {
    /// One per decoy file: path under the mount, decoy name, content.
    files: Vec<FileEntry>,
}

/// `len` characters of `alphabet`, uniformly (rejection sampling: no modulo bias).
fn random_text(alphabet: &[u8], len: usize) -> Result<String, RandomFailed> {
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|_| RandomFailed)?;
        for b in buf {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
            }
        }
    }
    Ok(out)
}

impl DecoySet {
    /// New random values for every decoy.
    pub fn generate() -> Result<DecoySet, RandomFailed> {
        let key_id = SecretValue::new(format!("AKIA{}", random_text(UPPER_DIGITS, 16)?));
        let secret_key = SecretValue::new(random_text(BASE64, 40)?);
        let token = SecretValue::new(format!("ghp_{}", random_text(ALNUM, 36)?));
        let credentials = SecretValue::new(format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            key_id.expose(),
            secret_key.expose()
        ));
        let mut files = Vec::new();
        for d in DECOYS {
            for file in d.files {
                let content = match (d.imitates, *file) {
                    ("aws", "credentials") => credentials.clone(),
                    _ => SecretValue::new(format!("{}\n", token.expose())),
                };
                files.push(FileEntry {
                    path: format!("{}/{file}", d.name),
                    secret: d.name.to_owned(),
                    content,
                });
            }
        }
        Ok(DecoySet { files })
    }

    /// The decoy files to serve next to real ones: a decoy named like a real secret, or with a
    /// file where a real one is, is left out (the real secret wins).
    pub fn files_beside(&self, real_names: &[String], real_paths: &[&str]) -> Vec<FileEntry> {
        self.files
            .iter()
            .filter(|f| !real_names.contains(&f.secret))
            .filter(|f| {
                !real_paths.iter().any(|p| {
                    *p == f.path || p.starts_with(&format!("{}/", f.secret)) || *p == f.secret
                })
            })
            .cloned()
            .collect()
    }
}

/// Whether `secret` (an [`maestro_fs::Access`]'s secret) is a decoy's name. Real secret names
/// are upper case (`[A-Z][A-Z0-9_]*`) and decoy names are not, so the two never mix up.
pub fn is_decoy(secret: &str) -> bool {
    decoy(secret).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(set: &DecoySet, path: &str) -> String {
        set.files.iter().find(|f| f.path == path).unwrap().content.expose().to_owned()
    }

    #[test]
    fn decoys_look_like_real_credentials_and_differ_per_agent() {
        let a = DecoySet::generate().unwrap();
        let creds = content(&a, "aws-prod-admin/credentials");
        let lines: Vec<&str> = creds.lines().collect();
        assert_eq!(lines[0], "[default]");
        let key_id = lines[1].strip_prefix("aws_access_key_id = ").unwrap();
        assert!(key_id.starts_with("AKIA") && key_id.len() == 20, "{key_id}");
        assert!(key_id.bytes().all(|b| UPPER_DIGITS.contains(&b)));
        let secret = lines[2].strip_prefix("aws_secret_access_key = ").unwrap();
        assert_eq!(secret.len(), 40);
        assert!(secret.bytes().all(|b| BASE64.contains(&b)));
        let token = content(&a, "deploy-token/token");
        let token = token.trim_end();
        assert!(token.starts_with("ghp_") && token.len() == 40, "{token}");
        assert!(token[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        let b = DecoySet::generate().unwrap();
        assert_ne!(content(&a, "deploy-token/token"), content(&b, "deploy-token/token"));
        // Never in a Debug print (a log line).
        assert!(!format!("{a:?}").contains(token));
    }

    #[test]
    fn a_real_secret_wins_over_a_decoy_of_its_name_or_path() {
        let set = DecoySet::generate().unwrap();
        let all: Vec<String> = set.files_beside(&[], &[]).into_iter().map(|f| f.path).collect();
        assert_eq!(all, ["aws-prod-admin/credentials", "deploy-token/token"]);
        let named = set.files_beside(&["deploy-token".to_owned()], &[]);
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].secret, "aws-prod-admin");
        let pathed = set.files_beside(&[], &["aws-prod-admin"]);
        assert_eq!(pathed.len(), 1);
        assert_eq!(pathed[0].secret, "deploy-token");
        assert!(is_decoy("aws-prod-admin") && !is_decoy("AWS_PROD") && !is_decoy(""));
    }
}
