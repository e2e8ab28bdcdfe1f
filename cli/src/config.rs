//! Where the broker is, which CA to trust and which token to present.
//!
//! Precedence for each setting: the flag, then its environment variable, then a file in the
//! broker's data directory (`--data-dir`, `$MAESTRO_DATA_DIR`, or the same per-user default as
//! `maestro-broker serve`: see `maestro_wire::datadir`), so that a user running the broker
//! locally needs no setup at all.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use maestro_wire::SecretValue;
use reqwest::Url;
use zeroize::Zeroizing;

use crate::args::GlobalArgs;

/// The broker's default address, as `maestro-broker serve` listens by default.
pub const DEFAULT_URL: &str = "https://127.0.0.1:8443";
/// The data directory used when no default can be formed (no `HOME`): the one before defaults
/// were per user, relative to the working directory.
pub const FALLBACK_DATA_DIR: &str = "maestro-data";
/// Largest CA bundle or token file read.
const MAX_CA_BYTES: u64 = 1024 * 1024;
const MAX_TOKEN_BYTES: u64 = 4096;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid broker URL '{url}' ({reason}); set MAESTRO_URL to e.g. {DEFAULT_URL}")]
    BadUrl { url: String, reason: String },
    #[error("broker URL '{0}' is not https; the token must not travel in clear, use https://")]
    NotHttps(String),
    #[error(
        "cannot read the CA certificate {path} ({source}); set MAESTRO_CA to the broker's ca.pem"
    )]
    ReadCa { path: String, source: io::Error },
    #[error(
        "cannot read the token file {path} ({source}); set MAESTRO_TOKEN_FILE to a readable file"
    )]
    ReadToken { path: String, source: io::Error },
    #[error("the token in {0} is empty; write the API token into it")]
    EmptyToken(String),
    #[error(
        "no API token: set MAESTRO_TOKEN or MAESTRO_TOKEN_FILE (`maestro-broker user add NAME` \
         prints one), or run where {0} exists"
    )]
    NoToken(String),
}

/// Where a setting came from, so that errors can name what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env(&'static str),
    DataDir(PathBuf),
}

/// The broker's CA certificate, as read.
#[derive(Debug, Clone)]
pub struct CaFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
    pub origin: Origin,
}

/// Everything the client needs to reach the broker.
#[derive(Debug)]
pub struct Config {
    /// The URL as the user wrote it, without a trailing slash (what a bundle records).
    pub url_text: String,
    pub url: Url,
    pub ca: Option<CaFile>,
    /// The token, or the one-line error to show if a command needs one (`maestro kinds`
    /// works without).
    pub token: Result<SecretValue, String>,
}

impl Config {
    /// Resolves the configuration from the flags and the process environment.
    pub fn load(global: &GlobalArgs) -> Result<Self, ConfigError> {
        Self::resolve(global, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// [`Config::load`] with the environment given, for tests.
    pub fn resolve(
        global: &GlobalArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let data_dir = global
            .data_dir
            .clone()
            .or_else(|| env("MAESTRO_DATA_DIR").map(PathBuf::from))
            .or_else(|| {
                maestro_wire::datadir::default_data_dir(nix::unistd::geteuid().is_root(), |k| {
                    env(k).map(Into::into)
                })
            })
            .unwrap_or_else(|| PathBuf::from(FALLBACK_DATA_DIR));

        let url_text = global
            .url
            .clone()
            .or_else(|| env("MAESTRO_URL"))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let url_text = url_text.trim().trim_end_matches('/').to_owned();
        let url = Url::parse(&url_text)
            .map_err(|e| ConfigError::BadUrl { url: url_text.clone(), reason: e.to_string() })?;
        if url.scheme() != "https" {
            return Err(ConfigError::NotHttps(url_text));
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(ConfigError::BadUrl { url: url_text, reason: "no host".to_owned() });
        }

        let ca_choice = match (&global.ca, env("MAESTRO_CA")) {
            (Some(path), _) => Some((path.clone(), Origin::Flag)),
            (None, Some(path)) => Some((PathBuf::from(path), Origin::Env("MAESTRO_CA"))),
            (None, None) => {
                let path = data_dir.join("ca.pem");
                path.is_file().then(|| (path, Origin::DataDir(data_dir.clone())))
            }
        };
        let ca = match ca_choice {
            None => None,
            Some((path, origin)) => {
                let pem = read_small(&path, MAX_CA_BYTES).map_err(|source| {
                    ConfigError::ReadCa { path: path.display().to_string(), source }
                })?;
                Some(CaFile { path, pem: pem.to_vec(), origin })
            }
        };

        let token = Self::token(global, &env, &data_dir);
        Ok(Self { url_text, url, ca, token })
    }

    /// The token, or the one-line error to show when a command needs it. A token file that
    /// exists but cannot be read is an error at once.
    fn token(
        global: &GlobalArgs,
        env: &impl Fn(&str) -> Option<String>,
        data_dir: &Path,
    ) -> Result<SecretValue, String> {
        let from_file = |path: &Path| -> Result<SecretValue, String> {
            let bytes = read_small(path, MAX_TOKEN_BYTES).map_err(|source| {
                ConfigError::ReadToken { path: path.display().to_string(), source }.to_string()
            })?;
            let text = std::str::from_utf8(&bytes).map_err(|_| {
                ConfigError::ReadToken {
                    path: path.display().to_string(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
                }
                .to_string()
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(ConfigError::EmptyToken(path.display().to_string()).to_string());
            }
            Ok(SecretValue::from(token))
        };
        if let Some(path) = &global.token_file {
            return from_file(path);
        }
        if let Some(token) = env("MAESTRO_TOKEN") {
            let token = Zeroizing::new(token);
            return Ok(SecretValue::from(token.trim()));
        }
        if let Some(path) = env("MAESTRO_TOKEN_FILE") {
            return from_file(Path::new(&path));
        }
        let path = data_dir.join("admin.token");
        if path.is_file() {
            return from_file(&path);
        }
        Err(ConfigError::NoToken(path.display().to_string()).to_string())
    }
}

/// Reads a small file whole, refusing one larger than `max` bytes.
fn read_small(path: &Path, max: u64) -> io::Result<Zeroizing<Vec<u8>>> {
    let file = File::open(path)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(4096));
    file.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn global() -> GlobalArgs {
        GlobalArgs { url: None, ca: None, token_file: None, data_dir: None }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_without_anything() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = global();
        g.data_dir = Some(dir.path().join("none"));
        let c = Config::resolve(&g, env_of(&[])).unwrap();
        assert_eq!(c.url_text, DEFAULT_URL);
        assert!(c.ca.is_none());
        let e = c.token.unwrap_err();
        assert!(e.contains("MAESTRO_TOKEN") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn data_dir_fallbacks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "PEM").unwrap();
        std::fs::write(dir.path().join("admin.token"), "tok-123\n").unwrap();
        let env = env_of(&[("MAESTRO_DATA_DIR", dir.path().to_str().unwrap())]);
        let c = Config::resolve(&global(), env).unwrap();
        let ca = c.ca.unwrap();
        assert_eq!(ca.pem, b"PEM");
        assert_eq!(ca.origin, Origin::DataDir(dir.path().to_owned()));
        assert_eq!(c.token.unwrap().expose(), "tok-123");
    }

    #[test]
    fn precedence_flag_env_datadir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), "from-dir").unwrap();
        let tf = dir.path().join("t");
        std::fs::write(&tf, "from-token-file").unwrap();
        let dd = dir.path().to_str().unwrap();
        let env = env_of(&[("MAESTRO_DATA_DIR", dd), ("MAESTRO_TOKEN", "from-env")]);
        assert_eq!(Config::resolve(&global(), env).unwrap().token.unwrap().expose(), "from-env");
        let env = env_of(&[("MAESTRO_DATA_DIR", dd), ("MAESTRO_TOKEN_FILE", tf.to_str().unwrap())]);
        let c = Config::resolve(&global(), env).unwrap();
        assert_eq!(c.token.unwrap().expose(), "from-token-file");
        let mut g = global();
        g.token_file = Some(tf.clone());
        g.url = Some("https://broker.example:9443/".into());
        let env = env_of(&[("MAESTRO_TOKEN", "from-env"), ("MAESTRO_URL", "https://other")]);
        let c = Config::resolve(&g, env).unwrap();
        assert_eq!(c.token.unwrap().expose(), "from-token-file");
        assert_eq!(c.url_text, "https://broker.example:9443");
    }

    #[test]
    fn bad_settings_are_one_line_errors() {
        let mut g = global();
        g.url = Some("http://127.0.0.1:8443".into());
        let e = Config::resolve(&g, env_of(&[])).unwrap_err();
        assert!(matches!(e, ConfigError::NotHttps(_)));
        g.url = Some("not a url".into());
        assert!(matches!(Config::resolve(&g, env_of(&[])), Err(ConfigError::BadUrl { .. })));
        let e = Config::resolve(&global(), env_of(&[("MAESTRO_CA", "/nonexistent/ca.pem")]))
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/nonexistent/ca.pem") && text.contains("MAESTRO_CA"), "{text}");
        assert!(!text.contains('\n'));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let c =
            Config::resolve(&global(), env_of(&[("MAESTRO_TOKEN_FILE", empty.to_str().unwrap())]))
                .unwrap();
        assert!(c.token.unwrap_err().contains("empty"));
    }
}
