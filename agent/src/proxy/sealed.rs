//! What the proxy knows of the sealed secrets active now ([`SealedSet`], filled by the agent's
//! state), and the index built from it once per change ([`Active`]): every placeholder and
//! every real value in one automaton each, so a request is scanned in one pass whatever the
//! number of secrets.

use aho_corasick::{AhoCorasick, MatchKind};
use maestro_wire::SecretValue;
use maestro_wire::catalog::Place;

use super::hosts;

/// What the proxy knows of the sealed secrets active now; replaced wholesale on every change.
#[derive(Debug, Default, Clone)]
pub struct SealedSet {
    pub secrets: Vec<SealedSecret>,
}

/// One active sealed secret.
#[derive(Debug, Clone)]
pub struct SealedSecret {
    pub name: String,
    /// Lowercase host patterns, no port: `api.openai.com` (exact) or `*.amazonaws.com` (any
    /// subdomain, any depth, not the apex).
    pub hosts: Vec<String>,
    /// Placeholder -> real value. Placeholders are ASCII `[A-Za-z0-9_.-]`, at least 20 bytes.
    pub swaps: Vec<Swap>,
    /// AWS: requests signed with the placeholder key are re-signed with the real keys.
    pub sigv4: Option<SigV4Keys>,
    /// Where in a request its values may be put (the catalog's `places`); a placeholder
    /// anywhere else, even towards one of its hosts, is refused as a leak. Empty means
    /// anywhere (the request target, every header, form and JSON bodies).
    pub places: Vec<Place>,
}

/// A part of a request, for [`Active::allowed_in`].
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    Target,
    /// A header, by its lowercase name.
    Header(&'a str),
    Body,
}

fn may_go(places: &[Place], part: Part<'_>) -> bool {
    if places.is_empty() || places.contains(&Place::Anywhere) {
        return true;
    }
    places.iter().any(|p| match (p, part) {
        (Place::Authorization, Part::Header(h)) => h == "authorization",
        (Place::Header(name), Part::Header(h)) => *name == h,
        (Place::FormField(_), Part::Body) => true,
        _ => false,
    })
}

/// A placeholder and the real value it stands for.
#[derive(Debug, Clone)]
pub struct Swap {
    pub placeholder: String,
    pub real: SecretValue,
}

/// The real AWS keys behind a placeholder key id.
#[derive(Debug, Clone)]
pub struct SigV4Keys {
    pub placeholder_key_id: String,
    pub key_id: SecretValue,
    pub secret_key: SecretValue,
    /// Its placeholder is in `swaps`.
    pub session_token: Option<SecretValue>,
}

/// The shortest placeholder the proxy accepts: shorter ones could occur by chance in traffic.
pub const MIN_PLACEHOLDER_LEN: usize = maestro_wire::catalog::seal::MIN_SAME_LENGTH;

/// A placeholder: which secret it belongs to, and the real value that replaces it.
pub struct Entry {
    pub secret: usize,
    pub replacement: SecretValue,
}

/// A real value to scrub from responses, and what it becomes. Real values are searched with
/// `memmem` straight from their [`SecretValue`], so no automaton holds an unzeroized copy.
pub struct RealEntry {
    pub secret: usize,
    pub real: SecretValue,
    pub shown: String,
}

/// The index of a [`SealedSet`]: built on every `set`, read by every request.
pub struct Active {
    pub secrets: Vec<SealedSecret>,
    /// All placeholders (including AWS placeholder key ids); entry i is pattern i.
    pub placeholders: Option<AhoCorasick>,
    pub placeholder_entries: Vec<Entry>,
    pub max_placeholder: usize,
    /// All real values, for scrubbing responses.
    pub reals: Vec<RealEntry>,
    pub max_real: usize,
}

/// A sealed set the proxy cannot use.
#[derive(Debug, thiserror::Error)]
pub enum SealedError {
    #[error(
        "sealed secret {name}: a placeholder is shorter than {MIN_PLACEHOLDER_LEN} bytes or has \
         characters other than A-Z a-z 0-9 _ -; the agent makes placeholders, this is a bug"
    )]
    BadPlaceholder { name: String },
    #[error("sealed secret {name} has an empty real value; re-enter the secret")]
    EmptyValue { name: String },
    #[error("cannot index the sealed secrets: {0}")]
    Index(String),
}

fn valid_placeholder(p: &str) -> bool {
    p.len() >= MIN_PLACEHOLDER_LEN
        && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

impl Active {
    /// Indexes a set. Secrets without hosts can never be substituted, but their placeholders
    /// are still watched for leaks.
    pub fn build(set: SealedSet) -> Result<Active, SealedError> {
        let mut placeholders: Vec<String> = Vec::new();
        let mut placeholder_entries = Vec::new();
        let mut reals: Vec<RealEntry> = Vec::new();
        for (i, s) in set.secrets.iter().enumerate() {
            let mut add = |placeholder: &str, real: &SecretValue| -> Result<(), SealedError> {
                if !valid_placeholder(placeholder) {
                    return Err(SealedError::BadPlaceholder { name: s.name.clone() });
                }
                if real.is_empty() {
                    return Err(SealedError::EmptyValue { name: s.name.clone() });
                }
                placeholders.push(placeholder.to_owned());
                placeholder_entries.push(Entry { secret: i, replacement: real.clone() });
                reals.push(RealEntry {
                    secret: i,
                    real: real.clone(),
                    shown: placeholder.to_owned(),
                });
                Ok(())
            };
            for swap in &s.swaps {
                add(&swap.placeholder, &swap.real)?;
            }
            if let Some(k) = &s.sigv4 {
                if !s.swaps.iter().any(|w| w.placeholder == k.placeholder_key_id) {
                    add(&k.placeholder_key_id, &k.key_id)?;
                }
                // The secret key itself never travels, but scrub it from responses all the same.
                reals.push(RealEntry {
                    secret: i,
                    real: k.secret_key.clone(),
                    shown: "<sealed-secret-key>".to_owned(),
                });
            }
        }
        let placeholders_ac = if placeholders.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&placeholders)
                .map_err(|e| SealedError::Index(e.to_string()))?;
            Some(ac)
        };
        let max_placeholder = placeholders.iter().map(|p| p.len()).max().unwrap_or(0);
        let max_real = reals.iter().map(|r| r.real.len()).max().unwrap_or(0);
        Ok(Active {
            secrets: set.secrets,
            placeholders: placeholders_ac,
            placeholder_entries,
            max_placeholder,
            reals,
            max_real,
        })
    }

    /// No sealed secret is active.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Which secrets belong to `host` (normalized): index i is secret i.
    pub fn allowed_for(&self, host: &str) -> Vec<bool> {
        self.secrets.iter().map(|s| hosts::matches_any(&s.hosts, host)).collect()
    }

    /// `allowed` (per secret, from [`Active::allowed_for`]) narrowed to the secrets whose
    /// values may be put in `part` of a request.
    pub fn allowed_in(&self, allowed: &[bool], part: Part<'_>) -> Vec<bool> {
        self.secrets.iter().zip(allowed).map(|(s, a)| *a && may_go(&s.places, part)).collect()
    }

    /// The secret whose placeholder AWS key id this is.
    pub fn sigv4_by_key_id(&self, key_id: &str) -> Option<usize> {
        self.secrets
            .iter()
            .position(|s| s.sigv4.as_ref().is_some_and(|k| k.placeholder_key_id == key_id))
    }
}
