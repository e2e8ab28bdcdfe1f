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
//!
//! Speed: the automaton runs at about 1 GB/s on text but far slower on random binary, where its
//! own prefilter fires on almost every byte. So a skip scan comes first: every byte of every
//! match is one of the patterns' bytes (the *pattern byte set*), and every match is at least
//! `min_len` long, so it covers one of the positions `b + min_len, b + 2·min_len, ...` after
//! any byte `b` outside the set. Only those sampled positions are looked at; where one is in the
//! set, the surrounding stretch of set bytes (cut at bytes outside the set, so no match is
//! cut) goes to the automaton. Bytes outside the set (most of a binary stream, and the spaces
//! and newlines of text) are thus skipped `min_len` at a time. Where the stretches merge into
//! more than [`DENSE`] bytes, at least half of them covered (text), the rest of the haystack
//! goes to the automaton directly, whose own prefilter does better there. Measured figures are
//! in docs/benchmarks.md.

use std::ops::ControlFlow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, Input, MatchKind};
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
    /// The shortest pattern, in bytes (the skip scan's stride).
    min_len: usize,
    /// The pattern byte set: `in_set[b]` when byte `b` occurs in some pattern.
    in_set: [bool; 256],
    /// The patterns themselves, for [`Masker::flush_idle`] (which bytes may begin a match).
    patterns: Vec<Zeroizing<Vec<u8>>>,
}

/// Stretches closer than this are searched as one (fewer automaton calls on text).
const MERGE_GAP: usize = 64;
/// A merged stretch longer than this, at least half of it in stretches, means text: the rest
/// goes to the automaton at once.
const DENSE: usize = 1024;

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
        let min_len = patterns.iter().map(|p| p.len()).min().unwrap_or(0);
        let mut in_set = [false; 256];
        for p in &patterns {
            for b in p.iter() {
                in_set[usize::from(*b)] = true;
            }
        }
        let ac = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    // A contiguous NFA: builds several times faster than a DFA (0.15 ms for one
                    // secret, a few ms for 100, against 0.3 and 30 ms) and, behind the skip scan,
                    // searches about as fast; maestro-exec builds one per masked command.
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .build(patterns.iter().map(|p| p.as_slice()))
                    .map_err(|e| MatcherError::Build(e.to_string()))?,
            )
        };
        Ok(Self {
            names: secrets.iter().map(|(n, _)| n.clone()).collect(),
            meta,
            ac,
            max_len,
            min_len,
            in_set,
            patterns,
        })
    }

    /// Calls `f` on every non-overlapping occurrence in `haystack` (leftmost-longest), in
    /// order, until it breaks. The skip scan (module comment) picks the stretches the
    /// automaton searches; the result is the same as the automaton's over the whole haystack,
    /// since no match crosses a byte outside the pattern byte set.
    fn scan(&self, hay: &[u8], mut f: impl FnMut(aho_corasick::Match) -> ControlFlow<()>) {
        let Some(ac) = &self.ac else { return };
        let stride = self.min_len.max(1);
        let set = &self.in_set;
        let n = hay.len();
        // The pending stretch [start, end) to search, both ends next to a non-set byte or the
        // haystack's edge.
        let mut pending: Option<(usize, usize)> = None;
        // Bytes of `pending` inside stretches (the rest are gaps between them).
        let mut covered = 0;
        let mut search = |from: usize, to: usize| -> ControlFlow<()> {
            for m in ac.find_iter(Input::new(hay).range(from..to)) {
                f(m)?;
            }
            ControlFlow::Continue(())
        };
        // `p` is a sampled position; every byte in [floor, p) outside a stretch is known
        // not to start a match that avoids all samples.
        let mut floor = 0;
        let mut p = stride - 1;
        while p < n {
            if !set[usize::from(hay[p])] {
                floor = p + 1;
                p += stride;
                continue;
            }
            // Back to the start of the run of set bytes (never before `floor`: the sample
            // before was outside the set, or a stretch ended there).
            let mut start = p;
            while start > floor && set[usize::from(hay[start - 1])] {
                start -= 1;
            }
            // Forward, sampling: stop at a sampled byte outside the set.
            let mut q = p + stride;
            while q < n && set[usize::from(hay[q])] {
                q += stride;
            }
            let mut end = q.min(n);
            // Trim back to the run's real end, byte by byte over at most one stride.
            if end < n {
                while end > p + 1 && !set[usize::from(hay[end - 1])] {
                    end -= 1;
                }
            }
            if end - start >= self.min_len {
                covered += end - start;
                if let Some((s, _)) = pending
                    && end - s > DENSE
                    && covered * 2 > end - s
                {
                    // Text: pattern bytes everywhere. The automaton's own prefilter does
                    // better than sampling here; hand it the rest of the haystack.
                    let _ = search(s, n);
                    return;
                }
                pending = match pending {
                    Some((s, e)) if start - e < MERGE_GAP => Some((s, end)),
                    Some((s, e)) => {
                        if search(s, e).is_break() {
                            return;
                        }
                        covered = end - start;
                        Some((start, end))
                    }
                    None => {
                        covered = end - start;
                        Some((start, end))
                    }
                };
            }
            floor = q.min(n);
            p = q + stride;
        }
        if let Some((s, e)) = pending {
            let _ = search(s, e);
        }
    }

    /// The length of the longest suffix of `tail`, at least `at_least` long, that is a proper
    /// beginning of some pattern (0 when there is none).
    fn held_suffix(&self, tail: &[u8], at_least: usize) -> usize {
        let longest = tail.len().min(self.max_len.saturating_sub(1));
        (at_least.max(1)..=longest)
            .rev()
            .find(|&n| {
                let suffix = &tail[tail.len() - n..];
                self.patterns.iter().any(|p| p.len() > n && p.starts_with(suffix))
            })
            .unwrap_or(0)
    }

    /// Whether `haystack` holds any occurrence.
    fn any(&self, hay: &[u8]) -> bool {
        let mut found = false;
        self.scan(hay, |_| {
            found = true;
            ControlFlow::Break(())
        });
        found
    }

    /// Every non-overlapping occurrence (automaton matches), in order.
    fn matches(&self, hay: &[u8]) -> Vec<aho_corasick::Match> {
        let mut out = Vec::new();
        self.scan(hay, |m| {
            out.push(m);
            ControlFlow::Continue(())
        });
        out
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
        self.matches(haystack)
            .into_iter()
            .map(|m| {
                let (secret, encoding) = self.meta[m.pattern().as_usize()];
                Found { secret, encoding, start: m.start() as u64, end: m.end() as u64 }
            })
            .collect()
    }
}

/// The shortest beginning of a value that [`Masker::flush_idle`] keeps waiting for its rest:
/// one to three bytes alike occur everywhere (a typed key's echo), so they are let through.
pub const IDLE_HOLD: usize = 4;

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
        if self.matcher.ac.is_none() {
            out.extend_from_slice(chunk);
            return;
        }
        let keep = self.matcher.max_len.saturating_sub(1);
        if self.pending.is_empty() && chunk.len() > keep && !self.matcher.any(chunk) {
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
        for m in self.matcher.matches(&buf) {
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

    /// The stream is idle (nothing more came for a while): masks and appends the held-back
    /// bytes, except a tail of at least [`IDLE_HOLD`] bytes that begins some pattern, which
    /// waits for the rest. A prompt or the echo of a key thus shows at once, while a value
    /// written in two halves with a pause between is still masked.
    pub fn flush_idle(&mut self, out: &mut Vec<u8>) {
        let buf = Zeroizing::new(std::mem::take(&mut *self.pending));
        let cut = buf.len() - self.matcher.held_suffix(&buf, IDLE_HOLD);
        let mut pos = 0;
        for m in self.matcher.matches(&buf) {
            if m.start() >= cut {
                break;
            }
            out.extend_from_slice(&buf[pos..m.start()]);
            self.replacement(m.pattern().as_usize(), out);
            pos = m.end();
        }
        let cut = pos.max(cut);
        out.extend_from_slice(&buf[pos..cut]);
        self.pending.extend_from_slice(&buf[cut..]);
    }

    /// Ends the stream: masks and appends whatever was held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let buf = Zeroizing::new(std::mem::take(&mut *self.pending));
        let mut pos = 0;
        for m in self.matcher.matches(&buf) {
            out.extend_from_slice(&buf[pos..m.start()]);
            self.replacement(m.pattern().as_usize(), out);
            pos = m.end();
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

    /// A small deterministic generator (xorshift64*), so that failures reproduce.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn the_skip_scan_finds_what_the_automaton_finds() {
        let (_v, m) = matcher(&[("TOKEN", V), ("OTHER", "abcdefgh"), ("HEXY", "0123456789")]);
        let ac = m.ac.as_ref().unwrap();
        let plants: Vec<Vec<u8>> = vec![
            V.as_bytes().to_vec(),
            b"abcdefgh".to_vec(),
            hex::encode(V).into_bytes(),
            STANDARD_NO_PAD.encode(format!("x{V}yz")).into_bytes(),
            b"0123456789".to_vec(),
        ];
        for seed in 0..300u64 {
            // Random binary, base64-ish text and text with spaces, with values planted at
            // random places (also back to back and at the edges).
            let mut hay = noise(seed, 2000 + (seed as usize % 7) * 333);
            if seed % 3 == 1 {
                hay.iter_mut().for_each(|b| *b = b"ABCabc0123+/ \n"[usize::from(*b) % 14]);
            }
            if seed % 3 == 2 {
                hay.iter_mut().for_each(|b| *b = b"abcdefgh0123456789 "[usize::from(*b) % 19]);
            }
            let spots = noise(seed ^ 0xdead, 8);
            for (i, spot) in spots.iter().enumerate() {
                let plant = &plants[i % plants.len()];
                let at = (usize::from(*spot) * hay.len() / 256).min(hay.len() - plant.len());
                hay[at..at + plant.len()].copy_from_slice(plant);
            }
            let n = hay.len();
            hay[n - 10..].copy_from_slice(b"0123456789");
            let want: Vec<(usize, usize, usize)> = ac
                .find_iter(&hay[..])
                .map(|x| (x.start(), x.end(), x.pattern().as_usize()))
                .collect();
            let got: Vec<(usize, usize, usize)> = m
                .matches(&hay)
                .iter()
                .map(|x| (x.start(), x.end(), x.pattern().as_usize()))
                .collect();
            assert!(!want.is_empty());
            assert_eq!(got, want, "seed {seed}");
            assert!(m.any(&hay));
        }
        assert!(!m.any(&[0u8; 10_000]));
    }

    #[test]
    fn an_idle_flush_keeps_only_a_beginning_of_a_value() {
        let (_v, m) = matcher(&[("TOKEN", V)]);
        let mut masker = Masker::new(&m);
        let mut out = Vec::new();
        // A prompt passes at once.
        masker.push(b"password please: ", &mut out);
        masker.flush_idle(&mut out);
        assert_eq!(out, b"password please: ");
        assert_eq!(masker.pending(), 0);
        // Half a value waits for its rest, however long the pause; then it is masked.
        masker.push(b"x s3cr3t/", &mut out);
        masker.flush_idle(&mut out);
        assert_eq!(masker.pending(), "s3cr3t/".len());
        masker.push(b"v+lue\"x y end", &mut out);
        masker.finish(&mut out);
        assert_eq!(out, b"password please: x <TOKEN> end");
        // Up to three bytes alike are let through (a key's echo).
        let mut out = Vec::new();
        let mut masker = Masker::new(&m);
        masker.push(b"s3c", &mut out);
        masker.flush_idle(&mut out);
        assert_eq!(out, b"s3c");
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
