//! The fields of a secret made from a token: the provider's token field holds the access
//! token; a GitLab secret's `host` comes from the provider's server (so that the git helper
//! answers for a self-managed GitLab too); fields the user set on the secret (a git secret's
//! `owners`) are kept.

use std::collections::BTreeMap;

use maestro_wire::SecretValue;
use reqwest::Url;

use super::store::ProviderRecord;
use crate::domain::DomainResult;
use crate::domain::validate::check_fields;

/// `host[:port]` of a URL, as the gitlab kind's `host` field writes it.
fn host_port(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    let host = url.host_str()?.to_owned();
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// The fields of the new version, checked against the provider's kind, defaults filled in.
/// `current` are the fields of the secret's current version when it has the provider's kind.
pub fn token_fields(
    provider: &ProviderRecord,
    access_token: SecretValue,
    current: Option<BTreeMap<String, SecretValue>>,
) -> DomainResult<BTreeMap<String, SecretValue>> {
    let mut fields = current.unwrap_or_default();
    if provider.kind == "gitlab"
        && !fields.contains_key("host")
        && let Some(host) = host_port(&provider.auth_url)
    {
        fields.insert("host".to_owned(), SecretValue::new(host));
    }
    fields.insert(provider.token_field.clone(), access_token);
    check_fields(&provider.kind, &fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(kind: &str, field: &str, auth_url: &str) -> ProviderRecord {
        ProviderRecord {
            id: "p".into(),
            owner_id: 1,
            name: "p".into(),
            preset: "custom".into(),
            kind: kind.into(),
            token_field: field.into(),
            client_id: "c".into(),
            auth_url: auth_url.into(),
            token_url: auth_url.into(),
            revoke_url: None,
            scopes: vec![],
            data_key_id: "k".into(),
            wrapped_key: vec![],
            client_secret: vec![],
            created_at: 0,
        }
    }

    #[test]
    fn token_goes_into_the_kind_s_field() {
        let gh = provider("github", "token", "https://github.com/login/oauth/authorize");
        let f = token_fields(&gh, SecretValue::from("gho_x"), None).unwrap();
        assert_eq!(f.keys().collect::<Vec<_>>(), ["token"]);
        let gl = provider("gitlab", "token", "https://git.example.com:8443/oauth/authorize");
        let f = token_fields(&gl, SecretValue::from("glo_x"), None).unwrap();
        assert_eq!(f["host"].expose(), "git.example.com:8443");
        let generic = provider("generic", "MS_TOKEN", "https://login.example/authorize");
        let f = token_fields(&generic, SecretValue::from("ey.x"), None).unwrap();
        assert_eq!(f["MS_TOKEN"].expose(), "ey.x");
        let mut current = BTreeMap::new();
        current.insert("host".to_owned(), SecretValue::from("other.example"));
        current.insert("token".to_owned(), SecretValue::from("old"));
        let f = token_fields(&gl, SecretValue::from("new"), Some(current)).unwrap();
        assert_eq!((f["host"].expose(), f["token"].expose()), ("other.example", "new"));
    }

    #[test]
    fn a_new_token_keeps_the_owners_a_connection_serves() {
        let gh = provider("github", "token", "https://github.com/login/oauth/authorize");
        let mut current = BTreeMap::new();
        current.insert("owners".to_owned(), SecretValue::from("acme, alice/dotfiles"));
        current.insert("token".to_owned(), SecretValue::from("gho_old"));
        let f = token_fields(&gh, SecretValue::from("gho_new"), Some(current)).unwrap();
        assert_eq!(
            (f["owners"].expose(), f["token"].expose()),
            ("acme, alice/dotfiles", "gho_new")
        );
    }
}
