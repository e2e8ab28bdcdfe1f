//! A secret's exposure (plain or sealed) and its hosts: the checks of what a user asks for
//! against the catalog's sealing data, and the effective hosts the agent and the user see.
//!
//! The broker stores the hosts the user named (normalized), never the kind's defaults: those
//! come from the catalog at each read, so a catalog update reaches every secret that uses them.
//! A kind with a host field (GitLab's `host`) takes its default host from that field's value.

use std::collections::BTreeMap;

use maestro_wire::SecretValue;
use maestro_wire::api::ErrorCode;
use maestro_wire::catalog::seal::{self, Exposure, SealError};
use maestro_wire::catalog::{self, Kind};
use tracing::error;

use super::error::{DomainError, DomainResult};

/// What a new version of a secret will be: its exposure and the hosts its owner named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    pub exposure: Exposure,
    /// Normalized (lowercase, no repeats); empty: the kind's defaults.
    pub user_hosts: Vec<String>,
}

/// A refusal of the catalog, as the API answers it (400 `invalid_exposure`, its one line).
pub fn refusal(e: SealError) -> DomainError {
    // What a form changes to fix it: the exposure itself, or the hosts.
    let field = match &e {
        SealError::Unsupported { .. } | SealError::HostsOnPlain => "exposure".to_owned(),
        SealError::AgentField { field, .. } => field.clone(),
        _ => "hosts".to_owned(),
    };
    DomainError::new(ErrorCode::InvalidExposure, e.to_string()).at_field(field)
}

/// The value of the kind's host field among `fields`, if the kind has one.
pub fn host_field_value<'a>(
    kind: &Kind,
    fields: &'a BTreeMap<String, SecretValue>,
) -> Option<&'a str> {
    let seal = seal::seal_of(kind).ok()?;
    fields.get(seal.host_field?).map(SecretValue::expose)
}

/// Checks `exposure` and the user's `hosts` for a secret of `kind` with (checked) `fields`,
/// and returns what to store. Nothing is stored on a refusal.
pub fn check(
    kind: &str,
    exposure: Exposure,
    fields: &BTreeMap<String, SecretValue>,
    hosts: &[String],
) -> DomainResult<Exposed> {
    let Some(k) = catalog::kind(kind) else {
        // check_fields refused an unknown kind before this; answer the same way if not.
        return Err(DomainError::new(
            ErrorCode::UnknownKind,
            format!("unknown kind {kind}; `maestro kinds` lists them"),
        ));
    };
    let host_field = host_field_value(k, fields);
    seal::check_exposure(k, exposure, host_field, hosts).map_err(refusal)?;
    seal::check_agent_fields(k, exposure, fields).map_err(refusal)?;
    let user_hosts = if exposure == Exposure::Sealed && !hosts.is_empty() {
        seal::sealed_hosts(k, host_field, hosts).map_err(refusal)?
    } else {
        Vec::new()
    };
    Ok(Exposed { exposure, user_hosts })
}

/// Whether the effective hosts of a secret of `kind` depend on its field values.
pub fn hosts_need_fields(kind: &str, exposure: Exposure) -> bool {
    exposure == Exposure::Sealed
        && catalog::kind(kind)
            .and_then(|k| seal::seal_of(k).ok())
            .is_some_and(|s| s.host_field.is_some())
}

/// The hosts a secret's values may be sent to: empty for a plain secret; for a sealed one, the
/// user's list or the kind's defaults. A stored list the catalog no longer accepts gives no
/// host at all (the agent then substitutes nowhere: closed, not open), and is logged.
pub fn effective_hosts(
    name: &str,
    kind: &str,
    exposure: Exposure,
    fields: Option<&BTreeMap<String, SecretValue>>,
    user_hosts: &[String],
) -> Vec<String> {
    if exposure == Exposure::Plain {
        return Vec::new();
    }
    let Some(k) = catalog::kind(kind) else { return Vec::new() };
    let host_field = fields.and_then(|f| host_field_value(k, f));
    match seal::sealed_hosts(k, host_field, user_hosts) {
        Ok(hosts) => hosts,
        Err(e) => {
            error!(secret = %name, %kind, error = %e, "a sealed secret's stored hosts are refused by the catalog; it is substituted nowhere");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretValue> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), SecretValue::from(*v))).collect()
    }

    #[test]
    fn refusals_carry_the_catalogs_line_and_code() {
        let none = fields(&[]);
        for (kind, hosts) in [
            ("gcp", vec![]),
            ("mongodb", vec![]),
            ("postgres", vec!["db.example.com".to_owned()]),
            ("generic", vec![]),
            ("aws", vec!["evil.example.com".to_owned()]),
            ("generic", vec!["*.com".to_owned()]),
            ("generic", vec!["https://api.example.com/".to_owned()]),
            ("generic", vec!["a.example.com".to_owned(); 1000]),
            ("generic", vec![format!("{}.example.com", "a".repeat(300))]),
        ] {
            let e = check(kind, Exposure::Sealed, &none, &hosts).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidExposure, "{kind} {e}");
            assert!(!e.message.contains('\n'), "{e}");
        }
        let e = check("aws", Exposure::Plain, &none, &["s3.amazonaws.com".into()]).unwrap_err();
        assert!(e.message.contains("--exposure sealed"), "{e}");
        let e = check("gcp", Exposure::Sealed, &none, &[]).unwrap_err();
        assert!(e.message.starts_with("a gcp secret cannot be sealed: "), "{e}");
    }

    #[test]
    fn user_hosts_are_stored_normalized_and_defaults_are_not_stored() {
        let none = fields(&[]);
        let got = check("aws", Exposure::Sealed, &none, &["S3.amazonaws.com".into()]).unwrap();
        assert_eq!(got.user_hosts, ["s3.amazonaws.com"]);
        assert!(check("openai", Exposure::Sealed, &none, &[]).unwrap().user_hosts.is_empty());
        assert_eq!(effective_hosts("X", "openai", Exposure::Sealed, None, &[]), ["api.openai.com"]);
        assert!(effective_hosts("X", "openai", Exposure::Plain, None, &[]).is_empty());
        let gl = fields(&[("token", "glpat-x"), ("host", "git.example.com:8443")]);
        assert!(hosts_need_fields("gitlab", Exposure::Sealed));
        assert!(!hosts_need_fields("openai", Exposure::Sealed));
        assert_eq!(
            effective_hosts("X", "gitlab", Exposure::Sealed, Some(&gl), &[]),
            ["git.example.com"]
        );
        // The GitLab host field is the default: gitlab.com is wider than it, not narrower.
        assert!(check("gitlab", Exposure::Sealed, &gl, &["gitlab.com".into()]).is_err());
        // A stored list the catalog refuses substitutes nowhere.
        assert!(
            effective_hosts("X", "aws", Exposure::Sealed, None, &["evil.example.com".into()])
                .is_empty()
        );
    }
}
