//! Finding secret values, and their common encodings, in byte streams.
//!
//! Used by `maestro-exec` to mask a command's output and by the agent to scan files for committed
//! secrets. For every named value the matcher looks for:
//!
//! * the value itself;
//! * its base64 and base64url encodings at each of the 3 alignments: a value embedded at any
//!   offset of a larger encoded stream changes only the characters at its edges, so the matcher
//!   looks for the *stable middle* (the characters whose 6 bits all come from the value);
//! * its hex encoding, lower and upper case;
//! * its URL escaping (percent-encoding of every non-alphanumeric byte);
//! * its JSON string escaping (without the quotes).
//!
//! Values shorter than [`MIN_VALUE_LEN`] bytes are never matched: short strings occur everywhere
//! by chance, and masking them would mangle ordinary output. Patterns are held in zeroizing
//! buffers; a match reports the secret's name and the encoding, never the value.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::secret::SecretValue;

/// The shortest value (in bytes) that is matched. Shorter values are skipped (too many false
/// positives); `maestro-exec --help` and the docs say so.
pub const MIN_VALUE_LEN: usize = 6;

/// How a matched value was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The value as is.
    Raw,
    /// Standard base64 (stable middle, any alignment).
    Base64,
    /// URL-safe base64 (stable middle, any alignment).
    Base64Url,
    /// Lower-case hex.
    HexLower,
    /// Upper-case hex.
    HexUpper,
    /// Percent-encoded (URL escaping).
    UrlEscaped,
    /// JSON string escaping.
    JsonEscaped,
}

impl Encoding {
    /// A stable lower-case name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Base64 => "base64",
            Self::Base64Url => "base64url",
            Self::HexLower => "hex",
            Self::HexUpper => "HEX",
            Self::UrlEscaped => "url-escaped",
            Self::JsonEscaped => "json-escaped",
        }
    }
}

/// Errors building a matcher.
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    /// The automaton could not be built (too many or too long patterns).
    #[error("cannot build the secret matcher: {0}; use fewer or shorter secrets")]
    Build(String),
}

/// One found occurrence: which secret, how it was encoded, and where (byte offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Index of the secret in the list given to [`Matcher::new`].
    pub secret: usize,
    /// The encoding matched.
    pub encoding: Encoding,
    /// Start offset (in the slice, or in the stream for [`StreamScanner`]).
    pub start: u64,
    /// End offset (exclusive).
    pub end: u64,
}

/// A compiled set of patterns for some named secret values.
pub struct Matcher {
    names: Vec<String>,
    /// Per pattern: (secret index, encoding).
    meta: Vec<(usize, Encoding)>,
    ac: Option<AhoCorasick>,
    max_len: usize,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("names", &self.names)
            .field("patterns", &self.meta.len())
            .finish()
    }
}

/// The base64 characters of `value` that do not depend on its neighbours, for each alignment.
fn base64_middles(engine: &impl base64::Engine, value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut out = Vec::new();
    for k in 0..3usize {
        let mut buf = Zeroizing::new(vec![0u8; k]);
        buf.extend_from_slice(value);
        let enc = Zeroizing::new(engine.encode(&*buf).into_bytes());
        // Characters entirely inside the value's bits: from ceil(8k/6) to floor(8(k+n)/6).
        let first = (8 * k).div_ceil(6);
        let last = (8 * (k + value.len())) / 6;
        if last > first {
            out.push(Zeroizing::new(enc[first..last].to_vec()));
        }
    }
    out
}

fn encodings(value: &[u8]) -> Vec<(Encoding, Zeroizing<Vec<u8>>)> {
    let mut out = vec![(Encoding::Raw, Zeroizing::new(value.to_vec()))];
    for m in base64_middles(&STANDARD_NO_PAD, value) {
        out.push((Encoding::Base64, m));
    }
    for m in base64_middles(&URL_SAFE_NO_PAD, value) {
        out.push((Encoding::Base64Url, m));
    }
    let lower = Zeroizing::new(hex::encode(value).into_bytes());
    let upper = Zeroizing::new(lower.to_ascii_uppercase());
    out.push((Encoding::HexLower, lower));
    out.push((Encoding::HexUpper, upper));
    let url: Zeroizing<String> = Zeroizing::new(
        percent_encoding::percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string(),
    );
    out.push((Encoding::UrlEscaped, Zeroizing::new(url.as_bytes().to_vec())));
    if let Ok(text) = std::str::from_utf8(value)
        && let Ok(json) = serde_json::to_string(text).map(Zeroizing::new)
        && json.len() >= 2
    {
        let inner = &json.as_bytes()[1..json.len() - 1];
        out.push((Encoding::JsonEscaped, Zeroizing::new(inner.to_vec())));
    }
    out
}

impl Matcher {
    /// Compiles the patterns for `secrets` (name, value). Values shorter than
    /// [`MIN_VALUE_LEN`] are skipped. Identical patterns keep the first secret's name.
    pub fn new(secrets: &[(String, &SecretValue)]) -> Result<Self, MatcherError> {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut meta = Vec::new();
        for (i, (_, value)) in secrets.iter().enumerate() {
            let bytes = value.expose().as_bytes();
            if bytes.len() < MIN_VALUE_LEN {
                continue;
            }
            for (enc, p) in encodings(bytes) {
                if p.is_empty() || patterns.iter().any(|q| **q == *p) {
                    continue;
                }
                patterns.push(p);
                meta.push((i, enc));
            }
        }
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let ac = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    // A full DFA: the fastest search for a few hundred short patterns (about 1 GB/s on text).
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(patterns.iter().map(|p| p.as_slice()))
                    .map_err(|e| MatcherError::Build(e.to_string()))?,
            )
        };
        Ok(Self { names: secrets.iter().map(|(n, _)| n.clone()).collect(), meta, ac, max_len })
    }

    /// Whether there is nothing to look for (no secret long enough).
    pub fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    /// The name of secret `index`.
    pub fn name(&self, index: usize) -> &str {
        self.names.get(index).map(String::as_str).unwrap_or("")
    }

    /// The longest pattern, in bytes: a stream must keep `max_len() - 1` bytes between reads.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Every non-overlapping occurrence in `haystack` (leftmost-longest).
    pub fn find_all(&self, haystack: &[u8]) -> Vec<Found> {
        let Some(ac) = &self.ac else {
            return Vec::new();
        };
        ac.find_iter(haystack)
            .map(|m| {
                let (secret, encoding) = self.meta[m.pattern().as_usize()];
                Found { secret, encoding, start: m.start() as u64, end: m.end() as u64 }
            })
            .collect()
    }
}

/// Masks a byte stream: each occurrence is replaced by `<NAME>`. Bytes that may begin a match
/// split across chunks are held back (at most `max_len - 1`) until the next chunk or [`finish`].
///
/// [`finish`]: Masker::finish
pub struct Masker<'m> {
    matcher: &'m Matcher,
    pending: Zeroizing<Vec<u8>>,
}

impl<'m> Masker<'m> {
    /// A masker over `matcher`.
    pub fn new(matcher: &'m Matcher) -> Self {
        Self { matcher, pending: Zeroizing::new(Vec::new()) }
    }

    /// Bytes held back, waiting for the next chunk.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds `chunk`; appends the bytes that are safe to write to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(ac) = &self.matcher.ac else {
            out.extend_from_slice(chunk);
            return;
        };
        let keep = self.matcher.max_len.saturating_sub(1);
        if self.pending.is_empty() && chunk.len() > keep && ac.find(chunk).is_none() {
            // Fast path: nothing matches; only the tail can start a split match.
            let safe = chunk.len() - keep;
            out.extend_from_slice(&chunk[..safe]);
            self.pending.extend_from_slice(&chunk[safe..]);
            return;
        }
        self.pending.extend_from_slice(chunk);
        let buf = std::mem::take(&mut *self.pending);
        let buf = Zeroizing::new(buf);
        let safe = buf.len().saturating_sub(keep);
        let mut pos = 0;
        for m in ac.find_iter(&*buf) {
            // A match starting before `safe` fits entirely in `buf` (it is at most max_len long).
            if m.start() >= safe {
                break;
            }
            out.extend_from_slice(&buf[pos..m.start()]);
            self.replacement(m.pattern().as_usize(), out);
            pos = m.end();
        }
        let cut = pos.max(safe);
        out.extend_from_slice(&buf[pos..cut]);
        self.pending.extend_from_slice(&buf[cut..]);
    }

    /// Ends the stream: masks and appends whatever was held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let buf = Zeroizing::new(std::mem::take(&mut *self.pending));
        let mut pos = 0;
        if let Some(ac) = &self.matcher.ac {
            for m in ac.find_iter(&*buf) {
                out.extend_from_slice(&buf[pos..m.start()]);
                self.replacement(m.pattern().as_usize(), out);
                pos = m.end();
            }
        }
        out.extend_from_slice(&buf[pos..]);
    }

    fn replacement(&self, pattern: usize, out: &mut Vec<u8>) {
        let (secret, _) = self.matcher.meta[pattern];
        out.push(b'<');
        out.extend_from_slice(self.matcher.name(secret).as_bytes());
        out.push(b'>');
    }
}

/// Finds occurrences in a stream read in chunks, reporting stream offsets; matches split across
/// chunks are found (the last `max_len - 1` bytes are kept for the next chunk).
pub struct StreamScanner<'m> {
    matcher: &'m Matcher,
    pending: Zeroizing<Vec<u8>>,
    /// Stream offset of `pending[0]`.
    base: u64,
}

impl<'m> StreamScanner<'m> {
    /// A scanner over `matcher`, at stream offset 0.
    pub fn new(matcher: &'m Matcher) -> Self {
        Self { matcher, pending: Zeroizing::new(Vec::new()), base: 0 }
    }

    /// Feeds `chunk`; returns the occurrences that are complete and cannot grow.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Found> {
        self.pending.extend_from_slice(chunk);
        let keep = self.matcher.max_len.saturating_sub(1);
        let safe = self.pending.len().saturating_sub(keep);
        self.scan_until(safe)
    }

    /// Ends the stream: the occurrences left in the held-back bytes.
    pub fn finish(&mut self) -> Vec<Found> {
        let all = self.pending.len();
        self.scan_until(all)
    }

    /// Reports matches starting before `safe` and drops the bytes that can no longer start one.
    fn scan_until(&mut self, safe: usize) -> Vec<Found> {
        let mut found = Vec::new();
        let mut pos = 0;
        for f in self.matcher.find_all(&self.pending) {
            if f.start as usize >= safe {
                break;
            }
            pos = f.end as usize;
            found.push(Found { start: f.start + self.base, end: f.end + self.base, ..f });
        }
        let cut = pos.max(safe).min(self.pending.len());
        let rest = Zeroizing::new(self.pending[cut..].to_vec());
        self.pending.clear();
        self.pending.extend_from_slice(&rest);
        self.base += cut as u64;
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn matcher(values: &[(&str, &str)]) -> (Vec<SecretValue>, Matcher) {
        let vals: Vec<SecretValue> =
            values.iter().map(|(_, v)| SecretValue::new((*v).to_owned())).collect();
        let named: Vec<(String, &SecretValue)> =
            values.iter().zip(&vals).map(|((n, _), v)| ((*n).to_owned(), v)).collect();
        let m = Matcher::new(&named).unwrap();
        (vals, m)
    }

    fn mask_all(m: &Matcher, chunks: &[&[u8]]) -> Vec<u8> {
        let mut masker = Masker::new(m);
        let mut out = Vec::new();
        for c in chunks {
            masker.push(c, &mut out);
        }
        masker.finish(&mut out);
        out
    }

    const V: &str = "s3cr3t/v+lue\"x y";

    #[test]
    fn every_encoding_is_found() {
        let (_v, m) = matcher(&[("TOKEN", V)]);
        let b = V.as_bytes();
        let mut texts: Vec<Vec<u8>> = vec![b.to_vec()];
        for k in 0..3 {
            let mut p = vec![b'A'; k];
            p.extend_from_slice(b);
            p.extend_from_slice(b"tail");
            texts.push(STANDARD_NO_PAD.encode(&p).into_bytes());
            texts.push(URL_SAFE_NO_PAD.encode(&p).into_bytes());
        }
        texts.push(hex::encode(b).into_bytes());
        texts.push(hex::encode_upper(b).into_bytes());
        texts.push(
            percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .into_bytes(),
        );
        texts.push(serde_json::to_string(V).unwrap().into_bytes());
        for t in texts {
            assert!(!m.find_all(&t).is_empty(), "{}", String::from_utf8_lossy(&t));
        }
    }

    #[test]
    fn split_matches_are_masked_and_other_bytes_pass() {
        let (_v, m) = matcher(&[("TOKEN", V), ("OTHER", "abcdefgh")]);
        let text = format!("before {V} middle abcdefgh after");
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            let out = mask_all(&m, &[&bytes[..split], &bytes[split..]]);
            assert_eq!(out, b"before <TOKEN> middle <OTHER> after", "split at {split}");
        }
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(mask_all(&m, &one_by_one), b"before <TOKEN> middle <OTHER> after");
    }

    #[test]
    fn short_values_are_not_matched_and_binary_passes() {
        let (_v, m) = matcher(&[("SHORT", "abcde")]);
        assert!(m.is_empty());
        let bin: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let (_v, m) = matcher(&[("TOKEN", V)]);
        let chunks: Vec<&[u8]> = bin.chunks(4096).collect();
        assert_eq!(mask_all(&m, &chunks), bin);
    }

    #[test]
    fn debug_never_shows_the_value() {
        let (_v, m) = matcher(&[("TOKEN", V)]);
        assert!(!format!("{m:?}").contains("s3cr3t"));
    }
    #[test]
    fn stream_scanner_reports_stream_offsets_once() {
        let (_v, m) = matcher(&[("TOKEN", V)]);
        let text = format!("xx\n{V}\nyy {} zz", hex::encode(V));
        let bytes = text.as_bytes();
        let whole: Vec<(u64, u64)> = m.find_all(bytes).iter().map(|f| (f.start, f.end)).collect();
        assert_eq!(whole.len(), 2);
        for size in [1, 3, 7, 64] {
            let mut s = StreamScanner::new(&m);
            let mut got = Vec::new();
            for c in bytes.chunks(size) {
                got.extend(s.push(c));
            }
            got.extend(s.finish());
            let got: Vec<(u64, u64)> = got.iter().map(|f| (f.start, f.end)).collect();
            assert_eq!(got, whole, "chunk size {size}");
        }
    }
}
