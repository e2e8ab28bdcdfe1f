//! Turns a secret's fields into the text of one variable or file (a [`Source`]).
//!
//! Values are written straight into one buffer, reserved up front, that becomes the
//! [`SecretValue`]: no temporary copy of a value is left behind unzeroized. The file formats
//! quote or escape what their readers would otherwise split on; the fields' checks already keep
//! line breaks out of every single-line value, so no value can add a line of its own to a file.

use std::collections::BTreeMap;
use std::fmt::Write;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use zeroize::Zeroizing;

use super::Source;
use crate::SecretValue;

/// Everything but RFC 3986's unreserved characters is encoded in a URL's user, password and
/// database parts.
const URL_PART: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// The same, keeping `/` (a socket's directory or path in a URL's query).
const URL_PATH: &AsciiSet = &URL_PART.remove(b'/');

fn get<'a>(fields: &'a BTreeMap<String, SecretValue>, name: &str) -> Option<&'a str> {
    fields.get(name).map(|v| v.expose())
}

/// A buffer large enough for every field three times over (percent-encoding triples a byte),
/// so that writing never reallocates and leaves a copy in freed memory. Zeroized when dropped,
/// also when rendering stops half-way for a missing field.
fn buffer(fields: &BTreeMap<String, SecretValue>) -> Zeroizing<String> {
    Zeroizing::new(String::with_capacity(
        256 + 3 * fields.values().map(SecretValue::len).sum::<usize>(),
    ))
}

/// Writes `s` with `escape` applied to each character.
fn push_escaped(out: &mut String, s: &str, escape: impl Fn(char) -> Option<&'static str>) {
    for c in s.chars() {
        match escape(c) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
    }
}

/// A `scheme://user:password@host:port/database` URL, the parts encoded, IPv6 in brackets.
fn db_url(
    scheme: &str,
    fields: &BTreeMap<String, SecretValue>,
    port: &str,
) -> Option<Zeroizing<String>> {
    let (user, password, host) =
        (get(fields, "user")?, get(fields, "password")?, get(fields, "host")?);
    let mut url = buffer(fields);
    let enc = |s| utf8_percent_encode(s, URL_PART);
    let _ = write!(url, "{scheme}://{}:{}@", enc(user), enc(password));
    if host.contains(':') {
        let _ = write!(url, "[{host}]");
    } else {
        url.push_str(host);
    }
    let port = get(fields, "port").unwrap_or(port);
    let _ = write!(url, ":{port}/{}", enc(get(fields, "database").unwrap_or("")));
    Some(url)
}

/// The text of `source`, or `None` when the fields it needs are absent.
pub(super) fn source_value(
    source: Source,
    fields: &BTreeMap<String, SecretValue>,
    mount: &str,
) -> Option<SecretValue> {
    source_value_at(source, fields, mount, None)
}

/// The same, with the path of the agent's socket for the secret (a sealed secret the agent
/// serves itself); [`Source::AgentSocket`] is left out without one.
pub(super) fn source_value_at(
    source: Source,
    fields: &BTreeMap<String, SecretValue>,
    mount: &str,
    socket: Option<&str>,
) -> Option<SecretValue> {
    let text = match source {
        Source::SshKeyFile { key, passphrase } => {
            super::ssh::key_file(get(fields, key)?, get(fields, passphrase))?
        }
        Source::SshCommand { identity, known_hosts: (field, file) } => {
            let mount = mount.trim_end_matches('/');
            let mut s = String::from("ssh");
            if let Some(id) = identity {
                let _ = write!(s, " -i {mount}/{id} -o IdentitiesOnly=yes");
            }
            if fields.contains_key(field) {
                let _ = write!(s, " -o UserKnownHostsFile={mount}/{file}");
            }
            if s == "ssh" {
                return None;
            }
            Zeroizing::new(s)
        }
        Source::AgentSocket => Zeroizing::new(socket?.to_owned()),
        Source::AgentSocketDir => {
            let dir = std::path::Path::new(socket?).parent()?;
            Zeroizing::new(dir.to_str()?.to_owned())
        }
        Source::PostgresSocketUrl => {
            let dir = std::path::Path::new(socket?).parent()?.to_str()?;
            let user = get(fields, "user")?;
            let database = get(fields, "database").unwrap_or(user);
            let enc = |s| utf8_percent_encode(s, URL_PART);
            // libpq, psycopg, SQLAlchemy, asyncpg and pgx all read a socket directory from
            // `host=` in the query; `/` needs no escaping there.
            Zeroizing::new(format!(
                "postgresql://{}@/{}?host={}",
                enc(user),
                enc(database),
                utf8_percent_encode(dir, URL_PATH)
            ))
        }
        Source::Text(text) => Zeroizing::new(text.to_owned()),
        Source::MysqlSocketUrl => {
            let socket = socket?;
            let enc = |s| utf8_percent_encode(s, URL_PART);
            // `?socket=` is what sqlx, Prisma, Rails and dj-database-url read (SQLAlchemy
            // spells it `unix_socket`); `/` needs no escaping in a query.
            let mut url = format!("mysql://{}@localhost/", enc(get(fields, "user")?));
            if let Some(db) = get(fields, "database") {
                let _ = write!(url, "{}", enc(db));
            }
            let _ = write!(url, "?socket={}", utf8_percent_encode(socket, URL_PATH));
            Zeroizing::new(url)
        }
        Source::MysqlSocketOptionFile => {
            let mut s = Zeroizing::new(String::from("[client]\n"));
            option_line(&mut s, "socket", socket?);
            option_line(&mut s, "user", get(fields, "user")?);
            if let Some(db) = get(fields, "database") {
                option_line(&mut s, "database", db);
            }
            s
        }
        Source::Field(f) => return fields.get(f).cloned(),
        Source::FilePath(p) => Zeroizing::new(format!("{}/{}", mount.trim_end_matches('/'), p)),
        Source::FieldFilePath { field, path } => {
            get(fields, field)?;
            Zeroizing::new(format!("{}/{}", mount.trim_end_matches('/'), path))
        }
        Source::JsonKey(f, key) => {
            let doc: serde_json::Value = serde_json::from_str(get(fields, f)?).ok()?;
            let value = doc.get(key)?.as_str().filter(|s| !s.is_empty())?;
            return Some(SecretValue::from(value));
        }
        Source::PostgresUrl => {
            let mut url = db_url("postgresql", fields, "5432")?;
            let mut sep = '?';
            if let Some(mode) = get(fields, "sslmode") {
                let _ = write!(url, "{sep}sslmode={mode}");
                sep = '&';
            }
            // Drivers that read no PGSSLROOTCERT (node-postgres, sqlx) take it from the URL.
            if get(fields, "sslrootcert").is_some() {
                let path = format!("{}/{}", mount.trim_end_matches('/'), super::PG_ROOT_CERT);
                let _ = write!(url, "{sep}sslrootcert={}", utf8_percent_encode(&path, URL_PATH));
            }
            url
        }
        Source::MysqlUrl => db_url("mysql", fields, "3306")?,
        Source::AwsCredentialsFile => {
            let mut s = buffer(fields);
            let _ = write!(
                s,
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\nregion = {}\n",
                get(fields, "access_key_id")?,
                get(fields, "secret_access_key")?,
                get(fields, "region").unwrap_or("us-east-1"),
            );
            if let Some(token) = get(fields, "session_token") {
                let _ = writeln!(s, "aws_session_token = {token}");
            }
            s
        }
        Source::Pgpass => {
            // libpq's password file: fields split on ':', with '\' escaping ':' and itself.
            let esc = |c| match c {
                '\\' => Some("\\\\"),
                ':' => Some("\\:"),
                _ => None,
            };
            let mut s = buffer(fields);
            push_escaped(&mut s, get(fields, "host")?, esc);
            s.push(':');
            push_escaped(&mut s, get(fields, "port").unwrap_or("5432"), esc);
            s.push(':');
            match get(fields, "database") {
                Some(db) => push_escaped(&mut s, db, esc),
                None => s.push('*'),
            }
            s.push(':');
            push_escaped(&mut s, get(fields, "user")?, esc);
            s.push(':');
            push_escaped(&mut s, get(fields, "password")?, esc);
            s.push('\n');
            s
        }
        Source::MysqlOptionFile => {
            // Option-file values in double quotes, with '\' and '"' escaped inside them.
            let esc = |c| match c {
                '\\' => Some("\\\\"),
                '"' => Some("\\\""),
                _ => None,
            };
            let mut s = buffer(fields);
            let quoted = |s: &mut String, key: &str, value: &str| {
                let _ = write!(s, "{key}=\"");
                push_escaped(s, value, esc);
                s.push_str("\"\n");
            };
            s.push_str("[client]\n");
            quoted(&mut s, "host", get(fields, "host")?);
            let _ = writeln!(s, "port={}", get(fields, "port").unwrap_or("3306"));
            quoted(&mut s, "user", get(fields, "user")?);
            quoted(&mut s, "password", get(fields, "password")?);
            if let Some(db) = get(fields, "database") {
                quoted(&mut s, "database", db);
            }
            s
        }
    };
    let mut text = text;
    Some(SecretValue::new(std::mem::take(&mut *text)))
}

/// `key="value"` and a line break, as a MySQL option file quotes values (`\\` and `\"`
/// escaped).
fn option_line(s: &mut String, key: &str, value: &str) {
    let _ = write!(s, "{key}=\"");
    push_escaped(s, value, |c| match c {
        '\\' => Some("\\\\"),
        '"' => Some("\\\""),
        _ => None,
    });
    s.push_str("\"\n");
}
