//! `maestro kinds [KIND]`: the integrations catalog, read from the local copy of the wire
//! crate (no broker needed).
//!
//! Sources, checks and helpers are described through their serde form rather than matched
//! variant by variant, so a variant added to the catalog shows up here without a change.

use maestro_wire::catalog::{self, Kind, Sealing};
use serde::Serialize;

use super::{Output, json_output, output};
use crate::args::KindsArgs;
use crate::table::{Table, key_values};

/// Why a kind cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum KindsError {
    #[error("unknown kind '{0}'; run `maestro kinds` for the list")]
    Unknown(String),
}

pub fn run(args: KindsArgs) -> anyhow::Result<Output> {
    match args.kind {
        None if args.markdown => Ok(output(catalog::markdown())),
        None if args.json => json_output(&catalog::view()),
        None => Ok(output(overview())),
        Some(name) => {
            let kind = catalog::kind(&name)
                .ok_or_else(|| KindsError::Unknown(crate::table::clean(&name)))?;
            if args.json { json_output(kind) } else { Ok(output(detail(kind))) }
        }
    }
}

fn overview() -> String {
    let mut table =
        Table::new(&["KIND", "FIELDS (* required, =default)", "SEALED TO", "DESCRIPTION"]);
    for kind in catalog::KINDS {
        table.row(vec![
            kind.name.to_owned(),
            field_summary(kind),
            sealed_to(kind),
            kind.title.to_owned(),
        ]);
    }
    let mut out = table.render();
    out.push_str(
        "\n`maestro kinds KIND` shows a kind's variables and files, and why a kind cannot be \
         sealed (SEALED TO -).\n",
    );
    out
}

/// The overview's sealing column: the default hosts, or `-` for a kind that cannot be sealed.
fn sealed_to(kind: &Kind) -> String {
    match &kind.sealing {
        Sealing::Unsupported { .. } => "-".to_owned(),
        Sealing::Agent(seal) => format!("agent (its {} field)", seal.service.where_field()),
        Sealing::Swap(seal) | Sealing::SigV4(seal) => {
            let mut hosts: Vec<String> = seal.hosts.iter().map(|h| (*h).to_owned()).collect();
            if let Some(field) = seal.host_field {
                hosts = vec![format!("its {field} field")];
            }
            if hosts.is_empty() { "hosts you name".to_owned() } else { hosts.join(" ") }
        }
    }
}

/// The detail's lines about sealing: whether, where to, where values are put, or why not.
fn sealing_pairs(kind: &Kind) -> Vec<(&'static str, String)> {
    match &kind.sealing {
        Sealing::Unsupported { why } => vec![("sealed", format!("no: {why}"))],
        Sealing::Agent(seal) => vec![
            ("sealed", format!("yes (--exposure sealed): the agent serves {}", seal.served)),
            ("never shown", seal.hidden.join(", ")),
        ],
        Sealing::Swap(seal) | Sealing::SigV4(seal) => {
            let how = match kind.sealing {
                Sealing::SigV4(_) => "yes (requests re-signed with AWS Signature Version 4)",
                _ => "yes (--exposure sealed)",
            };
            let fields: Vec<&str> = seal.fields.iter().map(|f| f.name).collect();
            let hosts = match (seal.host_field, seal.hosts.is_empty()) {
                (Some(field), _) => {
                    format!("the host of its {field} field (default {})", seal.hosts.join(", "))
                }
                (None, true) => "none: name them with --allow-host HOST (required)".to_owned(),
                (None, false) => seal.hosts.join(", "),
            };
            vec![
                ("sealed", how.to_owned()),
                (
                    "sealed fields",
                    if fields.is_empty() { "all".to_owned() } else { fields.join(", ") },
                ),
                ("default hosts", hosts),
                ("substituted in", seal.substituted_in.to_owned()),
            ]
        }
    }
}

fn field_summary(kind: &Kind) -> String {
    if kind.free_fields {
        return "any NAME (each field is one variable)".to_owned();
    }
    let parts: Vec<String> = kind
        .fields
        .iter()
        .map(|f| match (f.required, f.default) {
            (true, _) => format!("{}*", f.name),
            (false, Some(d)) => format!("{}={d}", f.name),
            (false, None) => f.name.to_owned(),
        })
        .collect();
    parts.join(", ")
}

fn detail(kind: &Kind) -> String {
    let mut out = format!("{}: {}\n\n", kind.name, kind.title);
    if kind.free_fields {
        out.push_str(
            "fields: any names matching [A-Z_][A-Z0-9_]*; each is an environment variable of the \
             same name and a file /run/secrets/NAME\n",
        );
    } else {
        let mut table = Table::new(&["FIELD", "REQUIRED", "DEFAULT", "CHECK", "HELP"]);
        for f in kind.fields {
            table.row(vec![
                f.name.to_owned(),
                if f.required { "yes" } else { "no" }.to_owned(),
                f.default.unwrap_or("-").to_owned(),
                describe(&f.check),
                f.help.to_owned(),
            ]);
        }
        out.push_str(&table.render());
    }
    let mut pairs = Vec::new();
    if !kind.variables.is_empty() {
        let vars: Vec<String> =
            kind.variables.iter().map(|v| format!("{} ({})", v.name, describe(&v.value))).collect();
        pairs.push(("variables", vars.join(", ")));
    }
    let mut files: Vec<String> = Vec::new();
    if !kind.variables.is_empty() {
        files.push("one per variable, named after it".to_owned());
    }
    files.extend(kind.files.iter().map(|f| format!("{} ({})", f.path, describe(&f.content))));
    if !files.is_empty() {
        pairs.push(("files", files.join(", ")));
    }
    if let Some(helper) = &kind.helper {
        pairs.push(("helper", format!("maestro-exec {}", describe(helper).replace(' ', "-"))));
    }
    if let Some(setup) = kind.setup {
        pairs.push(("setup", setup.to_owned()));
    }
    pairs.extend(sealing_pairs(kind));
    // What to do at the provider when a value leaks (also shown by `secrets compromised`).
    pairs.push(("rotation", kind.rotation.steps.to_owned()));
    if let Some(link) = kind.rotation.link {
        pairs.push(("rotation docs", link.to_owned()));
    }
    if !pairs.is_empty() {
        out.push('\n');
        out.push_str(&key_values(&pairs));
    }
    out
}

/// A short description of a catalog enum from its serde form: `"line"`, `{"from":"field",
/// "arg":"region"}`, `{"helper":"git_credential",...}`, `{"prefix":["sk-"]}`.
fn describe<T: Serialize>(item: &T) -> String {
    let words = |s: &str| s.replace('_', " ");
    fn flat(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) => items.iter().map(flat).collect::<Vec<_>>().join(" "),
            // A variant's named data (`ssh key file {key, passphrase}`): "key private_key, ...".
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| format!("{} {}", k.replace('_', " "), flat(v)))
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        }
    }
    match serde_json::to_value(item) {
        Ok(serde_json::Value::String(s)) => words(&s),
        Ok(serde_json::Value::Object(map)) => {
            if let Some(from) = map.get("from").and_then(|f| f.as_str()) {
                match (from, map.get("arg")) {
                    ("field", Some(arg)) => format!("field {}", flat(arg)),
                    ("file_path", Some(arg)) => format!("path of {}", flat(arg)),
                    (from, Some(arg)) => format!("{} {}", words(from), flat(arg)),
                    (from, None) => words(from),
                }
            } else if let Some(helper) = map.get("helper").and_then(|h| h.as_str()) {
                words(helper)
            } else {
                map.iter()
                    .map(|(k, v)| format!("{} {}", words(k), flat(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
        Ok(other) => other.to_string(),
        Err(_) => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overview_lists_every_kind() {
        let out = overview();
        for kind in catalog::KINDS {
            assert!(out.lines().any(|l| l.starts_with(kind.name)), "{} missing", kind.name);
        }
        assert!(out.contains("access_key_id*"));
        assert!(out.contains("region=us-east-1"));
    }

    #[test]
    fn aws_detail() {
        let out = detail(catalog::kind("aws").unwrap());
        assert!(out.contains("AWS_ACCESS_KEY_ID (field access_key_id)"), "{out}");
        assert!(out.contains("aws/credentials (aws credentials file)"), "{out}");
        assert!(out.contains("maestro-exec aws-credential-process"), "{out}");
    }

    #[test]
    fn sealing_is_shown_per_kind_with_hosts_or_the_reason() {
        let out = overview();
        let line = |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap().to_owned();
        assert!(line("openai").contains("api.openai.com"), "{out}");
        assert!(line("aws ").contains("*.amazonaws.com"), "{out}");
        assert!(line("generic").contains("hosts you name"), "{out}");
        assert!(line("gitlab").contains("its host field"), "{out}");
        let gcp = detail(catalog::kind("gcp").unwrap());
        assert!(gcp.contains("sealed:") && gcp.contains("no: "), "{gcp}");
        let aws = detail(catalog::kind("aws").unwrap());
        assert!(aws.contains("Signature Version 4") && aws.contains("substituted in:"), "{aws}");
        let json =
            run(KindsArgs { kind: Some("mongodb".into()), json: true, markdown: false }).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["sealing"]["sealing"], "unsupported");
        assert!(v["sealing"]["why"].as_str().is_some_and(|w| !w.is_empty()));
        let json = run(KindsArgs { kind: None, json: true, markdown: false }).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let openai = v["kinds"].as_array().unwrap().iter().find(|k| k["name"] == "openai").unwrap();
        assert_eq!(openai["sealing"]["hosts"][0], "api.openai.com");
        assert!(openai["sealing"]["substituted_in"].as_str().is_some());
    }

    #[test]
    fn unknown_kind() {
        let e =
            run(KindsArgs { kind: Some("nope".into()), json: false, markdown: false }).unwrap_err();
        assert_eq!(e.to_string(), "unknown kind 'nope'; run `maestro kinds` for the list");
    }

    #[test]
    fn json_is_the_catalog_view() {
        let out = run(KindsArgs { kind: None, json: true, markdown: false }).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["kinds"][0]["name"], "generic");
    }
}
