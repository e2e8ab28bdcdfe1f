//! Several accounts on one git host: a git secret's `owners` field names the owners (`alice`)
//! or repository path prefixes (`acme/infra`, `group/subgroup`) it serves, and
//! `maestro-exec git-credential` picks, for a request's `path`, the secret whose prefix matches
//! the most leading segments; a secret without `owners` is the host's default.
//!
//! Prefixes and paths compare segment by segment, ASCII case-insensitively (GitHub and GitLab
//! owners and repositories are case-insensitive), with a trailing `.git` ignored. A path with a
//! segment that is empty in the middle, `.`, `..`, percent-encoded or of other characters than
//! letters, digits, `-`, `_` and `.` matches nothing, so that no spelling of a path reaches an
//! owner's token that the plain spelling would not.

use std::fmt;

/// At most this many prefixes in one `owners` field.
pub const MAX_OWNERS: usize = 32;
/// At most this many bytes in one prefix segment (GitHub: 39 for owners, 100 for repositories).
pub const MAX_SEGMENT_BYTES: usize = 100;
/// At most this many segments in one prefix (GitLab nests groups up to 20 deep).
pub const MAX_SEGMENTS: usize = 21;
/// A request path longer than this matches nothing.
pub const MAX_PATH_BYTES: usize = 4096;

/// One prefix: lower-case segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(Vec<String>);

impl Prefix {
    /// How many segments it has (the longest matching prefix wins).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a prefix has at least one segment.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `path` (as [`path_segments`] gives it) starts with this prefix.
    pub fn matches(&self, path: &[String]) -> bool {
        path.len() >= self.0.len() && self.0.iter().zip(path).all(|(a, b)| a == b)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// Whether a segment is made of the characters owners and repositories use, and is not `.`
/// or `..` (nor starts with a dot: no owner or group does).
fn plain_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT_BYTES
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Lower case, without a trailing `.git` (`Repo.git` and `repo` are one repository).
fn normal(segment: &str) -> String {
    let s = segment.to_ascii_lowercase();
    match s.strip_suffix(".git") {
        Some(stem) if !stem.is_empty() => stem.to_owned(),
        _ => s,
    }
}

/// Parses an `owners` field: prefixes separated by commas or white space. The message says
/// what is wrong without quoting the whole value.
pub fn parse(text: &str) -> Result<Vec<Prefix>, String> {
    let mut out: Vec<Prefix> = Vec::new();
    for item in text.split(|c: char| c == ',' || c.is_ascii_whitespace()) {
        if item.is_empty() {
            continue;
        }
        if out.len() == MAX_OWNERS {
            return Err(format!("names more than {MAX_OWNERS} owners or path prefixes"));
        }
        let item = item.strip_prefix('/').unwrap_or(item);
        let item = item.strip_suffix('/').unwrap_or(item);
        let segments: Vec<&str> = item.split('/').collect();
        if segments.len() > MAX_SEGMENTS {
            return Err(format!("has a path prefix of more than {MAX_SEGMENTS} segments"));
        }
        if let Some(bad) = segments.iter().find(|s| !plain_segment(s)) {
            let shown: String = bad.chars().filter(|c| !c.is_control()).take(40).collect();
            return Err(format!(
                "has {shown:?}, which is no owner or repository name: use letters, digits, \
                 '-', '_' and '.' (not first), at most {MAX_SEGMENT_BYTES} bytes, and '/' \
                 between segments (alice, acme/infra), without the host"
            ));
        }
        let prefix = Prefix(segments.iter().map(|s| normal(s)).collect());
        if !out.contains(&prefix) {
            out.push(prefix);
        }
    }
    if out.is_empty() {
        return Err("names no owner; give owners or path prefixes like alice,acme/infra".into());
    }
    Ok(out)
}

/// The segments of a credential request's `path` (`alice/repo.git`), normalized as prefixes
/// are; `None` when the path could name something else than it seems (see the module
/// comment) or is too long.
pub fn path_segments(path: &str) -> Option<Vec<String>> {
    if path.len() > MAX_PATH_BYTES {
        return None;
    }
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| !plain_segment(s)) {
        return None;
    }
    Some(segments.iter().map(|s| normal(s)).collect())
}

/// One candidate of [`choose`]: a secret's name and its prefixes (empty: the default).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub owners: Vec<Prefix>,
}

/// Why [`choose`] picked nothing although secrets for the host are active. Each message
/// names the secrets (never a value) and says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request had no path, and some candidates serve only some owners.
    NoPath { host: String, secrets: String },
    /// The path is not a plain `owner/repo` path.
    OddPath { host: String },
    /// Several secrets match equally well.
    Ambiguous { what: String, secrets: String },
    /// No secret serves the owner and there is no default.
    NoOwner { owner: String, secrets: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoPath { host, secrets } => write!(
                f,
                "git sent no repository path for {host}, so it cannot tell which of {secrets} \
                 to use; run `git config --global credential.https://{host}.useHttpPath true` \
                 (maestro-exec sets it for the commands it runs)"
            ),
            Refusal::OddPath { host } => write!(
                f,
                "the repository path git sent for {host} is not a plain owner/repository path \
                 ('..', '%', or other characters), so no secret is given for it; use the \
                 repository's plain URL"
            ),
            Refusal::Ambiguous { what, secrets } => write!(
                f,
                "{secrets} all serve {what}; remove it from all but one's owners \
                 (maestro secrets edit NAME --owners ...) or deactivate all but one"
            ),
            Refusal::NoOwner { owner, secrets } => write!(
                f,
                "no active secret serves owner {owner} ({secrets}); add it to one's owners \
                 (maestro secrets edit NAME --owners ...) or activate a secret without owners \
                 as the default"
            ),
        }
    }
}

/// `A (alice, acme/infra), B (default)`.
fn describe(candidates: &[&Candidate]) -> String {
    candidates
        .iter()
        .map(|c| {
            if c.owners.is_empty() {
                format!("{} (default)", c.name)
            } else {
                let owners: Vec<String> = c.owners.iter().map(Prefix::to_string).collect();
                format!("{} ({})", c.name, owners.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The secret to answer with among `candidates` (all for `host`), for a request's `path`:
/// `Ok(None)` when there is none. With no candidate that names owners, the path does not
/// matter (a single default answers, as before owners existed).
pub fn choose<'a>(
    host: &str,
    path: Option<&str>,
    candidates: &'a [Candidate],
) -> Result<Option<&'a Candidate>, Refusal> {
    let defaults: Vec<&Candidate> = candidates.iter().filter(|c| c.owners.is_empty()).collect();
    let one_default = |what: &str| match defaults.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(Refusal::Ambiguous { what: what.to_owned(), secrets: describe(many) }),
    };
    if defaults.len() == candidates.len() {
        return one_default(&format!("{host} as its default"));
    }
    let all: Vec<&Candidate> = candidates.iter().collect();
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Err(Refusal::NoPath { host: host.to_owned(), secrets: describe(&all) });
    };
    let Some(segments) = path_segments(path) else {
        return Err(Refusal::OddPath { host: host.to_owned() });
    };
    let mut best = 0;
    let mut winners: Vec<&Candidate> = Vec::new();
    for c in candidates {
        let Some(len) = c.owners.iter().filter(|p| p.matches(&segments)).map(Prefix::len).max()
        else {
            continue;
        };
        if len > best {
            best = len;
            winners.clear();
        }
        if len == best {
            winners.push(c);
        }
    }
    match winners.as_slice() {
        [one] => Ok(Some(*one)),
        [] => match one_default(&format!("{host} as its default")) {
            Ok(None) => Err(Refusal::NoOwner {
                owner: segments.first().cloned().unwrap_or_default(),
                secrets: describe(&all),
            }),
            other => other,
        },
        many => {
            Err(Refusal::Ambiguous { what: segments[..best].join("/"), secrets: describe(many) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, owners: &str) -> Candidate {
        Candidate {
            name: name.into(),
            owners: if owners.is_empty() { Vec::new() } else { parse(owners).unwrap() },
        }
    }

    fn pick(path: Option<&str>, cands: &[Candidate]) -> Result<Option<String>, Refusal> {
        choose("github.com", path, cands).map(|c| c.map(|c| c.name.clone()))
    }

    #[test]
    fn parses_owners_and_prefixes() {
        let p = parse(" Alice, acme/Infra.git bob\n/x/y/ ,alice").unwrap();
        let shown: Vec<String> = p.iter().map(Prefix::to_string).collect();
        assert_eq!(shown, ["alice", "acme/infra", "bob", "x/y"]);
        for bad in ["", " , ", "a//b", "../x", "a/./b", ".hidden", "a%2eb", "a b/c?d", "héllo"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&"a,".repeat(MAX_OWNERS + 1)).is_ok(), "repeats count once");
        let many: Vec<String> = (0..=MAX_OWNERS).map(|i| format!("o{i}")).collect();
        assert!(parse(&many.join(",")).unwrap_err().contains("more than"));
        assert!(parse(&"a".repeat(MAX_SEGMENT_BYTES + 1)).is_err());
        assert!(parse(&vec!["g"; MAX_SEGMENTS + 1].join("/")).unwrap_err().contains("segments"));
        // The message quotes at most a short, printable part.
        let e = parse(&format!("{}\u{7}x/..", "y".repeat(300))).unwrap_err();
        assert!(e.len() < 400 && !e.contains('\u{7}'), "{e}");
    }

    #[test]
    fn paths_are_normalized_or_refused() {
        assert_eq!(path_segments("Alice/Repo.git").unwrap(), ["alice", "repo"]);
        assert_eq!(path_segments("/alice/repo/").unwrap(), ["alice", "repo"]);
        for odd in ["", "alice/../bob/x.git", "%2e%2e/bob", "alice/%2E", "a//b", "./a", "a b"] {
            assert!(path_segments(odd).is_none(), "{odd:?}");
        }
        assert!(path_segments(&format!("a/{}", "b/".repeat(MAX_PATH_BYTES))).is_none());
    }

    #[test]
    fn the_longest_prefix_wins_and_the_default_takes_the_rest() {
        let c = [cand("GH_ALICE", "alice"), cand("GH_BOB", "bob,acme"), cand("GH", "")];
        assert_eq!(pick(Some("alice/repo.git"), &c).unwrap().unwrap(), "GH_ALICE");
        assert_eq!(pick(Some("ALICE/Repo"), &c).unwrap().unwrap(), "GH_ALICE");
        assert_eq!(pick(Some("bob/x.git"), &c).unwrap().unwrap(), "GH_BOB");
        assert_eq!(pick(Some("carol/x.git"), &c).unwrap().unwrap(), "GH");
        // alicex is another owner, not a prefix of alice's.
        assert_eq!(pick(Some("alicex/r.git"), &c).unwrap().unwrap(), "GH");
        let c = [cand("ORG", "acme"), cand("INFRA", "acme/infra")];
        assert_eq!(pick(Some("acme/infra.git"), &c).unwrap().unwrap(), "INFRA");
        assert_eq!(pick(Some("acme/web.git"), &c).unwrap().unwrap(), "ORG");
    }

    #[test]
    fn refuses_what_it_cannot_tell() {
        let c = [cand("GH_ALICE", "alice"), cand("GH_BOB", "bob")];
        let e = pick(Some("carol/x.git"), &c).unwrap_err();
        assert!(matches!(&e, Refusal::NoOwner { owner, .. } if owner == "carol"), "{e}");
        assert!(e.to_string().contains("GH_ALICE (alice), GH_BOB (bob)"), "{e}");
        let e = pick(None, &c).unwrap_err();
        assert!(e.to_string().contains("useHttpPath true"), "{e}");
        assert!(matches!(pick(Some(""), &c), Err(Refusal::NoPath { .. })));
        for odd in ["alice/../bob/x.git", "alice/%2e%2e/bob", "alice//x"] {
            assert!(matches!(pick(Some(odd), &c), Err(Refusal::OddPath { .. })), "{odd}");
        }
        let c = [cand("A", "alice"), cand("B", "Alice,bob")];
        let e = pick(Some("alice/r"), &c).unwrap_err();
        assert_eq!(
            e,
            Refusal::Ambiguous {
                what: "alice".into(),
                secrets: "A (alice), B (alice, bob)".into()
            }
        );
    }

    #[test]
    fn without_owners_the_path_does_not_matter() {
        let c = [cand("GH", "")];
        for path in [None, Some("x/y.git"), Some("../odd")] {
            assert_eq!(pick(path, &c).unwrap().unwrap(), "GH");
        }
        assert_eq!(pick(None, &[]).unwrap(), None);
        let two = [cand("A", ""), cand("B", "")];
        assert!(matches!(pick(None, &two), Err(Refusal::Ambiguous { .. })));
    }
}

#[cfg(test)]
mod catalog_tests {
    use std::collections::BTreeMap;

    use crate::SecretValue;
    use crate::catalog::{kind, outputs, render, validate};

    #[test]
    fn a_secret_with_owners_provides_no_variables_or_files() {
        for (name, vars) in [("github", &["GH_TOKEN", "GITHUB_TOKEN"][..]), ("gitlab", &[][..])] {
            let k = kind(name).unwrap();
            let plain = outputs(k, ["token"]);
            assert!(vars.iter().all(|v| plain.variables.iter().any(|p| p == v)), "{name}");
            let scoped = outputs(k, ["token", "owners"]);
            assert_eq!((scoped.variables.len(), scoped.files.len()), (0, 0), "{name}");
            let mut fields = BTreeMap::new();
            fields.insert("token".to_owned(), SecretValue::from("ghp_x"));
            fields.insert("owners".to_owned(), SecretValue::from("alice"));
            let r = render(k, &fields, "/run/secrets");
            assert!(r.variables.is_empty() && r.files.is_empty(), "{name}");
        }
    }

    #[test]
    fn owners_are_checked_when_a_secret_is_registered() {
        let mut fields = BTreeMap::new();
        fields.insert("token".to_owned(), SecretValue::from("ghp_x"));
        fields.insert("owners".to_owned(), SecretValue::from("alice,../bob"));
        let e = validate("github", &fields).unwrap_err().to_string();
        assert!(e.contains("owners") && e.contains("no owner or repository name"), "{e}");
        fields.insert("owners".to_owned(), SecretValue::from("alice, Acme/infra"));
        assert!(validate("github", &fields).is_ok());
    }
}
