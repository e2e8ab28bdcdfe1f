//! Every kind of the catalog, end to end through the real broker, agent and maestro-exec:
//!
//! * registration refuses each missing required field and each malformed value with a message
//!   that names the field and never the value, and changes nothing;
//! * after activation `maestro-exec -- env` holds exactly the documented variables with the
//!   right values, and the mount exactly the documented files with the right content; after
//!   deactivation all of them are gone (the expectations are written out by hand here, from the
//!   documentation (docs/integrations.md), not computed with the catalog's own code);
//! * AWS_PROD and AWS_DEV: both registered, never both active, `--only` and the
//!   `credential_process` helper pick one;
//! * the tables in docs/integrations.md and docs/sealed.md are the catalog's.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod integrations_support;

use std::collections::BTreeMap;

use integrations_support::{World, clients_available};
use maestro_tests::agent::run_cmd;
use maestro_tests::broker::Broker;
use maestro_tests::util::files_under;
use serde_json::{Value, json};

/// A key file with the shape of Google's (the key itself is not used by these tests).
const GCP_JSON: &str = r#"{"type": "service_account", "project_id": "maestro-kinds", "private_key_id": "abc123", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7planted0\n-----END PRIVATE KEY-----\n", "client_email": "ci@maestro-kinds.iam.gserviceaccount.com", "client_id": "1234", "token_uri": "https://oauth2.googleapis.com/token"}"#;
const GCP_NOT_SA: &str = r#"{"type": "authorized_user", "client_email": "a@b.c"}"#;
const GCP_NO_EMAIL: &str = r#"{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", "token_uri": "https://oauth2.googleapis.com/token"}"#;
const GCP_BAD_KEY: &str = r#"{"type": "service_account", "client_email": "a@b.example", "private_key": "planted-not-a-pem", "token_uri": "https://oauth2.googleapis.com/token"}"#;

/// One kind: a secret of it, what registration must refuse, and what it must provide.
struct Case {
    kind: &'static str,
    name: &'static str,
    fields: &'static [(&'static str, &'static str)],
    /// The fields the documentation marks required.
    required: &'static [&'static str],
    /// Values each refused with a message naming the field.
    malformed: &'static [(&'static str, &'static str)],
    /// Variables and their values (`{mount}` stands for the mount).
    vars: &'static [(&'static str, &'static str)],
    /// The kind's own files besides one per variable, and their content.
    files: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        kind: "generic",
        name: "GENERIC_ONE",
        fields: &[("API_TOKEN", "planted-generic-token"), ("SECOND_VAR", "two words")],
        required: &[],
        malformed: &[("lower_case", "x"), ("API_TOKEN", ""), ("BAD-NAME", "x")],
        vars: &[("API_TOKEN", "planted-generic-token"), ("SECOND_VAR", "two words")],
        files: &[],
    },
    Case {
        kind: "aws",
        name: "AWS_KINDS",
        fields: &[
            ("access_key_id", "AKIAKINDS00000001"),
            ("secret_access_key", "planted/aws+secret"),
            ("session_token", "planted-aws-session"),
        ],
        required: &["access_key_id", "secret_access_key"],
        malformed: &[
            ("access_key_id", "AKIA planted"),
            ("secret_access_key", "planted\nsecret"),
            ("secret_access_key", ""),
            ("region", "eu west 1"),
        ],
        vars: &[
            ("AWS_ACCESS_KEY_ID", "AKIAKINDS00000001"),
            ("AWS_SECRET_ACCESS_KEY", "planted/aws+secret"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_SESSION_TOKEN", "planted-aws-session"),
        ],
        files: &[(
            "aws/credentials",
            "[default]\naws_access_key_id = AKIAKINDS00000001\naws_secret_access_key = \
             planted/aws+secret\nregion = us-east-1\naws_session_token = planted-aws-session\n",
        )],
    },
    Case {
        kind: "azure",
        name: "AZURE_KINDS",
        fields: &[
            ("subscription_id", "sub-0001"),
            ("tenant_id", "tenant-0001"),
            ("client_id", "client-0001"),
            ("client_secret", "planted~azure.secret"),
        ],
        required: &["subscription_id", "tenant_id", "client_id", "client_secret"],
        malformed: &[("client_secret", "planted secret"), ("tenant_id", "")],
        vars: &[
            ("AZURE_SUBSCRIPTION_ID", "sub-0001"),
            ("AZURE_TENANT_ID", "tenant-0001"),
            ("AZURE_CLIENT_ID", "client-0001"),
            ("AZURE_CLIENT_SECRET", "planted~azure.secret"),
            ("ARM_SUBSCRIPTION_ID", "sub-0001"),
            ("ARM_TENANT_ID", "tenant-0001"),
            ("ARM_CLIENT_ID", "client-0001"),
            ("ARM_CLIENT_SECRET", "planted~azure.secret"),
        ],
        files: &[],
    },
    Case {
        kind: "gcp",
        name: "GCP_KINDS",
        fields: &[("service_account_json", GCP_JSON)],
        required: &["service_account_json"],
        malformed: &[
            ("service_account_json", "planted not json"),
            ("service_account_json", GCP_NOT_SA),
            ("service_account_json", GCP_NO_EMAIL),
            ("service_account_json", GCP_BAD_KEY),
        ],
        vars: &[
            ("GOOGLE_APPLICATION_CREDENTIALS", "{mount}/gcp/service-account.json"),
            ("GOOGLE_CLOUD_PROJECT", "maestro-kinds"),
            ("GCLOUD_PROJECT", "maestro-kinds"),
            ("CLOUDSDK_CORE_PROJECT", "maestro-kinds"),
            ("CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE", "{mount}/gcp/service-account.json"),
        ],
        files: &[("gcp/service-account.json", GCP_JSON)],
    },
    Case {
        kind: "github",
        name: "GITHUB_KINDS",
        fields: &[("token", "ghp_plantedkinds")],
        required: &["token"],
        malformed: &[("token", "ghp planted")],
        vars: &[("GH_TOKEN", "ghp_plantedkinds"), ("GITHUB_TOKEN", "ghp_plantedkinds")],
        files: &[],
    },
    Case {
        kind: "gitlab",
        name: "GITLAB_KINDS",
        fields: &[("token", "glpat-plantedkinds")],
        required: &["token"],
        malformed: &[("host", "https://gitlab.example.com"), ("host", "gitlab.example.com:0")],
        vars: &[("GITLAB_TOKEN", "glpat-plantedkinds"), ("GITLAB_HOST", "gitlab.com")],
        files: &[],
    },
    Case {
        kind: "postgres",
        name: "PG_KINDS",
        fields: &[
            ("host", "db.internal"),
            ("user", "app"),
            ("password", "p@ss:w/rd\\x"),
            ("database", "appdb"),
            ("sslmode", "require"),
        ],
        required: &["host", "user", "password"],
        malformed: &[
            ("port", "0"),
            ("port", "70000"),
            ("host", "db.internal:5432"),
            ("host", "postgres://db.internal"),
            ("sslmode", "sometimes"),
            ("password", "planted\npassword"),
        ],
        vars: &[
            ("PGHOST", "db.internal"),
            ("PGPORT", "5432"),
            ("PGUSER", "app"),
            ("PGPASSWORD", "p@ss:w/rd\\x"),
            ("PGDATABASE", "appdb"),
            ("PGSSLMODE", "require"),
            (
                "DATABASE_URL",
                "postgresql://app:p%40ss%3Aw%2Frd%5Cx@db.internal:5432/appdb?sslmode=require",
            ),
            ("PGPASSFILE", "{mount}/postgres/pgpass"),
        ],
        files: &[("postgres/pgpass", "db.internal:5432:appdb:app:p@ss\\:w/rd\\\\x\n")],
    },
    Case {
        kind: "mysql",
        name: "MYSQL_KINDS",
        fields: &[
            ("host", "10.1.2.3"),
            ("port", "3307"),
            ("user", "app"),
            ("password", "my\"pw'd"),
        ],
        required: &["host", "user", "password"],
        malformed: &[("port", "abc"), ("host", "my sql"), ("host", "10.1.2.3/db")],
        vars: &[
            ("MYSQL_HOST", "10.1.2.3"),
            ("MYSQL_TCP_PORT", "3307"),
            ("MYSQL_PWD", "my\"pw'd"),
            ("MYSQL_USER", "app"),
            ("DATABASE_URL", "mysql://app:my%22pw%27d@10.1.2.3:3307/"),
        ],
        files: &[(
            "mysql/my.cnf",
            "[client]\nhost=\"10.1.2.3\"\nport=3307\nuser=\"app\"\npassword=\"my\\\"pw'd\"\n",
        )],
    },
    Case {
        kind: "mongodb",
        name: "MONGO_KINDS",
        fields: &[("uri", "mongodb+srv://app:planted@cluster0.example.net/app?retryWrites=true")],
        required: &["uri"],
        malformed: &[
            ("uri", "mysql://planted@h"),
            ("uri", "mongodb://"),
            ("uri", "mongodb+srv://a,b/x"),
        ],
        vars: &[(
            "MONGODB_URI",
            "mongodb+srv://app:planted@cluster0.example.net/app?retryWrites=true",
        )],
        files: &[],
    },
    Case {
        kind: "openai",
        name: "OPENAI_KINDS",
        fields: &[("api_key", "sk-plantedopenai")],
        required: &["api_key"],
        malformed: &[("api_key", "sk planted")],
        vars: &[("OPENAI_API_KEY", "sk-plantedopenai")],
        files: &[],
    },
    Case {
        kind: "anthropic",
        name: "ANTHROPIC_KINDS",
        fields: &[("api_key", "sk-ant-planted")],
        required: &["api_key"],
        malformed: &[("api_key", "sk-ant-planted\n")],
        vars: &[("ANTHROPIC_API_KEY", "sk-ant-planted")],
        files: &[],
    },
    Case {
        kind: "stripe",
        name: "STRIPE_KINDS",
        fields: &[("api_key", "sk_test_planted")],
        required: &["api_key"],
        malformed: &[("api_key", "")],
        vars: &[("STRIPE_API_KEY", "sk_test_planted"), ("STRIPE_SECRET_KEY", "sk_test_planted")],
        files: &[],
    },
    Case {
        kind: "sendgrid",
        name: "SENDGRID_KINDS",
        fields: &[("api_key", "SG.planted.key")],
        required: &["api_key"],
        malformed: &[("api_key", "SG. planted")],
        vars: &[("SENDGRID_API_KEY", "SG.planted.key")],
        files: &[],
    },
    Case {
        kind: "mailgun",
        name: "MAILGUN_KINDS",
        fields: &[("api_key", "key-planted"), ("domain", "mg.example.com")],
        required: &["api_key"],
        malformed: &[("domain", "https://mg.example.com"), ("api_key", "key planted")],
        vars: &[("MAILGUN_API_KEY", "key-planted"), ("MAILGUN_DOMAIN", "mg.example.com")],
        files: &[],
    },
    Case {
        kind: "ssh",
        name: "SSH_KINDS",
        fields: &[
            ("private_key", SSH_KEY),
            ("known_hosts", SSH_KNOWN_HOSTS),
            ("hosts", "127.0.0.1"),
        ],
        required: &["private_key"],
        malformed: &[
            ("private_key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILt/4B0bEejsf4Yd test"),
            ("hosts", "git.example.com/repo"),
        ],
        vars: &[(
            "GIT_SSH_COMMAND",
            "ssh -i {mount}/ssh/id -o IdentitiesOnly=yes -o UserKnownHostsFile={mount}/ssh/known_hosts",
        )],
        files: &[("ssh/id", SSH_KEY), ("ssh/known_hosts", SSH_KNOWN_HOSTS)],
    },
];

/// A throwaway key made for this test with `ssh-keygen -t ed25519 -N ''`.
const SSH_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACC7f+AdGxHo7H+GHcBkj6pLQauxz0262S/X1ye/4mGmAQAAAIhcTJy2XEyc\ntgAAAAtzc2gtZWQyNTUxOQAAACC7f+AdGxHo7H+GHcBkj6pLQauxz0262S/X1ye/4mGmAQ\nAAAEAS1bGqBxCzDNAM0UXhb5znyjZ/rCa7yijESWISV18sX7t/4B0bEejsf4YdwGSPqktB\nq7HPTbrZL9fXJ7/iYaYBAAAABHRlc3QB\n-----END OPENSSH PRIVATE KEY-----\n";
const SSH_KNOWN_HOSTS: &str = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILt/4B0bEejsf4YdwGSPqktBq7HPTbrZL9fXJ7/iYaYB\n";

fn fields_json(fields: &[(&str, &str)]) -> Value {
    Value::Object(fields.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect())
}

#[test]
fn every_kind_of_the_catalog_has_a_case() {
    let cased: Vec<&str> = CASES.iter().map(|c| c.kind).collect();
    let catalog: Vec<&str> = maestro_wire::catalog::KINDS.iter().map(|k| k.name).collect();
    assert_eq!(cased, catalog);
}

#[test]
fn the_documented_tables_are_the_catalog() {
    let docs = integrations_support::workspace().join("docs");
    for (file, table) in [
        ("integrations.md", maestro_wire::catalog::markdown()),
        ("sealed.md", maestro_wire::catalog::sealing_markdown()),
    ] {
        let path = docs.join(file);
        let doc = std::fs::read_to_string(&path).unwrap();
        assert!(
            doc.contains(&table),
            "{} is out of date; replace its table with:\n{table}",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_each_missing_or_malformed_field_and_changes_nothing() {
    let broker = Broker::start();
    let api = broker.admin();
    for case in CASES {
        let post = |fields: Value| {
            let api = api.clone();
            async move {
                api.post(
                    "/v1/secrets",
                    json!({"name": case.name, "kind": case.kind, "fields": fields}),
                )
                .await
            }
        };
        if case.kind == "generic" {
            let msg = post(json!({})).await.expect_error(400, "missing_field");
            assert!(msg.contains("at least one field"), "{msg}");
        }
        for missing in case.required {
            let fields: Vec<(&str, &str)> =
                case.fields.iter().filter(|(k, _)| k != missing).copied().collect();
            let msg = post(fields_json(&fields)).await.expect_error(400, "missing_field");
            assert_eq!(
                msg,
                format!(
                    "kind '{}' requires field '{missing}'; add --field {missing}=... (or \
                     --field-file)",
                    case.kind
                )
            );
        }
        // Every required field, given but empty; then the kind's own malformed values.
        let empty: Vec<(&str, &str)> = case.required.iter().map(|f| (*f, "")).collect();
        for (field, bad) in empty.iter().chain(case.malformed) {
            let mut fields: Vec<(&str, &str)> =
                case.fields.iter().filter(|(k, _)| k != field).copied().collect();
            fields.push((field, bad));
            let reply = post(fields_json(&fields)).await;
            let msg = reply.expect_error(400, "invalid_field");
            assert!(msg.starts_with(&format!("field '{field}' ")), "{}.{field}: {msg}", case.kind);
            // The values that could be secrets carry a marker; no message may quote them.
            assert!(!msg.contains("planted"), "{}: the message quotes the value: {msg}", case.kind);
        }
        // Every required field given, nothing malformed: accepted.
        let created = post(fields_json(case.fields)).await.ok();
        assert_eq!(created["kind"], case.kind);
        api.delete(&format!("/v1/secrets/{}", case.name)).await.ok();
    }
    assert_eq!(api.get("/v1/secrets").await.ok(), json!([]), "a refused secret was stored");

    // The CLI says the same in one line on stderr, and exits non-zero.
    let out = broker.maestro(
        &broker.admin_token,
        &["secrets", "add", "PG", "--kind", "postgres", "--field", "host=db", "--field", "user=u"],
    );
    assert_ne!(out.status, 0);
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("kind 'postgres' requires field 'password'"), "{out:?}");
    let out = broker.maestro(
        &broker.admin_token,
        &[
            "secrets",
            "add",
            "PG",
            "--kind",
            "postgres",
            "--field",
            "host=db",
            "--field",
            "user=u",
            "--field",
            "password=planted-pg",
            "--field",
            "port=99999",
        ],
    );
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("field 'port' must be a TCP port number"), "{out:?}");
    assert!(!out.stderr.contains("planted"), "{out:?}");
}

/// What `maestro-exec -- env` added: its output without the variables the command started
/// with.
fn injected(world: &World, only: Option<&str>) -> BTreeMap<String, String> {
    let mut args = Vec::new();
    if let Some(name) = only {
        args.extend(["--only", name]);
    }
    args.extend(["--no-mask", "--", "env"]);
    let out = run_cmd(world.exec(&args)).ok();
    out.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !matches!(*k, "PATH" | "HOME" | "LANG" | "MAESTRO_AGENT_SOCK"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Every file under the mount, relative, with its content.
fn mounted_files(world: &World) -> BTreeMap<String, String> {
    let mount = &world.agent.mount;
    files_under(mount)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(mount).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_provides_exactly_its_variables_and_files_until_deactivated() {
    if !clients_available(&[]) {
        return;
    }
    let world = World::new("kinds");
    let mount = world.agent.mount.to_string_lossy().into_owned();
    for case in CASES {
        world.add(case.name, case.kind, fields_json(case.fields)).await;
    }
    for case in CASES {
        world.activate(&[case.name], &[case.name]).await;
        let expect_vars: BTreeMap<String, String> = case
            .vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.replace("{mount}", &mount)))
            .collect();
        assert_eq!(injected(&world, None), expect_vars, "variables of {}", case.kind);
        let mut expect_files = expect_vars.clone();
        expect_files.extend(case.files.iter().map(|(p, c)| ((*p).to_owned(), (*c).to_owned())));
        assert_eq!(mounted_files(&world), expect_files, "files of {}", case.kind);

        world.deactivate(&[case.name], &[]).await;
        assert_eq!(injected(&world, None), BTreeMap::new(), "{} left variables", case.kind);
        assert_eq!(mounted_files(&world), BTreeMap::new(), "{} left files", case.kind);
    }
    let secrets: Vec<&str> = CASES
        .iter()
        .flat_map(|c| c.fields.iter().map(|(_, v)| *v))
        .filter(|v| v.contains("planted"))
        .collect();
    assert!(secrets.len() >= 10);
    world.assert_no_leak(&secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_prod_and_dev_are_never_active_together_and_only_picks_one() {
    if !clients_available(&[]) {
        return;
    }
    let world = World::new("environments");
    let aws = |key: &str, secret: &str| json!({"access_key_id": key, "secret_access_key": secret, "region": "eu-west-1"});
    world.add("AWS_PROD", "aws", aws("AKIAPROD00000001", "planted-prod-secret")).await;
    world.add("AWS_DEV", "aws", aws("AKIADEV000000001", "planted-dev-secret")).await;
    world.add("GH", "github", json!({"token": "ghp_plantedenv"})).await;

    // Both at once: refused, naming both, and nothing activated.
    let out = world.sb.maestro(&[
        "secrets",
        "activate",
        "--session",
        &world.session,
        "AWS_PROD",
        "AWS_DEV",
    ]);
    assert_ne!(out.status, 0);
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr.contains("AWS_DEV and AWS_PROD both provide variable AWS_ACCESS_KEY_ID")
            && out.stderr.contains("nothing was activated"),
        "{out:?}"
    );
    assert!(world.agent.listed_names().is_empty());

    // One of them, then the other on top: refused as a conflict naming both.
    world.activate(&["AWS_PROD", "GH"], &["AWS_PROD", "GH"]).await;
    let msg =
        world.sb.api.activate(&world.session, &["AWS_DEV"]).await.expect_error(409, "conflict");
    assert!(msg.starts_with("AWS_DEV and AWS_PROD both provide variable"), "{msg}");

    // --only picks one secret's variables.
    let prod = injected(&world, Some("AWS_PROD"));
    assert_eq!(prod["AWS_ACCESS_KEY_ID"], "AKIAPROD00000001");
    assert_eq!(prod["AWS_REGION"], "eu-west-1");
    assert!(!prod.contains_key("GH_TOKEN"));
    let gh = injected(&world, Some("GH"));
    assert_eq!(gh.keys().collect::<Vec<_>>(), ["GH_TOKEN", "GITHUB_TOKEN"]);

    // The credential_process helper answers for the active one, or the named one.
    let helper = |args: &[&str]| {
        let mut all = vec!["aws-credential-process"];
        all.extend(args);
        run_cmd(world.exec(&all))
    };
    let json: Value = serde_json::from_str(&helper(&[]).ok().stdout).unwrap();
    assert_eq!(
        json,
        json!({"Version": 1, "AccessKeyId": "AKIAPROD00000001", "SecretAccessKey": "planted-prod-secret"})
    );
    assert_eq!(helper(&["AWS_PROD"]).ok().stdout, helper(&[]).stdout);
    let out = helper(&["AWS_DEV"]);
    assert_eq!(out.status, 1);
    assert_eq!(
        out.stderr,
        "maestro-exec aws-credential-process: secret AWS_DEV is not active in this session; \
         activate it (maestro secrets activate --session ID AWS_DEV) or name an active aws \
         secret\n"
    );
    let out = helper(&["GH"]);
    assert_eq!((out.status, out.stdout.as_str()), (1, ""));
    assert_eq!(
        out.stderr,
        "maestro-exec aws-credential-process: secret GH is active but is not of kind aws\n"
    );

    // The other environment: DEV in, PROD out.
    world.deactivate(&["AWS_PROD"], &["GH"]).await;
    world.activate(&["AWS_DEV"], &["AWS_DEV", "GH"]).await;
    assert_eq!(injected(&world, Some("AWS_DEV"))["AWS_ACCESS_KEY_ID"], "AKIADEV000000001");
    let out = run_cmd(world.exec(&["--only", "AWS_PROD", "--", "env"]));
    assert_eq!(out.status, 125, "{out:?}");
    assert!(out.stderr.contains("secret AWS_PROD is not active in this session"), "{out:?}");
    assert!(!out.stdout.contains("planted"));
    let json: Value = serde_json::from_str(&helper(&[]).ok().stdout).unwrap();
    assert_eq!(json["AccessKeyId"], "AKIADEV000000001");

    // No aws secret active: a clear error, exit 1.
    world.deactivate(&["AWS_DEV"], &["GH"]).await;
    let out = helper(&[]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("no aws secret is active in this session"), "{out:?}");
    world.assert_no_leak(&["planted-prod-secret", "planted-dev-secret", "ghp_plantedenv"]);
}
