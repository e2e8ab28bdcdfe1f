//! Finding and replacing placeholders (requests) and real values (responses) in bytes, whole or
//! as a stream of chunks.
//!
//! The streaming [`Scanner`] holds back the last `longest pattern - 1` bytes of what it has seen
//! until more arrives, so a pattern split across chunks at any offset is found, and no byte of
//! a forbidden placeholder is ever passed on before the placeholder is recognised.

use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::sealed::Active;

/// A match: where, and which entry of the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub entry: usize,
}

/// What to do with a match.
pub enum Decision<'a> {
    /// Put these bytes in its place; the match belongs to this secret.
    Replace(&'a [u8], usize),
    /// Leave it as it is.
    Keep,
    /// Refuse: the placeholder of this secret is going where it does not belong.
    Forbid(usize),
}

/// A set of patterns and what each one becomes.
pub trait Rules: Send + Sync {
    /// Longest pattern, in bytes (0: nothing to find).
    fn max_len(&self) -> usize;
    /// The leftmost match (the longest among those starting there).
    fn find(&self, hay: &[u8]) -> Option<Hit>;
    fn decide(&self, entry: usize) -> Decision<'_>;
}

/// Placeholders in a request towards one host.
pub struct RequestRules {
    pub active: Arc<Active>,
    /// Per secret: the request's host is one of its hosts (and the request is encrypted).
    pub allowed: Vec<bool>,
    /// Whether an allowed placeholder is replaced here (false: it passes unchanged).
    pub substitute: bool,
}

impl Rules for RequestRules {
    fn max_len(&self) -> usize {
        self.active.max_placeholder
    }

    fn find(&self, hay: &[u8]) -> Option<Hit> {
        let m = self.active.placeholders.as_ref()?.find(hay)?;
        Some(Hit { start: m.start(), end: m.end(), entry: m.pattern().as_usize() })
    }

    fn decide(&self, entry: usize) -> Decision<'_> {
        let Some(e) = self.active.placeholder_entries.get(entry) else { return Decision::Keep };
        match (self.allowed.get(e.secret).copied().unwrap_or(false), self.substitute) {
            (true, true) => Decision::Replace(e.replacement.expose().as_bytes(), e.secret),
            (true, false) => Decision::Keep,
            (false, _) => Decision::Forbid(e.secret),
        }
    }
}

/// Real values in a response, replaced by their placeholders.
pub struct ScrubRules {
    pub active: Arc<Active>,
}

impl Rules for ScrubRules {
    fn max_len(&self) -> usize {
        self.active.max_real
    }

    fn find(&self, hay: &[u8]) -> Option<Hit> {
        let mut best: Option<Hit> = None;
        for (i, r) in self.active.reals.iter().enumerate() {
            let needle = r.real.expose().as_bytes();
            let window = match best {
                // Only a match starting at or before the best one can beat it.
                Some(b) => &hay[..(b.start + needle.len()).min(hay.len())],
                None => hay,
            };
            if let Some(start) = memchr::memmem::find(window, needle) {
                let hit = Hit { start, end: start + needle.len(), entry: i };
                best = match best {
                    Some(b) if b.start < start || (b.start == start && b.end >= hit.end) => Some(b),
                    _ => Some(hit),
                };
            }
        }
        best
    }

    fn decide(&self, entry: usize) -> Decision<'_> {
        match self.active.reals.get(entry) {
            Some(r) => Decision::Replace(r.shown.as_bytes(), r.secret),
            None => Decision::Keep,
        }
    }
}

/// A forbidden placeholder was found: the secret it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden(pub usize);

/// Scans a whole buffer. Returns the new bytes (`None`: unchanged) and the secrets replaced.
pub fn scan_all<R: Rules + ?Sized>(
    rules: &R,
    input: &[u8],
) -> Result<(Option<Vec<u8>>, Vec<usize>), Forbidden> {
    if rules.max_len() == 0 || rules.find(input).is_none() {
        return Ok((None, Vec::new()));
    }
    let mut out = BytesMut::with_capacity(input.len());
    let mut used = Vec::new();
    let mut pos = 0;
    while let Some(hit) = rules.find(&input[pos..]) {
        let (start, end) = (pos + hit.start, pos + hit.end);
        out.extend_from_slice(&input[pos..start]);
        apply(rules, hit.entry, &input[start..end], &mut out, &mut used)?;
        pos = end;
    }
    out.extend_from_slice(&input[pos..]);
    Ok((Some(out.to_vec()), used))
}

fn apply<R: Rules + ?Sized>(
    rules: &R,
    entry: usize,
    matched: &[u8],
    out: &mut BytesMut,
    used: &mut Vec<usize>,
) -> Result<(), Forbidden> {
    match rules.decide(entry) {
        Decision::Replace(with, secret) => {
            out.extend_from_slice(with);
            if !used.contains(&secret) {
                used.push(secret);
            }
        }
        Decision::Keep => out.extend_from_slice(matched),
        Decision::Forbid(secret) => return Err(Forbidden(secret)),
    }
    Ok(())
}

/// A streaming scanner: feed chunks, get out what can be passed on so far.
pub struct Scanner<R> {
    rules: R,
    pending: BytesMut,
    /// Secrets replaced in the output so far, in order of first use.
    pub used: Vec<usize>,
}

impl<R: Rules> Scanner<R> {
    pub fn new(rules: R) -> Self {
        Scanner { rules, pending: BytesMut::new(), used: Vec::new() }
    }

    /// Takes a chunk (`last`: nothing follows) and appends to `out` every byte that can no
    /// longer be part of a match.
    pub fn feed(&mut self, chunk: &[u8], last: bool, out: &mut BytesMut) -> Result<(), Forbidden> {
        let max = self.rules.max_len();
        if max == 0 {
            out.extend_from_slice(&self.pending);
            self.pending.clear();
            out.extend_from_slice(chunk);
            return Ok(());
        }
        self.pending.extend_from_slice(chunk);
        let n = self.pending.len();
        // A match starting before `safe` lies wholly inside what we have.
        let safe = if last { n } else { n.saturating_sub(max - 1) };
        let mut pos = 0;
        while pos < safe {
            let Some(hit) = self.rules.find(&self.pending[pos..]) else { break };
            let (start, end) = (pos + hit.start, pos + hit.end);
            if start >= safe {
                break;
            }
            out.extend_from_slice(&self.pending[pos..start]);
            let matched = self.pending[start..end].to_vec();
            apply(&self.rules, hit.entry, &matched, out, &mut self.used)?;
            pos = end;
        }
        if safe > pos {
            out.extend_from_slice(&self.pending[pos..safe]);
            pos = safe;
        }
        self.pending.advance(pos);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use maestro_wire::SecretValue;

    use super::*;
    use crate::proxy::sealed::{SealedSecret, SealedSet, Swap};

    const P1: &str = "sk-proj-PLACEHOLDER0000000000000001";
    const P2: &str = "ghp_PLACEHOLDER00000000000000000002";

    fn active() -> Arc<Active> {
        let secret = |name: &str, host: &str, p: &str, real: &str| SealedSecret {
            places: Vec::new(),
            name: name.into(),
            hosts: vec![host.into()],
            swaps: vec![Swap { placeholder: p.into(), real: SecretValue::from(real) }],
            sigv4: None,
        };
        Arc::new(
            Active::build(SealedSet {
                secrets: vec![
                    secret("OPENAI", "api.openai.com", P1, "sk-proj-REALVALUE00000000000000001"),
                    secret("GH", "github.com", P2, "short-real"),
                ],
            })
            .unwrap(),
        )
    }

    fn rules(allowed: [bool; 2]) -> RequestRules {
        RequestRules { active: active(), allowed: allowed.to_vec(), substitute: true }
    }

    fn stream<R: Rules>(r: R, input: &[u8], cuts: &[usize]) -> Result<Vec<u8>, Forbidden> {
        let mut s = Scanner::new(r);
        let mut out = BytesMut::new();
        let mut prev = 0;
        for &c in cuts {
            s.feed(&input[prev..c], false, &mut out)?;
            prev = c;
        }
        s.feed(&input[prev..], true, &mut out)?;
        Ok(out.to_vec())
    }

    #[test]
    fn whole_buffer_replacement() {
        let input = format!("Bearer {P1} and {P2}!");
        let (out, used) = scan_all(&rules([true, true]), input.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(out.unwrap()).unwrap(),
            "Bearer sk-proj-REALVALUE00000000000000001 and short-real!"
        );
        assert_eq!(used, [0, 1]);
        assert_eq!(scan_all(&rules([true, false]), input.as_bytes()), Err(Forbidden(1)));
        assert_eq!(scan_all(&rules([true, true]), b"nothing").unwrap(), (None, vec![]));
    }

    #[test]
    fn matches_split_at_every_offset_in_two_and_three_chunks() {
        let input = format!("xx{P1}yy{P2}{P1}z");
        let want =
            "xxsk-proj-REALVALUE00000000000000001yyshort-realsk-proj-REALVALUE00000000000000001z";
        let n = input.len();
        for a in 0..=n {
            assert_eq!(
                stream(rules([true, true]), input.as_bytes(), &[a]).unwrap(),
                want.as_bytes()
            );
            for b in a..=n {
                assert_eq!(
                    stream(rules([true, true]), input.as_bytes(), &[a, b]).unwrap(),
                    want.as_bytes(),
                    "cuts {a} {b}"
                );
            }
        }
        // One byte at a time.
        let cuts: Vec<usize> = (1..n).collect();
        assert_eq!(stream(rules([true, true]), input.as_bytes(), &cuts).unwrap(), want.as_bytes());
    }

    #[test]
    fn a_forbidden_placeholder_is_caught_before_any_of_it_passes() {
        let input = format!("{}{P2}tail", "a".repeat(100));
        for a in 0..=input.len() {
            let mut s = Scanner::new(rules([true, false]));
            let mut out = BytesMut::new();
            let first = s.feed(&input.as_bytes()[..a], false, &mut out);
            let r = first.and_then(|()| s.feed(&input.as_bytes()[a..], true, &mut out));
            assert_eq!(r, Err(Forbidden(1)));
            // Not even the first byte of the placeholder went out.
            assert!(out.len() <= 100, "cut {a}: {} bytes out", out.len());
        }
    }

    #[test]
    fn scrubbing_replaces_real_values_across_chunks() {
        let input =
            b"{\"echo\":\"Bearer sk-proj-REALVALUE00000000000000001\",\"b\":\"short-real\"}";
        let want = format!("{{\"echo\":\"Bearer {P1}\",\"b\":\"{P2}\"}}");
        for a in 0..=input.len() {
            let out = stream(ScrubRules { active: active() }, input, &[a]).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), want, "cut {a}");
        }
    }

    #[test]
    fn keep_mode_passes_own_placeholders_and_still_forbids_others() {
        let r = RequestRules { active: active(), allowed: vec![true, false], substitute: false };
        let input = P1.to_owned();
        assert_eq!(stream(r, input.as_bytes(), &[5]).unwrap(), input.as_bytes());
        let r = RequestRules { active: active(), allowed: vec![true, false], substitute: false };
        assert_eq!(stream(r, P2.as_bytes(), &[5]), Err(Forbidden(1)));
    }
}
