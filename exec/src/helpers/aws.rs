//! `maestro-exec aws-credential-process [NAME]`: the `credential_process` of the AWS SDKs and
//! CLI. A profile in `~/.aws/config` with
//! `credential_process = maestro-exec aws-credential-process` makes every AWS tool take the
//! session's active aws secret (or the one named NAME) without variables in its environment.
//!
//! It prints the JSON that the SDKs read (`Version` 1, `AccessKeyId`, `SecretAccessKey`, and
//! `SessionToken` and `Expiration` when known) and exits 0; on failure it prints one line on
//! stderr, which the SDKs show in their error, and exits 1.

use std::ffi::OsString;
use std::io::{self, Write};

use maestro_wire::jsonline;
use maestro_wire::names::is_valid_secret_name;
use maestro_wire::sock::{Action, MaterialEntry, Response, SockErrorCode};
use serde::Serialize;
use zeroize::Zeroizing;

use super::HelperError;
use crate::client;
use crate::rfc3339;

pub const SUBCOMMAND: &str = "aws-credential-process";
/// What the SDKs take as failure.
const EXIT_FAILED: i32 = 1;
const USAGE: &str = "usage: maestro-exec aws-credential-process [NAME] (in ~/.aws/config: \
                     credential_process = maestro-exec aws-credential-process)";

/// The `credential_process` output format, version 1.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Credentials<'a> {
    version: u8,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<&'a str>,
}

/// Picks the secret to answer with: the named one, or the only active aws secret.
pub fn choose(name: Option<&str>, secrets: &[MaterialEntry]) -> Result<usize, HelperError> {
    match (name, secrets.len()) {
        (Some(name), _) => secrets
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| HelperError::NotAws(name.to_owned())),
        (None, 0) => Err(HelperError::NoAwsSecret),
        (None, 1) => Ok(0),
        (None, _) => {
            let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
            Err(HelperError::SeveralAwsSecrets(names.join(", ")))
        }
    }
}

/// The JSON line for one aws secret, in a zeroizing buffer.
pub fn render(entry: &MaterialEntry) -> Result<Zeroizing<Vec<u8>>, HelperError> {
    let field = |f: &'static str| {
        entry
            .fields
            .get(f)
            .map(|v| v.expose())
            .ok_or_else(|| HelperError::MissingField { name: entry.name.clone(), field: f })
    };
    // Only an RFC 3339 time is passed on: the SDKs parse it as ISO 8601.
    let expiration = entry.expires_at.as_deref().filter(|t| rfc3339::unix_seconds(t).is_some());
    let creds = Credentials {
        version: 1,
        access_key_id: field("access_key_id")?,
        secret_access_key: field("secret_access_key")?,
        session_token: entry.fields.get("session_token").map(|v| v.expose()),
        expiration,
    };
    jsonline::to_line(&creds).map_err(|_| HelperError::EncodeAnswer)
}

fn run(name: Option<&str>) -> Result<(), HelperError> {
    let action = Action::Material {
        kinds: vec!["aws".to_owned()],
        only: name.map(|n| vec![n.to_owned()]).unwrap_or_default(),
        command: Some(SUBCOMMAND.to_owned()),
    };
    let secrets = match (client::ask(&client::socket_path(), action)?, name) {
        (Response::Material { secrets }, _) => secrets,
        (Response::Error { code: SockErrorCode::NotActive, .. }, Some(name)) => {
            return Err(HelperError::NotActive(name.to_owned()));
        }
        (Response::Error { message, .. }, _) => return Err(HelperError::AskAgent(message)),
        _ => return Err(HelperError::UnexpectedAnswer),
    };
    let line = render(&secrets[choose(name, &secrets)?])?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(&line).and_then(|()| stdout.flush()).map_err(HelperError::WriteAnswer)
}

/// The helper; returns the exit status.
pub fn main(args: &[OsString]) -> i32 {
    let name = match args {
        [] => None,
        [name] => match name.to_str() {
            Some(n) if is_valid_secret_name(n) => Some(n),
            _ => {
                eprintln!(
                    "maestro-exec: {:?} is not a secret name (they look like AWS_PROD); {USAGE}",
                    name.to_string_lossy()
                );
                return EXIT_FAILED;
            }
        },
        _ => {
            eprintln!("maestro-exec: {USAGE}");
            return EXIT_FAILED;
        }
    };
    match run(name) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("maestro-exec aws-credential-process: {e}");
            EXIT_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use maestro_wire::SecretValue;

    use super::*;

    fn aws(name: &str, token: Option<&str>, expires: Option<&str>) -> MaterialEntry {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("access_key_id".to_owned(), SecretValue::from("AKIAPLANTED"));
        fields.insert("secret_access_key".to_owned(), SecretValue::from("planted/secret+key"));
        fields.insert("region".to_owned(), SecretValue::from("us-east-1"));
        if let Some(t) = token {
            fields.insert("session_token".to_owned(), SecretValue::from(t));
        }
        MaterialEntry {
            name: name.into(),
            kind: "aws".into(),
            fields,
            expires_at: expires.map(str::to_owned),
        }
    }

    #[test]
    fn renders_version_1_json() {
        let line = render(&aws("AWS_DEV", None, None)).unwrap();
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"Version\":1,\"AccessKeyId\":\"AKIAPLANTED\",\"SecretAccessKey\":\"planted/secret+key\"}\n"
        );
        let line = render(&aws("AWS_DEV", Some("tok"), Some("2030-01-01T00:00:00Z"))).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["SessionToken"], "tok");
        assert_eq!(v["Expiration"], "2030-01-01T00:00:00Z");
        let line = render(&aws("AWS_DEV", None, Some("next tuesday"))).unwrap();
        assert!(!std::str::from_utf8(&line).unwrap().contains("Expiration"));
    }

    #[test]
    fn chooses_one_secret_or_says_why_not() {
        let two = [aws("AWS_DEV", None, None), aws("AWS_PROD", None, None)];
        assert_eq!(choose(Some("AWS_PROD"), &two).unwrap(), 1);
        assert_eq!(choose(None, &two[..1]).unwrap(), 0);
        assert_eq!(
            choose(None, &two).unwrap_err().to_string(),
            "several aws secrets are active (AWS_DEV, AWS_PROD); name one: maestro-exec \
             aws-credential-process NAME"
        );
        assert!(choose(None, &[]).unwrap_err().to_string().starts_with("no aws secret is active"));
        assert_eq!(
            choose(Some("GH"), &[]).unwrap_err().to_string(),
            "secret GH is active but is not of kind aws"
        );
    }
}
