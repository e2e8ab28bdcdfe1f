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
//!
//! Variable names are the ones each ecosystem's own tools read (boto3 and the AWS CLI, the Azure
//! SDKs and Terraform, Google's client libraries and gcloud, `gh`, `glab`, libpq, the MySQL
//! client, ...), so that no user writes glue. Submodules: `check` (field validation), `render`
//! (variable and file text), `markdown` (the documentation's tables).

mod check;
mod markdown;
pub mod owners;
mod render;
pub mod seal;
pub mod ssh;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::SecretValue;
use crate::limits::{MAX_FIELD_BYTES, MAX_FIELDS};
use crate::names::is_valid_variable_name;

use check::{check_value, invalid};
pub use markdown::{markdown, sealing_markdown};
use render::source_value;
pub use seal::Place;
use seal::sealed;
pub use seal::{
    AgentSeal, Exposure, PG_RELAY_PORT, RelayProtocol, Seal, SealError, Sealing, Service,
    SshAgentFields,
};

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
    /// The one line a user adds to their tool's configuration, if any (for the documentation).
    pub setup: Option<&'static str>,
    /// How to rotate a leaked value at its provider (shown when a secret is marked compromised).
    pub rotation: Rotation,
    /// Whether a secret of this kind can be sealed, and how (see [`seal`]).
    pub sealing: Sealing,
}

/// How to rotate a kind's value at its provider: one line of steps and the provider's documentation.
#[derive(Debug, Serialize)]
pub struct Rotation {
    pub steps: &'static str,
    pub link: Option<&'static str>,
}

/// One field of a kind.
#[derive(Debug, Serialize)]
pub struct Field {
    pub name: &'static str,
    pub required: bool,
    pub default: Option<&'static str>,
    pub check: Check,
    pub help: &'static str,
    /// Not secret (a region, host, port, user or database name): shown back by `secrets show`
    /// and the web UI, where every other field stays write-only.
    pub shown: bool,
}

/// How a field's value is validated when a secret is registered.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Any non-empty single-line value without control characters (tabs allowed).
    Line,
    /// Any non-empty value (may span lines: a PEM, a JSON document).
    Text,
    /// A TCP port, 1-65535.
    Port,
    /// A DNS name, an IPv4 address or a bare IPv6 address: no scheme, port, path or brackets.
    Host,
    /// A single-line value starting with one of these prefixes, with something after it.
    Prefix(&'static [&'static str]),
    /// A GCP service-account key: JSON with `type: service_account`, `client_email` and a PEM
    /// `private_key`.
    GcpServiceAccount,
    /// One of these values.
    OneOf(&'static [&'static str]),
    /// A key, token or id: one line, no white space (a paste that caught a space or a line break
    /// is the usual mistake).
    Token,
    /// A host name or address with an optional `:port` (`gitlab.example.com:8443`,
    /// `[::1]:8443`), as git names a server in its credential requests.
    HostPort,
    /// A URI with one of these scheme prefixes (`mongodb://`) that names at least one host.
    Uri(&'static [&'static str]),
    /// An SSH private key (OpenSSH or PEM) that `ssh-key` reads, checked against the passphrase
    /// in the field named here (see [`ssh::check_key`]).
    SshPrivateKey { passphrase: &'static str },
    /// Host patterns separated by commas or spaces, with ssh_config's `*` and `?`.
    HostPatterns,
    /// Owners or repository path prefixes separated by commas or spaces (`alice,acme/infra`),
    /// as [`owners::parse`] reads them.
    Owners,
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
    /// The same, only when `field` is set (the file is that field's content: a CA certificate).
    FieldFilePath { field: &'static str, path: &'static str },
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
    /// An SSH private key file `ssh` reads without a prompt: the `key` field, decrypted with the
    /// `passphrase` field when it has one (see [`ssh::key_file`]).
    SshKeyFile { key: &'static str, passphrase: &'static str },
    /// `ssh -i FILE -o IdentitiesOnly=yes [-o UserKnownHostsFile=FILE]` for `GIT_SSH_COMMAND`:
    /// `identity` and `known_hosts` are files of the kind under the mount (`identity` `None`:
    /// the key is in an agent). `known_hosts` is used when its field is set; the variable is
    /// left out when there is nothing to say.
    SshCommand { identity: Option<&'static str>, known_hosts: (&'static str, &'static str) },
    /// The path of the agent's socket serving this secret (a sealed secret the agent holds,
    /// e.g. the ssh-agent socket of a sealed `ssh` key).
    AgentSocket,
    /// The directory of that socket (libpq's `PGHOST` for a sealed `postgres` secret).
    AgentSocketDir,
    /// `postgresql://user@/database?host=DIR`: the agent's relay socket in directory DIR, no
    /// password (a sealed `postgres` secret); the database is the user's name when unset, as
    /// the server has it.
    PostgresSocketUrl,
    /// `mysql://user@localhost/database?socket=PATH`: the agent's relay socket, no password
    /// (a sealed `mysql` secret).
    MysqlSocketUrl,
    /// A `[client]` option file with the agent's relay socket, the user and the database, no
    /// password (a sealed `mysql` secret).
    MysqlSocketOptionFile,
    /// A fixed text that holds nothing secret (the relay's `PGPORT`; `MYSQL_HOST=localhost`,
    /// with which a MySQL client uses the socket).
    Text(&'static str),
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
    /// `host_field`) with `username` and the `token` field as password. A secret whose
    /// `owners_field` is set answers only for those owners ([`owners`]) and provides no
    /// variables or files, so that it can be active beside the host's default secret.
    GitCredential {
        host: &'static str,
        host_field: Option<&'static str>,
        username: &'static str,
        token_field: &'static str,
        owners_field: Option<&'static str>,
    },
    /// `maestro-exec aws-credential-process [NAME]`: the `credential_process` JSON.
    AwsCredentialProcess,
}

const fn req(name: &'static str, check: Check, help: &'static str) -> Field {
    Field { name, required: true, default: None, check, help, shown: false }
}
const fn opt(name: &'static str, check: Check, help: &'static str) -> Field {
    Field { name, required: false, default: None, check, help, shown: false }
}
const fn dflt(
    name: &'static str,
    default: &'static str,
    check: Check,
    help: &'static str,
) -> Field {
    Field { name, required: false, default: Some(default), check, help, shown: false }
}

impl Kind {
    /// The field that names the owners a git secret serves, if the kind has one.
    pub fn owners_field(&self) -> Option<&'static str> {
        match self.helper {
            Some(Helper::GitCredential { owners_field, .. }) => owners_field,
            _ => None,
        }
    }

    /// Whether a secret of this kind with these field names serves only some owners: then it
    /// provides no variables or files (see [`Helper::GitCredential`]).
    pub fn is_scoped<'a>(&self, mut field_names: impl Iterator<Item = &'a str>) -> bool {
        self.owners_field().is_some_and(|f| field_names.any(|n| n == f))
    }

    /// Whether a variable of this kind holds nothing secret: a field that is not secret
    /// ([`Field::shown`]: `PGHOST`, `AWS_REGION`), a path under the mount, a command line made of
    /// paths (`GIT_SSH_COMMAND`) or a socket's path. maestro-exec does not mask those.
    pub fn variable_is_shown(&self, variable: &str) -> bool {
        self.variables.iter().any(|v| {
            v.name == variable
                && match v.value {
                    Source::Field(f) => {
                        self.fields.iter().any(|field| field.name == f && field.shown)
                    }
                    Source::FilePath(_)
                    | Source::FieldFilePath { .. }
                    | Source::SshCommand { .. }
                    | Source::AgentSocket
                    | Source::AgentSocketDir
                    | Source::PostgresSocketUrl
                    | Source::MysqlSocketUrl
                    | Source::Text(_) => true,
                    _ => false,
                }
        })
    }
}

impl Field {
    /// Marks a field as not secret (see [`Field::shown`]).
    const fn shown(mut self) -> Field {
        self.shown = true;
        self
    }
}
const fn var(name: &'static str, value: Source) -> Variable {
    Variable { name, value }
}
const fn field(name: &'static str) -> Source {
    Source::Field(name)
}

const API_KEY: &[Field] = &[req("api_key", Check::Token, "the API key")];

/// A git secret's owners (see [`owners`]): not secret, shown back like a host.
const OWNERS: Field = opt(
    "owners",
    Check::Owners,
    "owners or path prefixes it serves (alice,acme/infra); when set, git gets it for those only and it sets no variables",
)
.shown();

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
        rotation: Rotation {
            steps: "Issue a new value wherever this one came from, then revoke or delete the old one there",
            link: None,
        },
        sealing: Sealing::Swap(Seal {
            fields: &[],
            hosts: &[],
            host_field: None,
            places: &[Place::Anywhere],
            substituted_in: "request line, headers and form bodies, to the hosts you name",
        }),
    },
    Kind {
        name: "aws",
        title: "AWS access key",
        fields: &[
            req("access_key_id", Check::Token, "access key id (AKIA..., ASIA...)"),
            req("secret_access_key", Check::Token, "secret access key"),
            dflt("region", "us-east-1", Check::Token, "default region").shown(),
            opt("session_token", Check::Token, "session token of temporary credentials"),
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
        setup: Some(
            "~/.aws/config: credential_process = maestro-exec aws-credential-process, \
             region = <the secret's region>",
        ),
        rotation: Rotation {
            steps: "IAM console > Users > Security credentials: create a new access key, then deactivate and delete the old one",
            link: Some(
                "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_access-keys.html#rotating_access_keys_console",
            ),
        },
        sealing: Sealing::SigV4(Seal {
            fields: &[
                sealed("access_key_id", &["AKIA", "ASIA"]),
                sealed("secret_access_key", &[]),
                sealed("session_token", &[]),
            ],
            hosts: &["*.amazonaws.com"],
            host_field: None,
            places: &[Place::Header("x-amz-security-token")],
            substituted_in: "requests signed with the placeholder keys are re-signed (SigV4)",
        }),
    },
    Kind {
        name: "azure",
        title: "Azure service principal",
        fields: &[
            req("subscription_id", Check::Token, "subscription id").shown(),
            req("tenant_id", Check::Token, "tenant (directory) id").shown(),
            req("client_id", Check::Token, "application (client) id").shown(),
            req("client_secret", Check::Token, "client secret"),
        ],
        free_fields: false,
        variables: &[
            // The Azure SDKs' EnvironmentCredential and the Azure CLI read the AZURE_ names.
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
        rotation: Rotation {
            steps: "Microsoft Entra admin center > App registrations > Certificates & secrets: add a new client secret, then delete the old one",
            link: Some(
                "https://learn.microsoft.com/en-us/entra/identity-platform/how-to-add-credentials",
            ),
        },
        sealing: Sealing::Swap(Seal {
            fields: &[sealed("client_secret", &[])],
            hosts: &["login.microsoftonline.com"],
            host_field: None,
            places: &[Place::FormField("client_secret")],
            substituted_in: "the client_secret form field of the token request",
        }),
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
            // Older Google client libraries read GCLOUD_PROJECT; gcloud reads the CLOUDSDK_
            // names (its project, and a credential file that overrides its own login).
            var("GCLOUD_PROJECT", Source::JsonKey("service_account_json", "project_id")),
            var("CLOUDSDK_CORE_PROJECT", Source::JsonKey("service_account_json", "project_id")),
            var(
                "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
                Source::FilePath("gcp/service-account.json"),
            ),
        ],
        files: &[File { path: "gcp/service-account.json", content: field("service_account_json") }],
        helper: None,
        setup: None,
        rotation: Rotation {
            steps: "Google Cloud console > IAM & Admin > Service accounts > Keys: add a new key, then delete the old one",
            link: Some("https://cloud.google.com/iam/docs/keys-create-delete"),
        },
        sealing: Sealing::Unsupported {
            why: "a service-account key signs its tokens inside the sandbox, so the sandbox would hold the key; keep it plain, or seal a short-lived access token as a generic secret with --allow-host '*.googleapis.com'",
        },
    },
    Kind {
        name: "github",
        title: "GitHub token (personal access token or OAuth)",
        fields: &[req("token", Check::Token, "the token"), OWNERS],
        free_fields: false,
        // `gh` reads GH_TOKEN first; Actions-style tools read GITHUB_TOKEN. A secret with
        // `owners` provides neither (see `Helper::GitCredential`).
        variables: &[var("GH_TOKEN", field("token")), var("GITHUB_TOKEN", field("token"))],
        files: &[],
        helper: Some(Helper::GitCredential {
            host: "github.com",
            host_field: None,
            username: "x-access-token",
            token_field: "token",
            owners_field: Some("owners"),
        }),
        setup: Some("git config --global credential.helper '!maestro-exec git-credential'"),
        rotation: Rotation {
            steps: "GitHub > Settings > Developer settings > Personal access tokens: regenerate the token or create a new one and delete the old one",
            link: Some(
                "https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/managing-your-personal-access-tokens",
            ),
        },
        sealing: Sealing::Swap(Seal {
            fields: &[sealed("token", &["github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"])],
            hosts: &["github.com", "api.github.com", "uploads.github.com"],
            host_field: None,
            places: &[Place::Authorization],
            substituted_in: "Authorization (Bearer, token or Basic, as git sends it)",
        }),
    },
    Kind {
        name: "gitlab",
        title: "GitLab token (personal access token or OAuth)",
        fields: &[
            req("token", Check::Token, "the token"),
            dflt("host", "gitlab.com", Check::HostPort, "GitLab host name, with :port if not 443")
                .shown(),
            OWNERS,
        ],
        free_fields: false,
        // `glab` reads GITLAB_TOKEN and GITLAB_HOST.
        variables: &[var("GITLAB_TOKEN", field("token")), var("GITLAB_HOST", field("host"))],
        files: &[],
        helper: Some(Helper::GitCredential {
            host: "gitlab.com",
            host_field: Some("host"),
            username: "oauth2",
            token_field: "token",
            owners_field: Some("owners"),
        }),
        setup: Some("git config --global credential.helper '!maestro-exec git-credential'"),
        rotation: Rotation {
            steps: "GitLab > Preferences > Access tokens: rotate the token (or create a new one and revoke the old one)",
            link: Some("https://docs.gitlab.com/user/profile/personal_access_tokens/"),
        },
        sealing: Sealing::Swap(Seal {
            fields: &[sealed("token", &["glpat-", "gloas-", "gldt-", "glrt-"])],
            hosts: &["gitlab.com"],
            host_field: Some("host"),
            places: &[Place::Authorization, Place::Header("private-token")],
            substituted_in: "Authorization, PRIVATE-TOKEN and git's Basic credentials",
        }),
    },
    Kind {
        name: "postgres",
        title: "PostgreSQL login",
        fields: &[
            req("host", Check::Host, "server host").shown(),
            dflt("port", "5432", Check::Port, "server port").shown(),
            req("user", Check::Line, "user name").shown(),
            req("password", Check::Line, "password"),
            opt("database", Check::Line, "database name").shown(),
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
            )
            .shown(),
            opt(
                "sslrootcert",
                Check::Text,
                "CA certificates (PEM) that verify-ca and verify-full check the server with (a private CA such as Amazon RDS's); default the system's",
            )
            .shown(),
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
            var(
                "PGSSLROOTCERT",
                Source::FieldFilePath { field: "sslrootcert", path: PG_ROOT_CERT },
            ),
        ],
        files: &[
            File { path: "postgres/pgpass", content: Source::Pgpass },
            File { path: PG_ROOT_CERT, content: field("sslrootcert") },
        ],
        helper: None,
        setup: None,
        rotation: Rotation {
            steps: "Change the role's password on the server: ALTER ROLE name WITH PASSWORD '...', then update every client",
            link: Some("https://www.postgresql.org/docs/current/sql-alterrole.html"),
        },
        sealing: Sealing::Agent(AgentSeal {
            hidden: &["password"],
            service: Service::Relay { protocol: RelayProtocol::Postgres },
            variables: &[
                var("PGHOST", Source::AgentSocketDir),
                var("PGPORT", Source::Text(PG_RELAY_PORT)),
                var("PGUSER", field("user")),
                var("PGDATABASE", field("database")),
                var("DATABASE_URL", Source::PostgresSocketUrl),
            ],
            files: &[],
            served: "a PostgreSQL unix socket (PGHOST, DATABASE_URL, no password) that logs in to the server with the password for each connection, for the secret's user and database only",
        }),
    },
    Kind {
        name: "mysql",
        title: "MySQL / MariaDB login",
        fields: &[
            req("host", Check::Host, "server host").shown(),
            dflt("port", "3306", Check::Port, "server port").shown(),
            req("user", Check::Line, "user name").shown(),
            req("password", Check::Line, "password"),
            opt("database", Check::Line, "database name").shown(),
            opt(
                "ssl_mode",
                Check::OneOf(&["DISABLED", "VERIFY_CA", "VERIFY_IDENTITY"]),
                "TLS to the server for a sealed secret's relay (verified; default DISABLED)",
            )
            .shown(),
            opt("ssl_ca", Check::Text, "CA certificates (PEM) the relay verifies the server with; default the system's").shown(),
            opt(
                "server_public_key",
                Check::Text,
                "the server's RSA public key (PEM), for caching_sha2_password's full login without TLS",
            )
            .shown(),
        ],
        free_fields: false,
        variables: &[
            // What the mysql/mariadb client reads itself...
            var("MYSQL_HOST", field("host")),
            var("MYSQL_TCP_PORT", field("port")),
            var("MYSQL_PWD", field("password")),
            // ...and the names of the official images that applications read for the rest.
            var("MYSQL_USER", field("user")),
            var("MYSQL_DATABASE", field("database")),
            var("DATABASE_URL", Source::MysqlUrl),
        ],
        files: &[File { path: "mysql/my.cnf", content: Source::MysqlOptionFile }],
        helper: None,
        setup: Some("mysql --defaults-extra-file=/run/secrets/mysql/my.cnf"),
        rotation: Rotation {
            steps: "Change the account's password on the server: ALTER USER 'name'@'host' IDENTIFIED BY '...', then update every client",
            link: Some("https://dev.mysql.com/doc/refman/8.0/en/alter-user.html"),
        },
        sealing: Sealing::Agent(AgentSeal {
            hidden: &["password"],
            service: Service::Relay { protocol: RelayProtocol::Mysql },
            variables: &[
                // The mariadb/mysql client reads `$MYSQL_HOME/my.cnf` after the system's option
                // files (Debian's names its own server's socket, which beats MYSQL_UNIX_PORT):
                // the option file below (socket, user, database).
                var("MYSQL_HOME", Source::FilePath("mysql")),
                // Clients that read no option file take `localhost` for the unix socket
                // MYSQL_UNIX_PORT names.
                var("MYSQL_HOST", Source::Text("localhost")),
                var("MYSQL_UNIX_PORT", Source::AgentSocket),
                var("MYSQL_USER", field("user")),
                var("MYSQL_DATABASE", field("database")),
                var("DATABASE_URL", Source::MysqlSocketUrl),
            ],
            files: &[File { path: "mysql/my.cnf", content: Source::MysqlSocketOptionFile }],
            served: "a MySQL unix socket (MYSQL_UNIX_PORT, DATABASE_URL, mysql/my.cnf, no password) that logs in to the server with the password for each connection, for the secret's user and database only",
        }),
    },
    Kind {
        name: "mongodb",
        title: "MongoDB connection string",
        fields: &[req("uri", Check::Uri(&["mongodb://", "mongodb+srv://"]), "connection string")],
        free_fields: false,
        variables: &[var("MONGODB_URI", field("uri"))],
        files: &[],
        helper: None,
        setup: None,
        rotation: Rotation {
            steps: "Change the user's password: db.changeUserPassword(name, ...) (Atlas: Database Access > Edit user), then update every client",
            link: Some(
                "https://www.mongodb.com/docs/manual/reference/method/db.changeUserPassword/",
            ),
        },
        sealing: Sealing::Unsupported {
            why: "a MongoDB URI goes to a database in its own protocol, not over HTTPS; keep it plain",
        },
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
        rotation: Rotation {
            steps: "OpenAI platform > API keys: create a new secret key, then revoke the old one",
            link: Some("https://platform.openai.com/api-keys"),
        },
        sealing: Sealing::Swap(Seal {
            fields: &[sealed("api_key", &["sk-proj-", "sk-svcacct-", "sk-admin-", "sk-"])],
            hosts: &["api.openai.com"],
            host_field: None,
            places: &[Place::Authorization],
            substituted_in: "Authorization: Bearer",
        }),
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
        rotation: Rotation {
            steps: "Anthropic Console > Settings > API keys: create a new key, then disable and delete the old one",
            link: Some("https://console.anthropic.com/settings/keys"),
        },
        sealing: Sealing::Swap(Seal {
            fields: &[sealed("api_key", &["sk-ant-api03-", "sk-ant-admin01-", "sk-ant-"])],
            hosts: &["api.anthropic.com"],
            host_field: None,
            places: &[Place::Header("x-api-key"), Place::Authorization],
            substituted_in: "x-api-key",
        }),
    },
    Kind {
        name: "stripe",
        title: "Stripe secret key",
        fields: API_KEY,
        free_fields: false,
        // The Stripe CLI reads STRIPE_API_KEY; Stripe's samples and most apps STRIPE_SECRET_KEY.
        variables: &[
            var("STRIPE_API_KEY", field("api_key")),
            var("STRIPE_SECRET_KEY", field("api_key")),
        ],
        files: &[],
        helper: None,
        setup: None,
        rotation: Rotation {
            steps: "Stripe Dashboard > Developers > API keys: roll the key (expire the old one now)",
            link: Some("https://docs.stripe.com/keys#rolling-keys"),
        },
        sealing: Sealing::Swap(Seal {
            fields: &[sealed("api_key", &["sk_live_", "sk_test_", "rk_live_", "rk_test_"])],
            hosts: &["api.stripe.com", "files.stripe.com"],
            host_field: None,
            places: &[Place::Authorization],
            substituted_in: "Authorization (Bearer or Basic)",
        }),
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
        rotation: Rotation {
            steps: "SendGrid > Settings > API Keys: create a new key, then delete the old one",
            link: Some("https://www.twilio.com/docs/sendgrid/ui/account-and-settings/api-keys"),
        },
        sealing: Sealing::Swap(Seal {
            fields: &[sealed("api_key", &["SG."])],
            hosts: &["api.sendgrid.com"],
            host_field: None,
            places: &[Place::Authorization],
            substituted_in: "Authorization: Bearer",
        }),
    },
    Kind {
        name: "mailgun",
        title: "Mailgun API key",
        fields: &[
            req("api_key", Check::Token, "the API key"),
            opt("domain", Check::Host, "sending domain").shown(),
        ],
        free_fields: false,
        variables: &[
            var("MAILGUN_API_KEY", field("api_key")),
            var("MAILGUN_DOMAIN", field("domain")),
        ],
        files: &[],
        helper: None,
        setup: None,
        rotation: Rotation {
            steps: "Mailgun > API Security: create a new API key, then delete the old one",
            link: Some("https://documentation.mailgun.com/docs/mailgun/user-manual/api-key-mgmt/"),
        },
        sealing: Sealing::Swap(Seal {
            fields: &[sealed("api_key", &["key-"])],
            hosts: &["api.mailgun.net", "api.eu.mailgun.net"],
            host_field: None,
            places: &[Place::Authorization],
            substituted_in: "Authorization: Basic (api:KEY)",
        }),
    },
    Kind {
        name: "ssh",
        title: "SSH private key (git over SSH, ssh, scp)",
        fields: &[
            req(
                "private_key",
                Check::SshPrivateKey { passphrase: "passphrase" },
                "the private key, OpenSSH or PEM (--field-file private_key=~/.ssh/id_ed25519)",
            ),
            opt("passphrase", Check::Line, "the key's passphrase, if it has one"),
            opt(
                "hosts",
                Check::HostPatterns,
                "host patterns the key is for, comma or space separated (git.example.com *.corp.example); a sealed key signs for no other",
            )
            .shown(),
            opt("known_hosts", Check::Text, "known_hosts lines of the servers (ssh-keyscan HOST)")
                .shown(),
        ],
        free_fields: false,
        variables: &[var(
            "GIT_SSH_COMMAND",
            Source::SshCommand {
                identity: Some(SSH_KEY_FILE),
                known_hosts: ("known_hosts", SSH_KNOWN_HOSTS_FILE),
            },
        )],
        files: &[
            File {
                path: SSH_KEY_FILE,
                content: Source::SshKeyFile { key: "private_key", passphrase: "passphrase" },
            },
            File { path: SSH_KNOWN_HOSTS_FILE, content: field("known_hosts") },
        ],
        helper: None,
        setup: Some("$GIT_SSH_COMMAND user@host (git reads GIT_SSH_COMMAND itself)"),
        rotation: Rotation {
            steps: "ssh-keygen -t ed25519 a new key, add its .pub to every server or forge that trusts the old one (authorized_keys, deploy keys), then remove the old public key there",
            link: Some("https://man.openbsd.org/ssh-keygen"),
        },
        sealing: Sealing::Agent(AgentSeal {
            hidden: &["private_key", "passphrase"],
            service: Service::SshAgent(SshAgentFields {
                key: "private_key",
                passphrase: "passphrase",
                hosts: "hosts",
                known_hosts: "known_hosts",
            }),
            variables: &[
                var("SSH_AUTH_SOCK", Source::AgentSocket),
                var(
                    "GIT_SSH_COMMAND",
                    Source::SshCommand {
                        identity: None,
                        known_hosts: ("known_hosts", SSH_KNOWN_HOSTS_FILE),
                    },
                ),
            ],
            files: &[File { path: SSH_KNOWN_HOSTS_FILE, content: field("known_hosts") }],
            served: "an ssh-agent socket (SSH_AUTH_SOCK) that signs with the key; with hosts set, only for servers whose host key known_hosts names as one of them",
        }),
    },
];

/// Where a plain `ssh` key's file is, relative to the mount.
pub const SSH_KEY_FILE: &str = "ssh/id";
/// Where an `ssh` secret's known_hosts file is, relative to the mount.
pub const SSH_KNOWN_HOSTS_FILE: &str = "ssh/known_hosts";

/// Where a `postgres` secret's `sslrootcert` is under the mount: its file, `PGSSLROOTCERT` and
/// the `sslrootcert=` of `DATABASE_URL` all name it.
pub const PG_ROOT_CERT: &str = "postgres/root.crt";

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
                check_value(spec, value.expose())?;
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
    for spec in kind.fields {
        // A check that needs a sibling field (an SSH key and its passphrase).
        if let (Check::SshPrivateKey { passphrase }, Some(key)) = (spec.check, out.get(spec.name)) {
            let pass = out.get(passphrase).map(SecretValue::expose);
            ssh::check_key(key.expose(), pass).map_err(|p| invalid(spec.name, &p))?;
        }
    }
    Ok(out)
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
    if kind.is_scoped(have.iter().copied()) {
        return out;
    }
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
        // A kind the agent serves when sealed provides other names then (SSH_AUTH_SOCK); the
        // exposure is not known here, so both are claimed.
        if let Sealing::Agent(seal) = &kind.sealing {
            for v in seal.variables {
                if !out.variables.iter().any(|n| n == v.name) {
                    out.variables.push(v.name.to_owned());
                }
            }
            for f in seal.files {
                if !out.files.iter().any(|p| p == f.path) {
                    out.files.push(f.path.to_owned());
                }
            }
        }
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
    if kind.is_scoped(fields.keys().map(String::as_str)) {
        return r;
    }
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

/// Renders a sealed secret of a kind the agent serves itself ([`Sealing::Agent`]): the seal's
/// variables and files instead of the kind's, `socket` being the agent's socket for it.
/// `None` for every other kind.
pub fn render_agent_sealed(
    kind: &Kind,
    fields: &BTreeMap<String, SecretValue>,
    mount: &str,
    socket: &str,
) -> Option<Rendered> {
    let Sealing::Agent(seal) = &kind.sealing else { return None };
    let mut r = Rendered::default();
    for v in seal.variables {
        if let Some(value) = render::source_value_at(v.value, fields, mount, Some(socket)) {
            r.variables.push((v.name.to_owned(), value));
        }
    }
    let mut files: Vec<(String, SecretValue)> = r.variables.clone();
    for f in seal.files {
        if let Some(value) = render::source_value_at(f.content, fields, mount, Some(socket)) {
            files.push((f.path.to_owned(), value));
        }
    }
    r.files = files;
    Some(r)
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
    #[test]
    fn variables_that_hold_nothing_secret_are_known() {
        let pg = kind("postgres").unwrap();
        assert!(pg.variable_is_shown("PGHOST") && pg.variable_is_shown("PGPORT"));
        assert!(!pg.variable_is_shown("PGPASSWORD") && !pg.variable_is_shown("DATABASE_URL"));
        assert!(pg.variable_is_shown("PGPASSFILE"), "a path under the mount");
        let aws = kind("aws").unwrap();
        assert!(aws.variable_is_shown("AWS_REGION"));
        assert!(!aws.variable_is_shown("AWS_SECRET_ACCESS_KEY"));
        assert!(!aws.variable_is_shown("AWS_ACCESS_KEY_ID"));
        let ssh = kind("ssh").unwrap();
        assert!(ssh.variable_is_shown("GIT_SSH_COMMAND"));
        assert!(!kind("github").unwrap().variable_is_shown("GITHUB_TOKEN"));
    }

    use super::*;

    #[test]
    fn every_kind_says_how_to_rotate_a_leaked_value() {
        for kind in KINDS {
            assert!(!kind.rotation.steps.is_empty(), "{}", kind.name);
            assert!(!kind.rotation.steps.contains('\n'), "{}: one line", kind.name);
            if let Some(link) = kind.rotation.link {
                assert!(link.starts_with("https://"), "{}", kind.name);
            }
        }
    }

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
        // No sslrootcert: no PGSSLROOTCERT and no root.crt (libpq then uses its own default).
        assert!(!r.variables.iter().any(|(n, _)| n == "PGSSLROOTCERT"));
        assert!(!r.files.iter().any(|(n, _)| n == "postgres/root.crt"));
    }

    #[test]
    fn a_postgres_root_certificate_is_a_file_that_libpq_and_the_url_name() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let f = validate(
            "postgres",
            &fields(&[
                ("host", "db"),
                ("user", "u"),
                ("password", "pw"),
                ("sslmode", "verify-full"),
                ("sslrootcert", pem),
            ]),
        )
        .unwrap();
        let r = render(kind("postgres").unwrap(), &f, "/run/secrets");
        let var = |name: &str| r.variables.iter().find(|(n, _)| n == name).unwrap().1.expose();
        assert_eq!(var("PGSSLROOTCERT"), "/run/secrets/postgres/root.crt");
        assert_eq!(
            var("DATABASE_URL"),
            "postgresql://u:pw@db:5432/?sslmode=verify-full&sslrootcert=/run/secrets/postgres/root.crt"
        );
        let file = r.files.iter().find(|(n, _)| n == "postgres/root.crt").unwrap();
        assert_eq!(file.1.expose(), pem);
        // A certificate is no secret: maestro-exec does not mask the path either.
        assert!(kind("postgres").unwrap().variable_is_shown("PGSSLROOTCERT"));
    }

    /// A well-formed key file (the PEM body is not a real key: validation does not parse it).
    fn gcp_json(extra: &str) -> String {
        format!(
            r#"{{"type": "service_account", "project_id": "proj-1", "private_key_id": "k1",
            "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
            "client_email": "ci@proj-1.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token"{extra}}}"#
        )
    }

    fn problem(kind: &str, pairs: &[(&str, &str)]) -> String {
        validate(kind, &fields(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn checks_accept_what_the_tools_take() {
        let pg = |host: &str, port: &str| {
            validate(
                "postgres",
                &fields(&[("host", host), ("port", port), ("user", "u"), ("password", "p")]),
            )
        };
        for host in ["db", "db.example.com", "my_db-1.internal.", "10.0.0.5", "::1", "fe80::1"] {
            assert!(pg(host, "5432").is_ok(), "{host}");
        }
        for port in ["1", "5432", "65535"] {
            assert!(pg("db", port).is_ok(), "{port}");
        }
        let gl = |host: &str| validate("gitlab", &fields(&[("token", "glpat-x"), ("host", host)]));
        for host in ["gitlab.com", "git.example.com:8443", "127.0.0.1:3000", "[::1]:8443", "[::1]"]
        {
            assert!(gl(host).is_ok(), "{host}");
        }
        let mongo = |uri: &str| validate("mongodb", &fields(&[("uri", uri)]));
        for uri in [
            "mongodb://localhost",
            "mongodb://u:p%40ss@h1:27017,h2:27017/db?replicaSet=rs0",
            "mongodb+srv://u:p@cluster0.example.net/db",
        ] {
            assert!(mongo(uri).is_ok(), "{uri}");
        }
        assert!(validate("gcp", &fields(&[("service_account_json", &gcp_json(""))])).is_ok());
        assert!(
            validate("aws", &fields(&[("access_key_id", "AKIA1"), ("secret_access_key", "a/b+c")]))
                .is_ok()
        );
    }

    #[test]
    fn checks_refuse_with_the_field_named() {
        let base = [("host", "db"), ("user", "u"), ("password", "p")];
        let with = |k: &'static str, v: &'static str| {
            let mut f: Vec<(&str, &str)> = base.iter().filter(|(n, _)| *n != k).copied().collect();
            f.push((k, v));
            problem("postgres", &f)
        };
        for port in ["0", "65536", "+80", "080", "54 32", "port", ""] {
            let e = with("port", port);
            assert!(e.starts_with("field 'port' "), "{port}: {e}");
        }
        for host in
            ["http://db", "db/x", "db:5432", "[::1]", "-db", "db..x", "a b", "", "1.2.3.999"]
        {
            let e = with("host", host);
            assert!(e.starts_with("field 'host' "), "{host}: {e}");
        }
        assert_eq!(with("password", "two\nlines"), "field 'password' must be a single line");
        assert_eq!(with("user", "bell\u{7}"), "field 'user' contains control characters");
        assert_eq!(
            with("sslmode", "sometimes"),
            "field 'sslmode' must be one of: disable, allow, prefer, require, verify-ca, verify-full"
        );
        let gl = |host: &str| problem("gitlab", &[("token", "t"), ("host", host)]);
        for host in ["https://gitlab.com", "gitlab.com:", "gitlab.com:0", "::1", "[nope]:1", "g/l"]
        {
            assert!(gl(host).starts_with("field 'host' must be a host name"), "{host}");
        }
        let e = problem("github", &[("token", "ghp_x y")]);
        assert!(e.starts_with("field 'token' contains white space"), "{e}");
        let mongo = |uri: &str| problem("mongodb", &[("uri", uri)]);
        assert_eq!(mongo("mongodb://"), "field 'uri' names no host after mongodb://");
        assert_eq!(mongo("mongodb://u:p@/db"), "field 'uri' names no host after mongodb://");
        assert_eq!(
            mongo("postgres://x"),
            "field 'uri' must start with mongodb:// or mongodb+srv://"
        );
        assert!(mongo("mongodb+srv://h1,h2/db").contains("exactly one host name"));
        assert!(mongo("mongodb+srv://h1:27017/db").contains("exactly one host name"));
        assert!(mongo("mongodb://h /db").contains("white space"));
    }

    #[test]
    fn gcp_key_checks_name_what_is_wrong() {
        let gcp = |json: &str| problem("gcp", &[("service_account_json", json)]);
        let key = gcp_json("");
        assert!(gcp("not json").contains("is not valid JSON"));
        assert!(gcp("[1]").contains("must be a JSON object"));
        assert!(
            gcp(&key.replace("service_account", "authorized_user")).contains("\"type\" must be")
        );
        assert!(
            gcp(&key.replace("\"client_email\"", "\"x\"")).contains("lacks a \"client_email\"")
        );
        assert!(gcp(&key.replace("ci@proj-1", "ci proj")).contains("not an e-mail address"));
        assert!(
            gcp(&key.replace("\"private_key\"", "\"x\"")).contains("lacks a PEM \"private_key\"")
        );
        assert!(
            gcp(&key.replace("-----END PRIVATE KEY-----", "")).contains("not a PEM private key")
        );
        assert!(gcp(&key.replace("MIIEvQ", "MII!vQ")).contains("not a PEM private key"));
        assert!(gcp(&key.replace("token_uri", "x")).contains("lacks a \"token_uri\""));
        assert!(gcp(&key.replace("https://oauth2", "http://oauth2")).contains("\"token_uri\""));
        assert!(
            gcp(&gcp_json(r#", "project_id": 5"#)).contains("\"project_id\" that is not a string")
        );
        // Every message starts with the field's name and quotes nothing of the document.
        for e in [gcp("not json"), gcp(&key.replace("ci@proj-1", "ci proj"))] {
            assert!(e.starts_with("field 'service_account_json' "), "{e}");
            assert!(!e.contains("proj") && !e.contains("MIIE"), "{e}");
        }
    }

    #[test]
    fn gcp_renders_the_key_file_and_the_project() {
        let f = validate("gcp", &fields(&[("service_account_json", &gcp_json(""))])).unwrap();
        let r = render(kind("gcp").unwrap(), &f, "/run/secrets/");
        let v: BTreeMap<&str, &str> =
            r.variables.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
        assert_eq!(v["GOOGLE_APPLICATION_CREDENTIALS"], "/run/secrets/gcp/service-account.json");
        assert_eq!(
            v["CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE"],
            "/run/secrets/gcp/service-account.json"
        );
        assert_eq!(
            (v["GOOGLE_CLOUD_PROJECT"], v["GCLOUD_PROJECT"], v["CLOUDSDK_CORE_PROJECT"]),
            ("proj-1", "proj-1", "proj-1")
        );
        let file = r.files.iter().find(|(p, _)| p == "gcp/service-account.json").unwrap();
        assert_eq!(file.1.expose(), gcp_json(""));
        // No project in the key: no project variables (their names are still claimed).
        let f = validate(
            "gcp",
            &fields(&[(
                "service_account_json",
                &gcp_json("").replace("\"project_id\": \"proj-1\", ", ""),
            )]),
        )
        .unwrap();
        let r = render(kind("gcp").unwrap(), &f, "/m");
        assert_eq!(r.variables.len(), 2);
        assert_eq!(outputs(kind("gcp").unwrap(), f.keys().map(String::as_str)).variables.len(), 5);
    }

    #[test]
    fn database_files_and_urls_escape_what_their_readers_split_on() {
        let f = validate(
            "mysql",
            &fields(&[
                ("host", "::1"),
                ("user", "a\"b"),
                ("password", "p\\w:\"d@/"),
                ("database", "app db"),
            ]),
        )
        .unwrap();
        let r = render(kind("mysql").unwrap(), &f, "/run/secrets");
        let get = |n: &str| r.files.iter().find(|(p, _)| p == n).unwrap().1.expose().to_owned();
        assert_eq!(get("DATABASE_URL"), "mysql://a%22b:p%5Cw%3A%22d%40%2F@[::1]:3306/app%20db");
        assert_eq!(
            get("mysql/my.cnf"),
            "[client]\nhost=\"::1\"\nport=3306\nuser=\"a\\\"b\"\npassword=\"p\\\\w:\\\"d@/\"\ndatabase=\"app db\"\n"
        );
        let names: Vec<&str> = r.variables.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "MYSQL_HOST",
                "MYSQL_TCP_PORT",
                "MYSQL_PWD",
                "MYSQL_USER",
                "MYSQL_DATABASE",
                "DATABASE_URL"
            ]
        );

        let f = validate(
            "postgres",
            &fields(&[
                ("host", "fe80::1"),
                ("user", "u~x"),
                ("password", "a\\b:c"),
                ("sslmode", "require"),
            ]),
        )
        .unwrap();
        let r = render(kind("postgres").unwrap(), &f, "/s");
        let get = |n: &str| r.files.iter().find(|(p, _)| p == n).unwrap().1.expose().to_owned();
        assert_eq!(
            get("DATABASE_URL"),
            "postgresql://u~x:a%5Cb%3Ac@[fe80::1]:5432/?sslmode=require"
        );
        assert_eq!(get("postgres/pgpass"), "fe80\\:\\:1:5432:*:u~x:a\\\\b\\:c\n");
        assert_eq!(get("PGPASSFILE"), "/s/postgres/pgpass");
        assert_eq!(get("PGHOST"), "fe80::1");
        assert!(r.variables.iter().all(|(n, _)| n != "PGDATABASE"));
    }

    #[test]
    fn aws_credentials_file_holds_the_token_when_set() {
        let f = validate(
            "aws",
            &fields(&[
                ("access_key_id", "ASIA1"),
                ("secret_access_key", "s"),
                ("session_token", "tok"),
                ("region", "eu-west-1"),
            ]),
        )
        .unwrap();
        let r = render(kind("aws").unwrap(), &f, "/run/secrets");
        let file = r.files.iter().find(|(p, _)| p == "aws/credentials").unwrap();
        assert_eq!(
            file.1.expose(),
            "[default]\naws_access_key_id = ASIA1\naws_secret_access_key = s\nregion = eu-west-1\naws_session_token = tok\n"
        );
        assert_eq!(r.variables.len(), 5);
    }

    #[test]
    fn a_sealed_postgres_login_points_at_the_relay_socket_without_a_password() {
        let k = kind("postgres").unwrap();
        let f = fields(&[
            ("host", "db.example.com"),
            ("port", "6543"),
            ("user", "app user"),
            ("password", "planted-pg-password"),
            ("sslmode", "verify-full"),
        ]);
        let r =
            render_agent_sealed(k, &f, "/run/secrets", "/run/maestro/pg/PG/.s.PGSQL.5432").unwrap();
        let got: Vec<(&str, &str)> =
            r.variables.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
        assert_eq!(
            got,
            [
                ("PGHOST", "/run/maestro/pg/PG"),
                ("PGPORT", "5432"),
                ("PGUSER", "app user"),
                ("DATABASE_URL", "postgresql://app%20user@/app%20user?host=/run/maestro/pg/PG"),
            ]
        );
        assert!(r.files.iter().all(|(_, v)| !v.expose().contains("planted")));
        assert!(seal::is_sealed_field(k, "password"));
        for v in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "DATABASE_URL"] {
            let Sealing::Agent(seal) = &k.sealing else { panic!() };
            assert!(seal.variables.iter().any(|x| x.name == v), "{v}");
        }
        assert!(matches!(
            seal::check_exposure(k, Exposure::Sealed, None, &["db.example.com".into()]),
            Err(SealError::HostsInField { .. })
        ));
        assert_eq!(seal::check_exposure(k, Exposure::Sealed, None, &[]), Ok(()));
    }

    #[test]
    fn a_sealed_mysql_login_points_at_the_relay_socket_without_a_password() {
        let k = kind("mysql").unwrap();
        let f = fields(&[
            ("host", "db.example.com"),
            ("port", "3306"),
            ("user", "app \"user\""),
            ("password", "planted-my-password"),
            ("database", "app db"),
        ]);
        let r = render_agent_sealed(k, &f, "/run/secrets", "/run/maestro/mysql/MY.sock").unwrap();
        let got: Vec<(&str, &str)> =
            r.variables.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
        assert_eq!(
            got,
            [
                ("MYSQL_HOME", "/run/secrets/mysql"),
                ("MYSQL_HOST", "localhost"),
                ("MYSQL_UNIX_PORT", "/run/maestro/mysql/MY.sock"),
                ("MYSQL_USER", "app \"user\""),
                ("MYSQL_DATABASE", "app db"),
                (
                    "DATABASE_URL",
                    "mysql://app%20%22user%22@localhost/app%20db?socket=/run/maestro/mysql/MY.sock"
                ),
            ]
        );
        let file = r.files.iter().find(|(p, _)| p == "mysql/my.cnf").unwrap();
        assert_eq!(
            file.1.expose(),
            "[client]\nsocket=\"/run/maestro/mysql/MY.sock\"\nuser=\"app \\\"user\\\"\"\ndatabase=\"app db\"\n"
        );
        assert!(r.files.iter().all(|(_, v)| !v.expose().contains("planted")));
        assert!(seal::is_sealed_field(k, "password"));
        assert!(!seal::is_sealed_field(k, "user"));
        assert!(matches!(
            seal::check_exposure(k, Exposure::Sealed, None, &["db.example.com".into()]),
            Err(SealError::HostsInField { .. })
        ));
        assert_eq!(seal::check_exposure(k, Exposure::Sealed, None, &[]), Ok(()));
        // Without a database: none in the URL or the file.
        let f = fields(&[("host", "h"), ("user", "u"), ("password", "p")]);
        let r = render_agent_sealed(k, &f, "/s", "/m/X.sock").unwrap();
        let url = r.variables.iter().find(|(n, _)| n == "DATABASE_URL").unwrap();
        assert_eq!(url.1.expose(), "mysql://u@localhost/?socket=/m/X.sock");
    }

    #[test]
    fn an_agent_served_kind_claims_its_sealed_names_too() {
        let out = outputs(kind("ssh").unwrap(), ["private_key"]);
        assert_eq!(out.variables, ["GIT_SSH_COMMAND", "SSH_AUTH_SOCK"]);
        assert!(out.files.iter().any(|f| f == "SSH_AUTH_SOCK"), "{:?}", out.files);
        assert!(out.files.iter().any(|f| f == "ssh/id"), "{:?}", out.files);
    }

    #[test]
    fn the_catalog_is_consistent() {
        let mut names = Vec::new();
        for k in KINDS {
            assert!(!names.contains(&k.name), "kind {} twice", k.name);
            names.push(k.name);
            for f in k.fields {
                assert!(crate::names::is_valid_field_key(f.name), "{}.{}", k.name, f.name);
                assert!(!(f.required && f.default.is_some()), "{}.{}", k.name, f.name);
                if let Some(d) = f.default {
                    check::check_value(f, d)
                        .unwrap_or_else(|e| panic!("default of {}: {e}", k.name));
                }
            }
            let mut seen = Vec::new();
            for v in k.variables {
                assert!(is_valid_variable_name(v.name), "{}: {}", k.name, v.name);
                assert!(!seen.contains(&v.name), "{}: {} twice", k.name, v.name);
                seen.push(v.name);
                if let Source::Field(f) | Source::JsonKey(f, _) = v.value {
                    assert!(
                        k.fields.iter().any(|s| s.name == f),
                        "{}: {} reads {f}",
                        k.name,
                        v.name
                    );
                }
            }
            for file in k.files {
                assert!(!file.path.starts_with('/') && !file.path.contains(".."), "{}", file.path);
                assert!(file.path.contains('/'), "kind files live in a directory: {}", file.path);
            }
            if let Some(Helper::GitCredential { host_field: Some(f), token_field, .. }) = k.helper {
                assert!(k.fields.iter().any(|s| s.name == f && s.default.is_some()));
                assert!(k.fields.iter().any(|s| s.name == token_field && s.required));
            }
        }
    }

    #[test]
    fn markdown_has_every_kind_variable_and_file() {
        let md = markdown();
        for k in KINDS {
            let row = md.lines().find(|l| l.starts_with(&format!("| `{}` |", k.name))).unwrap();
            for v in k.variables {
                assert!(row.contains(&format!("`{}`", v.name)), "{}: {}", k.name, v.name);
            }
            for f in k.files {
                assert!(row.contains(&format!("/run/secrets/{}", f.path)), "{}", f.path);
            }
            if let Some(setup) = k.setup {
                assert!(md.contains(&format!("- `{}`: `{setup}`", k.name)));
            }
        }
        assert!(md.contains("`AWS_SESSION_TOKEN` (when set)"));
        assert!(md.contains("`region` (default `us-east-1`)"));
    }

    #[test]
    fn validation_errors_never_hold_values() {
        let e = validate("mongodb", &fields(&[("uri", "planted-value-123")])).unwrap_err();
        assert!(!e.to_string().contains("planted"));
        let e = validate("gcp", &fields(&[("service_account_json", "{planted")])).unwrap_err();
        assert!(!e.to_string().contains("planted"));
    }
}
