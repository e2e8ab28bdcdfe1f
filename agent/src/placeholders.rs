//! Placeholders for sealed secrets: what the sandbox sees instead of a sealed field's value.
//!
//! Each sealed field of each activation gets a fresh random placeholder shaped by the catalog
//! (`catalog::seal::placeholder`): different in every session and at every activation, so a
//! placeholder found anywhere names one activation of one secret. A new version of an active
//! secret (an edit, an OAuth refresh) keeps the placeholders its processes already hold when the
//! new value has the same shape, so a running tool does not break because a token was refreshed.

use std::collections::BTreeMap;

use maestro_wire::SecretValue;
use maestro_wire::agent_api::SecretMaterial;
use maestro_wire::catalog::seal::{self, Exposure};
use maestro_wire::catalog::{Kind, Sealing};

/// The fields as the sandbox sees them, and the placeholder of each sealed field.
pub struct Shown {
    pub fields: BTreeMap<String, SecretValue>,
    pub placeholders: BTreeMap<String, String>,
}

fn random(buf: &mut [u8]) {
    // The kernel's generator does not fail once booted; should it, the placeholder is still
    // never the value (the value's characters are not used), only less random, and it is not a
    // secret.
    if getrandom::fill(buf).is_err() {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151) ^ std::process::id() as u8;
        }
    }
}

/// The prefixes a sealed field's placeholder keeps; `None` when the field is not sealed.
fn kept_prefixes(kind: &Kind, field: &str) -> Option<&'static [&'static str]> {
    let seal = match &kind.sealing {
        Sealing::Swap(s) | Sealing::SigV4(s) => s,
        Sealing::Agent(_) | Sealing::Unsupported { .. } => return None,
    };
    if kind.free_fields {
        return Some(&[]);
    }
    seal.fields.iter().find(|f| f.name == field).map(|f| f.keep_prefixes)
}

/// Whether `old` can stand for a value whose fresh placeholder is `fresh`: same length and the
/// same kept prefix and separators.
fn same_shape(old: &str, fresh: &str) -> bool {
    old.len() == fresh.len()
        && old
            .bytes()
            .zip(fresh.bytes())
            .all(|(a, b)| a == b || (a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric()))
        && old.chars().take_while(|c| !c.is_ascii_alphanumeric()).count()
            == fresh.chars().take_while(|c| !c.is_ascii_alphanumeric()).count()
}

/// The shown fields of `material`: for a sealed secret each sealed field is replaced by a
/// placeholder (the one in `previous` when it still fits), the others are as they are.
pub fn show(kind: &Kind, material: &SecretMaterial, previous: &BTreeMap<String, String>) -> Shown {
    let mut placeholders = BTreeMap::new();
    if let (Sealing::Agent(seal), Exposure::Sealed) = (&kind.sealing, material.exposure) {
        // The agent uses these itself: the sandbox sees neither them nor a placeholder.
        let fields = material
            .fields
            .iter()
            .filter(|(name, _)| !seal.hidden.contains(&name.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        return Shown { fields, placeholders };
    }
    if material.exposure != Exposure::Sealed || seal::seal_of(kind).is_err() {
        return Shown { fields: material.fields.clone(), placeholders };
    }
    let mut fields = BTreeMap::new();
    for (name, value) in &material.fields {
        match kept_prefixes(kind, name) {
            Some(keep) => {
                let fresh = seal::placeholder(keep, value.expose(), &mut random);
                let kept = previous.get(name).filter(|old| {
                    same_shape(old, &fresh)
                        && keep.iter().find(|p| fresh.starts_with(**p))
                            == keep.iter().find(|p| old.starts_with(**p))
                });
                let p = kept.cloned().unwrap_or(fresh);
                fields.insert(name.clone(), SecretValue::from(p.as_str()));
                placeholders.insert(name.clone(), p);
            }
            None => {
                fields.insert(name.clone(), value.clone());
            }
        }
    }
    Shown { fields, placeholders }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_wire::catalog::kind;

    fn material(kind: &str, exposure: Exposure, fields: &[(&str, &str)]) -> SecretMaterial {
        SecretMaterial {
            active_until: None,
            name: "S".into(),
            kind: kind.into(),
            version: 1,
            fields: fields.iter().map(|(k, v)| ((*k).into(), SecretValue::from(*v))).collect(),
            expires_at: None,
            needs_reauth: None,
            exposure,
            hosts: vec![],
        }
    }

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn sealed_fields_are_placeholders_and_the_rest_is_kept() {
        let aws = kind("aws").unwrap();
        let m = material(
            "aws",
            Exposure::Sealed,
            &[("access_key_id", KEY), ("secret_access_key", SECRET), ("region", "eu-west-1")],
        );
        let s = show(aws, &m, &BTreeMap::new());
        let id = s.fields["access_key_id"].expose();
        assert!(id.starts_with("AKIA") && id.len() == 20 && id != KEY, "{id}");
        let sk = s.fields["secret_access_key"].expose();
        assert!(sk.len() == 40 && sk != SECRET);
        assert_eq!(s.fields["region"].expose(), "eu-west-1");
        assert_eq!(s.placeholders.len(), 2);
        // Plain: untouched.
        let m = material("aws", Exposure::Plain, &[("access_key_id", KEY)]);
        let s = show(aws, &m, &BTreeMap::new());
        assert_eq!(s.fields["access_key_id"].expose(), KEY);
        assert!(s.placeholders.is_empty());
    }

    #[test]
    fn a_new_version_keeps_placeholders_of_the_same_shape_and_an_activation_does_not() {
        let gh = kind("github").unwrap();
        let v1 =
            material("github", Exposure::Sealed, &[("token", "ghp_aaaaaaaaaaaaaaaaaaaaBBBB0000")]);
        let first = show(gh, &v1, &BTreeMap::new());
        let v2 =
            material("github", Exposure::Sealed, &[("token", "ghp_ccccccccccccccccccccDDDD1111")]);
        let again = show(gh, &v2, &first.placeholders);
        assert_eq!(again.placeholders, first.placeholders);
        // A longer token: a new placeholder of the new length.
        let v3 = material(
            "github",
            Exposure::Sealed,
            &[("token", "github_pat_0123456789abcdefghij_ABCDEFGHIJ")],
        );
        let other = show(gh, &v3, &first.placeholders);
        assert_ne!(other.placeholders["token"], first.placeholders["token"]);
        assert!(other.placeholders["token"].starts_with("github_pat_"));
        // A fresh activation (no previous placeholders) draws a new one.
        let fresh = show(gh, &v1, &BTreeMap::new());
        assert_ne!(fresh.placeholders["token"], first.placeholders["token"]);
    }

    #[test]
    fn every_placeholder_is_long_enough_for_the_proxy() {
        // A placeholder the proxy refuses would empty its whole set: every value length must
        // give one it takes.
        let g = kind("generic").unwrap();
        for len in 1..=64 {
            let value = "v".repeat(len);
            let m = material("generic", Exposure::Sealed, &[("A", value.as_str())]);
            let p = &show(g, &m, &BTreeMap::new()).placeholders["A"];
            assert!(p.len() >= crate::proxy::sealed::MIN_PLACEHOLDER_LEN, "{len}: {p}");
        }
    }

    #[test]
    fn a_sealed_ssh_key_is_neither_shown_nor_rendered_and_its_socket_is() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n";
        let m = material(
            "ssh",
            Exposure::Sealed,
            &[
                ("private_key", key),
                ("passphrase", "pw-planted"),
                ("known_hosts", "h ssh-ed25519 AAAA"),
            ],
        );
        let s = show(kind("ssh").unwrap(), &m, &BTreeMap::new());
        assert!(s.placeholders.is_empty());
        assert_eq!(s.fields.keys().collect::<Vec<_>>(), ["known_hosts"]);
        let e = crate::state::render_in(m, "/run/secrets", "/run/maestro", None).unwrap();
        let vars: Vec<(&str, &str)> =
            e.rendered.variables.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
        assert_eq!(
            vars,
            [
                ("SSH_AUTH_SOCK", "/run/maestro/ssh/S.sock"),
                ("GIT_SSH_COMMAND", "ssh -o UserKnownHostsFile=/run/secrets/ssh/known_hosts"),
            ]
        );
        for (path, content) in &e.rendered.files {
            assert!(!content.expose().contains("PRIVATE KEY"), "{path}");
            assert!(!content.expose().contains("pw-planted"), "{path}");
        }
        assert!(e.rendered.files.iter().any(|(p, _)| p == "ssh/known_hosts"));
        assert!(!e.rendered.files.iter().any(|(p, _)| p == "ssh/id"));
    }

    #[test]
    fn every_field_of_a_sealed_generic_secret_is_sealed() {
        let g = kind("generic").unwrap();
        let m = material(
            "generic",
            Exposure::Sealed,
            &[("A", "short"), ("B", "x".repeat(40).as_str())],
        );
        let s = show(g, &m, &BTreeMap::new());
        assert_eq!(s.placeholders.len(), 2);
        assert_eq!(s.fields["A"].expose().len(), seal::SHORT_PLACEHOLDER);
        assert_ne!(s.fields["B"].expose(), "x".repeat(40));
    }
}
