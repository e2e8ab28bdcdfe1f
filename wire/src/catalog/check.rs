//! How one field's value is checked when a secret is registered.
//!
//! Every message names the field and says what is expected; none quotes the value, not even in
//! part, because the value may be a secret pasted into the wrong field.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Check, Field, ValidationError};

pub(super) fn invalid(field: &str, problem: &str) -> ValidationError {
    ValidationError::InvalidField { field: field.to_owned(), problem: problem.to_owned() }
}

/// Checks one value against its field's rule.
pub(super) fn check_value(spec: &Field, v: &str) -> Result<(), ValidationError> {
    let name = spec.name;
    if v.is_empty() {
        return Err(invalid(name, "is empty"));
    }
    if v.contains('\0') {
        return Err(invalid(name, "contains a NUL byte"));
    }
    match spec.check {
        Check::Text => Ok(()),
        // The passphrase is checked with its sibling field in `validate`.
        Check::SshPrivateKey { .. } => {
            super::ssh::parse_key(v).map(|_| ()).map_err(|p| invalid(name, &p))
        }
        Check::HostPatterns => super::ssh::check_hosts(v).map_err(|p| invalid(name, &p)),
        Check::Owners => super::owners::parse(v).map(|_| ()).map_err(|p| invalid(name, &p)),
        Check::Line => single_line(name, v),
        Check::Token => token(name, v),
        Check::Port => port(name, v),
        Check::Host => {
            if is_host(v) {
                Ok(())
            } else {
                Err(invalid(
                    name,
                    "must be a host name or an IP address, without scheme, port or path \
                     (e.g. db.example.com, 10.0.0.5 or ::1)",
                ))
            }
        }
        Check::HostPort => host_port(name, v),
        Check::Prefix(prefixes) => {
            single_line(name, v)?;
            match prefixes.iter().find(|p| v.starts_with(**p)) {
                Some(p) if v.len() > p.len() => Ok(()),
                Some(p) => Err(invalid(name, &format!("has nothing after {p}"))),
                None => Err(invalid(name, &format!("must start with {}", prefixes.join(" or ")))),
            }
        }
        Check::Uri(schemes) => uri(name, v, schemes),
        Check::OneOf(values) => {
            if values.contains(&v) {
                Ok(())
            } else {
                Err(invalid(name, &format!("must be one of: {}", values.join(", "))))
            }
        }
        Check::GcpServiceAccount => gcp_key(name, v),
    }
}

fn single_line(name: &str, v: &str) -> Result<(), ValidationError> {
    if v.contains(['\n', '\r']) {
        return Err(invalid(name, "must be a single line"));
    }
    if v.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(name, "contains control characters"));
    }
    Ok(())
}

fn token(name: &str, v: &str) -> Result<(), ValidationError> {
    single_line(name, v)?;
    if v.chars().any(char::is_whitespace) {
        return Err(invalid(
            name,
            "contains white space; keys and tokens have none (was it copied with a space or a \
             line break?)",
        ));
    }
    Ok(())
}

fn port(name: &str, v: &str) -> Result<(), ValidationError> {
    // Digits only: `u16::from_str` also takes "+80", which libpq and the MySQL client do not.
    let digits = !v.is_empty() && v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit());
    match v.parse::<u32>() {
        Ok(p) if digits && (1..=65535).contains(&p) && !v.starts_with('0') => Ok(()),
        _ => Err(invalid(name, "must be a TCP port number between 1 and 65535")),
    }
}

/// A DNS name (labels of letters, digits, `-` and `_`), an IPv4 address, or a bare IPv6
/// address. IPv6 is written without brackets: that is what PGHOST and MYSQL_HOST take; the
/// URLs put the brackets in.
pub(super) fn is_host(v: &str) -> bool {
    if v.parse::<Ipv6Addr>().is_ok() {
        return true;
    }
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return v.parse::<Ipv4Addr>().is_ok();
    }
    let v = v.strip_suffix('.').unwrap_or(v);
    v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn host_port(name: &str, v: &str) -> Result<(), ValidationError> {
    let bad = || {
        invalid(
            name,
            "must be a host name with an optional port, without scheme or path (e.g. \
             gitlab.example.com or gitlab.example.com:8443)",
        )
    };
    let (host, port_part) = if let Some(rest) = v.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        if h.parse::<Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match after {
            "" => return Ok(()),
            _ => (h, after.strip_prefix(':').ok_or_else(bad)?),
        }
    } else {
        match v.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p),
            Some(_) => return Err(bad()),
            None => (v, ""),
        }
    };
    if !host.contains(':') && !is_host(host) {
        return Err(bad());
    }
    if port_part.is_empty() && v.ends_with(':') {
        return Err(bad());
    }
    if !port_part.is_empty() {
        port(name, port_part).map_err(|_| bad())?;
    }
    Ok(())
}

fn uri(name: &str, v: &str, schemes: &[&str]) -> Result<(), ValidationError> {
    single_line(name, v)?;
    if v.chars().any(char::is_whitespace) {
        return Err(invalid(name, "contains white space; a connection string has none"));
    }
    let Some(scheme) = schemes.iter().find(|s| v.starts_with(**s)) else {
        return Err(invalid(name, &format!("must start with {}", schemes.join(" or "))));
    };
    let rest = &v[scheme.len()..];
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    // Credentials may hold '@' only percent-encoded, so the hosts follow the last one.
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hosts.is_empty() || hosts.split(',').any(str::is_empty) {
        return Err(invalid(name, &format!("names no host after {scheme}")));
    }
    if scheme.ends_with("+srv://") && (hosts.contains(',') || hosts.contains(':')) {
        return Err(invalid(
            name,
            &format!("uses {scheme}, which takes exactly one host name and no port"),
        ));
    }
    Ok(())
}

fn gcp_key(name: &str, v: &str) -> Result<(), ValidationError> {
    // serde_json's messages do not quote input, but nothing of the document is named anyway.
    let doc: serde_json::Value = serde_json::from_str(v)
        .map_err(|_| invalid(name, "is not valid JSON; expected a service account key file"))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| invalid(name, "must be a JSON object (a service account key file)"))?;
    if obj.get("type").and_then(|t| t.as_str()) != Some("service_account") {
        return Err(invalid(
            name,
            "is not a service account key: \"type\" must be \"service_account\"",
        ));
    }
    match obj.get("client_email").and_then(|e| e.as_str()) {
        Some(e) if is_email(e) => {}
        Some(_) => {
            return Err(invalid(name, "has a \"client_email\" that is not an e-mail address"));
        }
        None => return Err(invalid(name, "lacks a \"client_email\"")),
    }
    match obj.get("private_key").and_then(|k| k.as_str()) {
        Some(k) if is_pem_private_key(k) => {}
        Some(_) => {
            return Err(invalid(
                name,
                "has a \"private_key\" that is not a PEM private key (-----BEGIN PRIVATE \
                 KEY----- ... -----END PRIVATE KEY-----)",
            ));
        }
        None => return Err(invalid(name, "lacks a PEM \"private_key\"")),
    }
    // Google's client libraries refuse a key without it.
    match obj.get("token_uri").and_then(|t| t.as_str()) {
        Some(t) if t.starts_with("https://") && t.len() > "https://".len() => {}
        _ => {
            return Err(invalid(
                name,
                "lacks a \"token_uri\" (https://...); use the key file as downloaded",
            ));
        }
    }
    for key in ["project_id", "private_key_id", "client_id"] {
        match obj.get(key) {
            None | Some(serde_json::Value::String(_)) => {}
            Some(_) => return Err(invalid(name, &format!("has a \"{key}\" that is not a string"))),
        }
    }
    Ok(())
}

fn is_email(v: &str) -> bool {
    match v.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && is_host(domain)
                && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// One PEM block of a private key (PKCS#8 or PKCS#1), with a base64 body.
fn is_pem_private_key(v: &str) -> bool {
    let v = v.trim();
    let Some(begin) = v.strip_prefix("-----BEGIN ") else { return false };
    let Some((label, rest)) = begin.split_once("-----") else { return false };
    if !matches!(label, "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY") {
        return false;
    }
    let end = format!("-----END {label}-----");
    let Some(body) = rest.strip_suffix(end.as_str()) else { return false };
    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    !body.is_empty()
        && body.len().is_multiple_of(4)
        && body
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}
