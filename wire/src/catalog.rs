//! The integrations catalog: every kind of secret as data.
//!
//! A [`Kind`] says which fields a secret of that kind has (required or not, with defaults and a
//! validation rule), which environment variables and which files it provides when active, and
//! which credential helper answers for it. Adding a kind is adding one entry to [`KINDS`]; the
//! broker (validation, conflict checks), the agent (rendering) and the CLI (`maestro kinds`) all
//! read this table and nothing else.
//!
//! Files follow the Docker secrets convention: every variable is also a file named after it at
//! the top of the mount (`/run/secrets/AWS_ACCESS_KEY_ID`); a kind's own files (an AWS
//! shared-credentials file, a GCP key) sit at the documented paths under the mount.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::SecretValue;
use crate::limits::{MAX_FIELD_BYTES, MAX_FIELDS};
use crate::names::is_valid_variable_name;

/// One kind of secret.
#[derive(Debug, Serialize)]
pub struct Kind {
    pub name: &'static str,
    pub title: &'static str,
    /// The fixed fields. Empty for `generic`, whose fields are free (see `free_fields`).
    pub fields: &'static [Field],
    /// `generic`: any field name that is a valid variable name; each field is one variable.
    pub free_fields: bool,
    pub variables: &'static [Variable],
    pub files: &'static [File],
    pub helper: Option<Helper>,
    /// The one line a user adds to their tool's configuration, if any (for the README).
    pub setup: Option<&'static str>,
}

/// One field of a kind.
#[derive(Debug, Serialize)]
pub struct Field {
    pub name: &'static str,
    pub required: bool,
    pub default: Option<&'static str>,
    pub check: Check,
    pub help: &'static str,
}

/// How a field's value is validated when a secret is registered.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Any non-empty single-line value.
    Line,
    /// Any non-empty value (may span lines: a PEM, a JSON document).
    Text,
    /// A TCP port, 1-65535.
    Port,
    /// A host name or address, no scheme, no path.
    Host,
    /// A value starting with one of these prefixes.
    Prefix(&'static [&'static str]),
    /// A GCP service-account key: JSON with `type: service_account`, `client_email` and a PEM
    /// `private_key`.
    GcpServiceAccount,
    /// One of these values.
    OneOf(&'static [&'static str]),
}

/// One environment variable a kind provides.
#[derive(Debug, Serialize)]
pub struct Variable {
    pub name: &'static str,
    pub value: Source,
}

/// Where a variable's or file's content comes from.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "from", content = "arg", rename_all = "snake_case")]
pub enum Source {
    /// A field's value (with its default). Omitted when the field is absent and has no default.
    Field(&'static str),
    /// The absolute path of one of the kind's files under the mount.
    FilePath(&'static str),
    /// A string key of a JSON document held in a field (omitted when absent).
    JsonKey(&'static str, &'static str),
    /// `postgresql://user:password@host:port/database?sslmode=...`, parts URL-encoded.
    PostgresUrl,
    /// `mysql://user:password@host:port/database`, parts URL-encoded.
    MysqlUrl,
    /// An AWS shared-credentials file with a `[default]` profile.
    AwsCredentialsFile,
    /// A PostgreSQL password file line (`host:port:db:user:password`, `:` and `\` escaped).
    Pgpass,
    /// A MySQL option file with a `[client]` group.
    MysqlOptionFile,
}

/// One file a kind provides, besides the one-per-variable files.
#[derive(Debug, Serialize)]
pub struct File {
    /// Path relative to the mount.
    pub path: &'static str,
    pub content: Source,
}

/// Which credential helper of `maestro-exec` answers for a kind.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "helper", rename_all = "snake_case")]
pub enum Helper {
    /// `maestro-exec git-credential`: answers git for `host` (a literal, or the value of
    /// `host_field`) with `username` and the `token` field as password.
    GitCredential {
        host: &'static str,
        host_field: Option<&'static str>,
        username: &'static str,
        token_field: &'static str,
    },
    /// `maestro-exec aws-credential-process [NAME]`: the `credential_process` JSON.
    AwsCredentialProcess,
}

const fn req(name: &'static str, check: Check, help: &'static str) -> Field {
    Field { name, required: true, default: None, check, help }
}
const fn opt(name: &'static str, check: Check, help: &'static str) -> Field {
    Field { name, required: false, default: None, check, help }
}
const fn dflt(
    name: &'static str,
    default: &'static str,
    check: Check,
    help: &'static str,
) -> Field {
    Field { name, required: false, default: Some(default), check, help }
}
const fn var(name: &'static str, value: Source) -> Variable {
    Variable { name, value }
}
const fn field(name: &'static str) -> Source {
    Source::Field(name)
}

const API_KEY: &[Field] = &[req("api_key", Check::Line, "the API key")];

/// Every kind, in the order `maestro kinds` shows them.
pub static KINDS: &[Kind] = &[
    Kind {
        name: "generic",
        title: "Any secret: each field is one variable of the same name",
        fields: &[],
        free_fields: true,
        variables: &[],
        files: &[],
        helper: None,
        setup: None,
    },
    Kind {
        name: "aws",
        title: "AWS access key",
        fields: &[
            req("access_key_id", Check::Line, "access key id (AKIA...)"),
            req("secret_access_key", Check::Line, "secret access key"),
            dflt("region", "us-east-1", Check::Line, "default region"),
            opt("session_token", Check::Line, "session token of temporary credentials"),
        ],
        free_fields: false,
        variables: &[
            var("AWS_ACCESS_KEY_ID", field("access_key_id")),
            var("AWS_SECRET_ACCESS_KEY", field("secret_access_key")),
            var("AWS_REGION", field("region")),
            var("AWS_DEFAULT_REGION", field("region")),
            var("AWS_SESSION_TOKEN", field("session_token")),
        ],
        files: &[File { path: "aws/credentials", content: Source::AwsCredentialsFile }],
        helper: Some(Helper::AwsCredentialProcess),
        setup: Some("~/.aws/config: credential_process = maestro-exec aws-credential-process"),
    },
    Kind {
        name: "azure",
        title: "Azure service principal",
        fields: &[
            req("subscription_id", Check::Line, "subscription id"),
            req("tenant_id", Check::Line, "tenant (directory) id"),
            req("client_id", Check::Line, "application (client) id"),
            req("client_secret", Check::Line, "client secret"),
        ],
        free_fields: false,
        variables: &[
            var("AZURE_SUBSCRIPTION_ID", field("subscription_id")),
            var("AZURE_TENANT_ID", field("tenant_id")),
            var("AZURE_CLIENT_ID", field("client_id")),
            var("AZURE_CLIENT_SECRET", field("client_secret")),
            // Terraform's azurerm provider reads the ARM_ names.
            var("ARM_SUBSCRIPTION_ID", field("subscription_id")),
            var("ARM_TENANT_ID", field("tenant_id")),
            var("ARM_CLIENT_ID", field("client_id")),
            var("ARM_CLIENT_SECRET", field("client_secret")),
        ],
        files: &[],
        helper: None,
        setup: None,
    },
    Kind {
        name: "gcp",
        title: "Google Cloud service account key",
        fields: &[req(
            "service_account_json",
            Check::GcpServiceAccount,
            "the service account key file (JSON)",
        )],
        free_fields: false,
        variables: &[
            var("GOOGLE_APPLICATION_CREDENTIALS", Source::FilePath("gcp/service-account.json")),
            var("GOOGLE_CLOUD_PROJECT", Source::JsonKey("service_account_json", "project_id")),
        ],
        files: &[File { path: "gcp/service-account.json", content: field("service_account_json") }],
        helper: None,
        setup: None,
    },
    Kind {
        name: "github",
        title: "GitHub token (personal access token or OAuth)",
        fields: &[req("token", Check::Line, "the token")],
        free_fields: false,
        variables: &[var("GH_TOKEN", field("token")), var("GITHUB_TOKEN", field("token"))],
        files: &[],
        helper: Some(Helper::GitCredential {
            host: "github.com",
            host_field: None,
            username: "x-access-token",
            token_field: "token",
        }),
        setup: Some("git config --global credential.helper '!maestro-exec git-credential'"),
    },
    Kind {
        name: "gitlab",
        title: "GitLab token (personal access token or OAuth)",
        fields: &[
            req("token", Check::Line, "the token"),
            dflt("host", "gitlab.com", Check::Host, "GitLab host name"),
        ],
        free_fields: false,
        variables: &[var("GITLAB_TOKEN", field("token")), var("GITLAB_HOST", field("host"))],
        files: &[],
        helper: Some(Helper::GitCredential {
            host: "gitlab.com",
            host_field: Some("host"),
            username: "oauth2",
            token_field: "token",
        }),
        setup: Some("git config --global credential.helper '!maestro-exec git-credential'"),
    },
    Kind {
        name: "postgres",
        title: "PostgreSQL login",
        fields: &[
            req("host", Check::Host, "server host"),
            dflt("port", "5432", Check::Port, "server port"),
            req("user", Check::Line, "user name"),
            req("password", Check::Line, "password"),
            opt("database", Check::Line, "database name"),
            opt(
                "sslmode",
                Check::OneOf(&[
                    "disable",
                    "allow",
                    "prefer",
                    "require",
                    "verify-ca",
                    "verify-full",
                ]),
                "libpq sslmode",
            ),
        ],
        free_fields: false,
        variables: &[
            var("PGHOST", field("host")),
            var("PGPORT", field("port")),
            var("PGUSER", field("user")),
            var("PGPASSWORD", field("password")),
            var("PGDATABASE", field("database")),
            var("PGSSLMODE", field("sslmode")),
            var("DATABASE_URL", Source::PostgresUrl),
            var("PGPASSFILE", Source::FilePath("postgres/pgpass")),
        ],
        files: &[File { path: "postgres/pgpass", content: Source::Pgpass }],
        helper: None,
        setup: None,
    },
    Kind {
        name: "mysql",
        title: "MySQL / MariaDB login",
        fields: &[
            req("host", Check::Host, "server host"),
            dflt("port", "3306", Check::Port, "server port"),
            req("user", Check::Line, "user name"),
            req("password", Check::Line, "password"),
            opt("database", Check::Line, "database name"),
        ],
        free_fields: false,
        variables: &[
            var("MYSQL_HOST", field("host")),
            var("MYSQL_TCP_PORT", field("port")),
            var("MYSQL_USER", field("user")),
            var("MYSQL_PWD", field("password")),
            var("MYSQL_DATABASE", field("database")),
            var("DATABASE_URL", Source::MysqlUrl),
        ],
        files: &[File { path: "mysql/my.cnf", content: Source::MysqlOptionFile }],
        helper: None,
        setup: Some("mysql --defaults-extra-file=/run/secrets/mysql/my.cnf"),
    },
    Kind {
        name: "mongodb",
        title: "MongoDB connection string",
        fields: &[req(
            "uri",
            Check::Prefix(&["mongodb://", "mongodb+srv://"]),
            "connection string",
        )],
        free_fields: false,
        variables: &[var("MONGODB_URI", field("uri"))],
        files: &[],
        helper: None,
        setup: None,
    },
    Kind {
        name: "openai",
        title: "OpenAI API key",
        fields: API_KEY,
        free_fields: false,
        variables: &[var("OPENAI_API_KEY", field("api_key"))],
        files: &[],
        helper: None,
        setup: None,
    },
    Kind {
        name: "anthropic",
        title: "Anthropic API key",
        fields: API_KEY,
        free_fields: false,
        variables: &[var("ANTHROPIC_API_KEY", field("api_key"))],
        files: &[],
        helper: None,
        setup: None,
    },
    Kind {
        name: "stripe",
        title: "Stripe secret key",
        fields: API_KEY,
        free_fields: false,
        variables: &[var("STRIPE_API_KEY", field("api_key"))],
        files: &[],
        helper: None,
        setup: None,
    },
    Kind {
        name: "sendgrid",
        title: "SendGrid API key",
        fields: API_KEY,
        free_fields: false,
        variables: &[var("SENDGRID_API_KEY", field("api_key"))],
        files: &[],
        helper: None,
        setup: None,
    },
    Kind {
        name: "mailgun",
        title: "Mailgun API key",
        fields: &[
            req("api_key", Check::Line, "the API key"),
            opt("domain", Check::Host, "sending domain"),
        ],
        free_fields: false,
        variables: &[
            var("MAILGUN_API_KEY", field("api_key")),
            var("MAILGUN_DOMAIN", field("domain")),
        ],
        files: &[],
        helper: None,
        setup: None,
    },
];

/// Looks a kind up by name.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// Why a secret's fields do not fit its kind. Names the field; never holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("unknown kind '{0}'; run `maestro kinds` for the list")]
    UnknownKind(String),
    #[error("kind '{kind}' requires field '{field}'; add --field {field}=... (or --field-file)")]
    MissingField { kind: String, field: String },
    #[error("kind '{kind}' has no field '{field}'; its fields are: {known}")]
    UnknownField { kind: String, field: String, known: String },
    #[error("field '{field}' {problem}")]
    InvalidField { field: String, problem: String },
    #[error("field '{field}' is {size} bytes; the limit is {MAX_FIELD_BYTES} bytes")]
    TooLarge { field: String, size: usize },
    #[error("a secret has at most {MAX_FIELDS} fields; this one has {0}")]
    TooManyFields(usize),
    #[error("a generic secret needs at least one field; add --field NAME=... (or --field-file)")]
    NoFields,
}

/// Checks fields against their kind and returns them with defaults filled in.
pub fn validate(
    kind_name: &str,
    fields: &BTreeMap<String, SecretValue>,
) -> Result<BTreeMap<String, SecretValue>, ValidationError> {
    let kind = kind(kind_name).ok_or_else(|| ValidationError::UnknownKind(kind_name.to_owned()))?;
    if fields.len() > MAX_FIELDS {
        return Err(ValidationError::TooManyFields(fields.len()));
    }
    for (name, value) in fields {
        if value.len() > MAX_FIELD_BYTES {
            return Err(ValidationError::TooLarge { field: name.clone(), size: value.len() });
        }
    }
    if kind.free_fields {
        if fields.is_empty() {
            return Err(ValidationError::NoFields);
        }
        for (name, value) in fields {
            if !is_valid_variable_name(name) {
                return Err(ValidationError::InvalidField {
                    field: name.clone(),
                    problem: "is not a valid variable name; use [A-Z_][A-Z0-9_]*".to_owned(),
                });
            }
            if value.is_empty() {
                return Err(invalid(name, "is empty"));
            }
            if value.expose().contains('\0') {
                return Err(invalid(
                    name,
                    "contains a NUL byte, which no environment variable can hold",
                ));
            }
        }
        return Ok(fields.clone());
    }
    for name in fields.keys() {
        if !kind.fields.iter().any(|f| f.name == name) {
            let known: Vec<&str> = kind.fields.iter().map(|f| f.name).collect();
            return Err(ValidationError::UnknownField {
                kind: kind.name.to_owned(),
                field: name.clone(),
                known: known.join(", "),
            });
        }
    }
    let mut out = BTreeMap::new();
    for spec in kind.fields {
        match fields.get(spec.name) {
            Some(value) => {
                check_value(spec, value)?;
                out.insert(spec.name.to_owned(), value.clone());
            }
            None if spec.required => {
                return Err(ValidationError::MissingField {
                    kind: kind.name.to_owned(),
                    field: spec.name.to_owned(),
                });
            }
            None => {
                if let Some(default) = spec.default {
                    out.insert(spec.name.to_owned(), SecretValue::from(default));
                }
            }
        }
    }
    Ok(out)
}

fn invalid(field: &str, problem: &str) -> ValidationError {
    ValidationError::InvalidField { field: field.to_owned(), problem: problem.to_owned() }
}

fn check_value(spec: &Field, value: &SecretValue) -> Result<(), ValidationError> {
    let v = value.expose();
    let name = spec.name;
    if v.is_empty() {
        return Err(invalid(name, "is empty"));
    }
    if v.contains('\0') {
        return Err(invalid(name, "contains a NUL byte"));
    }
    let single_line = || {
        if v.contains('\n') || v.contains('\r') {
            Err(invalid(name, "must be a single line"))
        } else {
            Ok(())
        }
    };
    match spec.check {
        Check::Text => Ok(()),
        Check::Line => single_line(),
        Check::Port => match v.parse::<u16>() {
            Ok(p) if p > 0 => Ok(()),
            _ => Err(invalid(name, "must be a TCP port number between 1 and 65535")),
        },
        Check::Host => {
            let ok = v.len() <= 253
                && v.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_')
                });
            if ok {
                Ok(())
            } else {
                Err(invalid(name, "must be a host name or address, without scheme or path"))
            }
        }
        Check::Prefix(prefixes) => {
            single_line()?;
            if prefixes.iter().any(|p| v.starts_with(p)) {
                Ok(())
            } else {
                Err(invalid(name, &format!("must start with {}", prefixes.join(" or "))))
            }
        }
        Check::OneOf(values) => {
            if values.contains(&v) {
                Ok(())
            } else {
                Err(invalid(name, &format!("must be one of: {}", values.join(", "))))
            }
        }
        Check::GcpServiceAccount => check_gcp_key(name, v),
    }
}

fn check_gcp_key(name: &str, v: &str) -> Result<(), ValidationError> {
    // Parse errors are described by position only: serde_json's messages never quote input,
    // but we do not rely on that and name no part of the document.
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
        Some(e) if e.contains('@') => {}
        _ => return Err(invalid(name, "lacks a \"client_email\"")),
    }
    match obj.get("private_key").and_then(|k| k.as_str()) {
        Some(k) if k.trim_start().starts_with("-----BEGIN") && k.contains("PRIVATE KEY-----") => {
            Ok(())
        }
        _ => Err(invalid(name, "lacks a PEM \"private_key\"")),
    }
}

/// The variables and files a secret of `kind` with these field names provides (names only).
/// Used for conflict checks, which must not need the values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outputs {
    pub variables: Vec<String>,
    /// Relative to the mount.
    pub files: Vec<String>,
}

/// Names of what a secret provides, from its kind and the names of the fields it has.
pub fn outputs<'a>(kind: &Kind, field_names: impl IntoIterator<Item = &'a str>) -> Outputs {
    let have: Vec<&str> = field_names.into_iter().collect();
    let mut out = Outputs::default();
    if kind.free_fields {
        out.variables = have.iter().map(|s| (*s).to_owned()).collect();
    } else {
        let present = |f: &str| {
            have.contains(&f) || kind.fields.iter().any(|s| s.name == f && s.default.is_some())
        };
        for v in kind.variables {
            let provided = match v.value {
                Source::Field(f) => present(f),
                // Whether a JSON key is there depends on the value; claim the name anyway so
                // that conflict checks are conservative.
                Source::JsonKey(f, _) => present(f),
                _ => true,
            };
            if provided {
                out.variables.push(v.name.to_owned());
            }
        }
        out.files = kind.files.iter().map(|f| f.path.to_owned()).collect();
    }
    let mut files: Vec<String> = out.variables.clone();
    files.append(&mut out.files);
    out.files = files;
    out
}

/// A secret rendered for a sandbox: variable values and file contents.
#[derive(Debug, Default)]
pub struct Rendered {
    pub variables: Vec<(String, SecretValue)>,
    /// Relative path under the mount, content.
    pub files: Vec<(String, SecretValue)>,
}

/// Renders a secret's variables and files. `mount` is the absolute mount path, for variables
/// that hold a file's path. `fields` are as stored (defaults applied).
pub fn render(kind: &Kind, fields: &BTreeMap<String, SecretValue>, mount: &str) -> Rendered {
    let mut r = Rendered::default();
    if kind.free_fields {
        for (name, value) in fields {
            r.variables.push((name.clone(), value.clone()));
        }
    } else {
        for v in kind.variables {
            if let Some(value) = source_value(v.value, fields, mount) {
                r.variables.push((v.name.to_owned(), value));
            }
        }
    }
    let mut files: Vec<(String, SecretValue)> = r.variables.clone();
    for f in kind.files {
        if let Some(value) = source_value(f.content, fields, mount) {
            files.push((f.path.to_owned(), value));
        }
    }
    r.files = files;
    r
}

fn get<'a>(fields: &'a BTreeMap<String, SecretValue>, name: &str) -> Option<&'a str> {
    fields.get(name).map(|v| v.expose())
}

fn source_value(
    source: Source,
    fields: &BTreeMap<String, SecretValue>,
    mount: &str,
) -> Option<SecretValue> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    match source {
        Source::Field(f) => fields.get(f).cloned(),
        Source::FilePath(p) => {
            Some(SecretValue::new(format!("{}/{}", mount.trim_end_matches('/'), p)))
        }
        Source::JsonKey(f, key) => {
            let doc: serde_json::Value = serde_json::from_str(get(fields, f)?).ok()?;
            doc.get(key)?.as_str().map(SecretValue::from)
        }
        Source::PostgresUrl => {
            let mut url = format!(
                "postgresql://{}:{}@{}:{}/{}",
                enc(get(fields, "user")?),
                enc(get(fields, "password")?),
                get(fields, "host")?,
                get(fields, "port").unwrap_or("5432"),
                enc(get(fields, "database").unwrap_or("")),
            );
            if let Some(mode) = get(fields, "sslmode") {
                url.push_str("?sslmode=");
                url.push_str(mode);
            }
            Some(SecretValue::new(url))
        }
        Source::MysqlUrl => Some(SecretValue::new(format!(
            "mysql://{}:{}@{}:{}/{}",
            enc(get(fields, "user")?),
            enc(get(fields, "password")?),
            get(fields, "host")?,
            get(fields, "port").unwrap_or("3306"),
            enc(get(fields, "database").unwrap_or("")),
        ))),
        Source::AwsCredentialsFile => {
            let mut s = format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\nregion = {}\n",
                get(fields, "access_key_id")?,
                get(fields, "secret_access_key")?,
                get(fields, "region").unwrap_or("us-east-1"),
            );
            if let Some(token) = get(fields, "session_token") {
                s.push_str(&format!("aws_session_token = {token}\n"));
            }
            Some(SecretValue::new(s))
        }
        Source::Pgpass => {
            let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
            Some(SecretValue::new(format!(
                "{}:{}:{}:{}:{}\n",
                esc(get(fields, "host")?),
                esc(get(fields, "port").unwrap_or("5432")),
                get(fields, "database").map(esc).unwrap_or_else(|| "*".to_owned()),
                esc(get(fields, "user")?),
                esc(get(fields, "password")?),
            )))
        }
        Source::MysqlOptionFile => {
            // Option-file values are quoted; backslash and quote are escaped inside quotes.
            let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
            let mut s = format!(
                "[client]\nhost={}\nport={}\nuser={}\npassword={}\n",
                q(get(fields, "host")?),
                get(fields, "port").unwrap_or("3306"),
                q(get(fields, "user")?),
                q(get(fields, "password")?),
            );
            if let Some(db) = get(fields, "database") {
                s.push_str(&format!("database={}\n", q(db)));
            }
            Some(SecretValue::new(s))
        }
    }
}

/// The catalog as `GET /v1/kinds` and `maestro kinds --json` show it.
#[derive(Debug, Serialize)]
pub struct CatalogView {
    pub kinds: &'static [Kind],
}

/// The whole catalog, for serialization.
pub fn view() -> CatalogView {
    CatalogView { kinds: KINDS }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretValue> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), SecretValue::from(*v))).collect()
    }

    #[test]
    fn aws_defaults_region_and_omits_absent_token() {
        let f =
            validate("aws", &fields(&[("access_key_id", "AKIA1"), ("secret_access_key", "s3")]))
                .unwrap();
        assert_eq!(f.get("region").unwrap().expose(), "us-east-1");
        let r = render(kind("aws").unwrap(), &f, "/run/secrets");
        let names: Vec<&str> = r.variables.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION"]
        );
        assert!(r.files.iter().any(|(p, _)| p == "aws/credentials"));
        let o = outputs(kind("aws").unwrap(), f.keys().map(String::as_str));
        assert_eq!(o.variables, names);
        assert!(o.files.contains(&"aws/credentials".to_owned()));
        assert!(o.files.contains(&"AWS_REGION".to_owned()));
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let e = validate("aws", &fields(&[("access_key_id", "AKIA1")])).unwrap_err();
        assert_eq!(
            e,
            ValidationError::MissingField { kind: "aws".into(), field: "secret_access_key".into() }
        );
        let e = validate("aws", &fields(&[("nope", "x")])).unwrap_err();
        assert!(e.to_string().contains("no field 'nope'"));
        assert!(matches!(validate("nosuch", &fields(&[])), Err(ValidationError::UnknownKind(_))));
    }

    #[test]
    fn generic_fields_are_variables() {
        let f = validate("generic", &fields(&[("API_TOKEN", "v")])).unwrap();
        let r = render(kind("generic").unwrap(), &f, "/m");
        assert_eq!(r.variables[0].0, "API_TOKEN");
        assert_eq!(r.files[0].0, "API_TOKEN");
        assert!(validate("generic", &fields(&[("lower", "v")])).is_err());
        assert_eq!(validate("generic", &fields(&[])), Err(ValidationError::NoFields));
    }

    #[test]
    fn limits() {
        let big = "x".repeat(MAX_FIELD_BYTES + 1);
        assert!(matches!(
            validate("generic", &fields(&[("A", &big)])),
            Err(ValidationError::TooLarge { .. })
        ));
        let many: BTreeMap<String, SecretValue> =
            (0..=MAX_FIELDS).map(|i| (format!("F{i}"), SecretValue::from("v"))).collect();
        assert!(matches!(validate("generic", &many), Err(ValidationError::TooManyFields(_))));
    }

    #[test]
    fn postgres_url_encodes_password() {
        let f = validate(
            "postgres",
            &fields(&[
                ("host", "db"),
                ("user", "u"),
                ("password", "p@ss:w/rd"),
                ("database", "app"),
            ]),
        )
        .unwrap();
        let r = render(kind("postgres").unwrap(), &f, "/run/secrets");
        let url = r.variables.iter().find(|(n, _)| n == "DATABASE_URL").unwrap();
        assert_eq!(url.1.expose(), "postgresql://u:p%40ss%3Aw%2Frd@db:5432/app");
        let pass = r.files.iter().find(|(n, _)| n == "postgres/pgpass").unwrap();
        assert_eq!(pass.1.expose(), "db:5432:app:u:p@ss\\:w/rd\n");
    }

    #[test]
    fn validation_errors_never_hold_values() {
        let e = validate("mongodb", &fields(&[("uri", "planted-value-123")])).unwrap_err();
        assert!(!e.to_string().contains("planted"));
        let e = validate("gcp", &fields(&[("service_account_json", "{planted")])).unwrap_err();
        assert!(!e.to_string().contains("planted"));
    }
}
