//! The catalog as the Markdown table of docs/integrations.md, generated from [`KINDS`] so that the
//! documentation cannot drift from the code (a test compares the table in `docs/integrations.md`).

use std::fmt::Write;

use super::seal::{Place, Sealing};
use super::{Check, Helper, KINDS, Kind, Source};

/// The mount the documentation describes.
const MOUNT: &str = "/run/secrets";

fn fields(kind: &Kind) -> String {
    if kind.free_fields {
        return "any `NAME`* (`[A-Z_][A-Z0-9_]*`)".to_owned();
    }
    let parts: Vec<String> = kind
        .fields
        .iter()
        .map(|f| {
            let mut s = format!("`{}`", f.name);
            if f.required {
                s.push('*');
            }
            let mut notes: Vec<String> = rule(f.check).into_iter().collect();
            if let Some(d) = f.default {
                notes.push(format!("default `{d}`"));
            }
            if !notes.is_empty() {
                let _ = write!(s, " ({})", notes.join(", "));
            }
            s
        })
        .collect();
    parts.join(", ")
}

/// What a check demands, where it is more than "a value".
fn rule(check: Check) -> Option<String> {
    match check {
        Check::Text | Check::Line | Check::Token => None,
        Check::Port => Some("port".to_owned()),
        Check::Host => Some("host".to_owned()),
        Check::HostPort => Some("host[:port]".to_owned()),
        Check::Prefix(p) | Check::Uri(p) => {
            Some(p.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" or "))
        }
        Check::OneOf(values) => Some(values.join("/")),
        Check::GcpServiceAccount => Some("service-account key JSON".to_owned()),
        Check::SshPrivateKey { .. } => Some("OpenSSH or PEM private key".to_owned()),
        Check::HostPatterns => Some("host patterns".to_owned()),
        Check::Owners => Some("owners or path prefixes".to_owned()),
    }
}

fn variables(kind: &Kind) -> String {
    if kind.free_fields {
        return "one per field, same name".to_owned();
    }
    let optional = |source: Source| match source {
        Source::Field(f)
            if kind.fields.iter().any(|s| s.name == f && !s.required && s.default.is_none()) =>
        {
            Some("when set".to_owned())
        }
        Source::JsonKey(_, key) => Some(format!("when the JSON has `{key}`")),
        _ => None,
    };
    let parts: Vec<String> = kind
        .variables
        .iter()
        .map(|v| match (v.value, optional(v.value)) {
            (Source::FilePath(p), _) => format!("`{}` (`{MOUNT}/{p}`)", v.name),
            (Source::FieldFilePath { field, path }, _) => {
                format!("`{}` (`{MOUNT}/{path}`, when `{field}` is set)", v.name)
            }
            (_, Some(when)) => format!("`{}` ({when})", v.name),
            (_, None) => format!("`{}`", v.name),
        })
        .collect();
    match kind.owners_field() {
        Some(f) => format!("{}; none when `{f}` is set", parts.join(", ")),
        None => parts.join(", "),
    }
}

fn describe(source: Source) -> &'static str {
    match source {
        Source::Field(_) => "the field's value",
        Source::FilePath(_) | Source::FieldFilePath { .. } => "a path",
        Source::JsonKey(..) => "a key of the JSON",
        Source::PostgresUrl => "a PostgreSQL URL",
        Source::MysqlUrl => "a MySQL URL",
        Source::AwsCredentialsFile => "shared-credentials file, `[default]` profile",
        Source::Pgpass => "libpq password file",
        Source::MysqlOptionFile => "option file, `[client]` group",
        Source::SshKeyFile { .. } => "the key, decrypted when it has a passphrase; mode 0400",
        Source::SshCommand { .. } => "an `ssh` command line",
        Source::AgentSocket => "the agent's socket",
        Source::AgentSocketDir => "the directory of the agent's socket",
        Source::PostgresSocketUrl => "a PostgreSQL URL of the agent's socket, no password",
        Source::MysqlSocketUrl => "a MySQL URL of the agent's socket (`?socket=`), no password",
        Source::MysqlSocketOptionFile => {
            "a `[client]` option file naming the agent's socket, no password"
        }
        Source::Text(_) => "a fixed value",
    }
}

fn files(kind: &Kind) -> String {
    let parts: Vec<String> = kind
        .files
        .iter()
        .map(|f| format!("`{MOUNT}/{}` ({})", f.path, describe(f.content)))
        .collect();
    parts.join(", ")
}

fn helper(kind: &Kind) -> String {
    match kind.helper {
        Some(Helper::GitCredential { host, host_field: None, .. }) => {
            format!("`maestro-exec git-credential` for {host}")
        }
        Some(Helper::GitCredential { host_field: Some(f), .. }) => {
            format!("`maestro-exec git-credential` for the `{f}`")
        }
        Some(Helper::AwsCredentialProcess) => "`maestro-exec aws-credential-process`".to_owned(),
        None => String::new(),
    }
}

/// The catalog as a Markdown table, one row per kind, then a list of each kind's one line of
/// configuration for its tools, for the kinds that have one.
pub fn markdown() -> String {
    let mut out = String::from(
        "| kind | fields (* required) | variables (each also a file `/run/secrets/NAME`) | \
         other files | helper |\n|---|---|---|---|---|\n",
    );
    for kind in KINDS {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            kind.name,
            fields(kind),
            variables(kind),
            files(kind),
            helper(kind)
        );
    }
    out.push_str("\nThe one line to add to a tool's configuration, per kind:\n\n");
    for kind in KINDS.iter().filter(|k| k.setup.is_some()) {
        let _ = writeln!(out, "- `{}`: `{}`", kind.name, kind.setup.unwrap_or_default());
    }
    out
}

fn place(p: &Place) -> String {
    match p {
        Place::Authorization => "`Authorization`".to_owned(),
        Place::Header(h) => format!("header `{h}`"),
        Place::FormField(f) => format!("form field `{f}`"),
        Place::Anywhere => "request line, any header, form bodies".to_owned(),
    }
}

/// Which kinds can be sealed, the fields the sandbox sees as placeholders, the hosts the values
/// may go to and where in a request the proxy puts them; or why a kind cannot be sealed.
pub fn sealing_markdown() -> String {
    let mut out = String::from(
        "| kind | sealed fields | hosts (default) | the proxy puts the value in |\n|---|---|---|---|\n",
    );
    for kind in KINDS {
        let row = match &kind.sealing {
            Sealing::Unsupported { why } => format!("cannot be sealed: {why} | |"),
            Sealing::Agent(seal) => {
                let f: Vec<String> =
                    seal.hidden.iter().map(|f| format!("`{f}` (never shown)")).collect();
                format!(
                    "{} | the `{}` field | the agent serves {}",
                    f.join(", "),
                    seal.service.where_field(),
                    seal.served
                )
            }
            Sealing::Swap(seal) | Sealing::SigV4(seal) => {
                let fields = if kind.free_fields {
                    "every field".to_owned()
                } else {
                    let f: Vec<String> =
                        seal.fields.iter().map(|f| format!("`{}`", f.name)).collect();
                    f.join(", ")
                };
                let hosts = match (seal.host_field, seal.hosts) {
                    (Some(f), _) => format!("the `{f}` field"),
                    (None, []) => "none: name them with `--allow-host`".to_owned(),
                    (None, h) => h.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", "),
                };
                let mut places: Vec<String> = seal.places.iter().map(place).collect();
                if matches!(kind.sealing, Sealing::SigV4(_)) {
                    places.insert(0, "re-signs requests (SigV4)".to_owned());
                }
                format!("{fields} | {hosts} | {}", places.join(", "))
            }
        };
        let _ = writeln!(out, "| `{}` | {row} |", kind.name);
    }
    out
}
