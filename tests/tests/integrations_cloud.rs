//! Cloud SDKs take the injected credentials with no glue, driven as a user would:
//!
//! * boto3 resolves the AWS credentials from the variables `maestro-exec` injects, and,
//!   separately, with no variable at all, through a profile whose `credential_process` is
//!   `maestro-exec aws-credential-process`; both stop working after deactivation;
//! * google-auth's `google.auth.default()` loads the service account from the path in
//!   GOOGLE_APPLICATION_CREDENTIALS on the FUSE mount and signs bytes with its key; the test
//!   made the key pair and checks the signature with OpenSSL.
//!
//! The SDKs' instance-metadata probes are switched off: nothing here leaves the machine.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod integrations_support;

use std::process::Command;

use integrations_support::{World, clients_available, support, venv_python};
use maestro_tests::agent::run_cmd;
use maestro_tests::util::temp_dir;
use serde_json::{Value, json};

/// No metadata service: boto3 and google-auth would otherwise probe link-local addresses.
fn offline(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
        .env("NO_GCE_CHECK", "True")
        .env("GCE_METADATA_HOST", "127.0.0.1:9")
        .env("GCE_METADATA_IP", "127.0.0.1:9")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_takes_the_variables_and_the_credential_process_helper() {
    let python = venv_python();
    if !clients_available(&[python.as_os_str()]) {
        return;
    }
    let world = World::new("boto3");
    world
        .add(
            "AWS_DEV",
            "aws",
            json!({"access_key_id": "AKIABOTO300000001", "secret_access_key": "planted/boto3+secret",
                   "session_token": "planted-boto3-token", "region": "eu-central-1"}),
        )
        .await;
    let config = world.write_home(
        ".aws/config",
        "[profile maestro]\ncredential_process = maestro-exec aws-credential-process\n\
         region = eu-central-1\n\n[profile maestro-dev]\n\
         credential_process = maestro-exec aws-credential-process AWS_DEV\nregion = eu-central-1\n",
    );
    let script = support("boto3_credentials.py");
    // boto3 with nothing but what a test gives it: no files of its own, no metadata service.
    let boto3 = |through_exec: bool, profile: Option<&str>| {
        let mut cmd = if through_exec {
            let mut c = world.exec(&["--no-mask", "--"]);
            c.arg(&python);
            c
        } else {
            world.command(&python)
        };
        cmd.arg(&script).args(profile);
        offline(&mut cmd)
            .env("AWS_CONFIG_FILE", world.home.join("no-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", world.home.join("no-credentials"));
        if profile.is_some() {
            cmd.env("AWS_CONFIG_FILE", &config);
        }
        run_cmd(cmd)
    };
    let found = |out: maestro_tests::broker::CmdOutput| -> Value {
        serde_json::from_str(&out.ok().stdout).unwrap()
    };

    // Before activation boto3 finds nothing: whatever it finds later came from us.
    assert_eq!(boto3(true, None).status, 3);

    world.activate(&["AWS_DEV"], &["AWS_DEV"]).await;
    let expected = |method: &str| {
        json!({"access_key": "AKIABOTO300000001", "secret_key": "planted/boto3+secret",
               "token": "planted-boto3-token", "method": method, "region": "eu-central-1"})
    };
    assert_eq!(found(boto3(true, None)), expected("env"));
    // No variables at all: the profile's credential_process runs the helper.
    assert_eq!(found(boto3(false, Some("maestro"))), expected("custom-process"));
    assert_eq!(found(boto3(false, Some("maestro-dev"))), expected("custom-process"));

    world.deactivate(&["AWS_DEV"], &[]).await;
    let out = boto3(true, None);
    assert_eq!(out.status, 3, "{out:?}");
    let out = boto3(false, Some("maestro"));
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("no aws secret is active in this session"), "{out:?}");
    assert!(!out.stdout.contains("planted") && !out.stderr.contains("planted"), "{out:?}");
    world.assert_no_leak(&["planted/boto3+secret", "planted-boto3-token"]);
}

/// `openssl ARGS` in `dir`; panics unless it succeeds.
fn openssl(dir: &std::path::Path, args: &[&str]) -> maestro_tests::broker::CmdOutput {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    run_cmd(cmd)
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_auth_loads_the_key_from_the_mount_and_signs() {
    let python = venv_python();
    if !clients_available(&[python.as_os_str(), "openssl".as_ref()]) {
        return;
    }
    // The key pair is the test's own: the public half checks what google-auth signed.
    let keys = temp_dir("maestro-gcp-key-");
    openssl(
        keys.path(),
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "key.pem"],
    )
    .ok();
    openssl(keys.path(), &["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"]).ok();
    let private_key = std::fs::read_to_string(keys.path().join("key.pem")).unwrap();
    assert!(private_key.starts_with("-----BEGIN PRIVATE KEY-----"));
    let key_json = json!({
        "type": "service_account",
        "project_id": "maestro-test-project",
        "private_key_id": "0123456789abcdef",
        "private_key": private_key,
        "client_email": "signer@maestro-test-project.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string();

    let world = World::new("google");
    world.add("GCP_CI", "gcp", json!({"service_account_json": key_json})).await;
    let sign = |message: &str| {
        let mut cmd = world.exec(&["--no-mask", "--"]);
        cmd.arg(&python).arg(support("google_sign.py")).arg(message);
        offline(&mut cmd);
        run_cmd(cmd)
    };

    world.activate(&["GCP_CI"], &["GCP_CI"]).await;
    let message = "bytes signed inside the sandbox";
    let out: Value = serde_json::from_str(&sign(message).ok().stdout).unwrap();
    assert_eq!(out["class"], "google.oauth2.service_account.Credentials");
    assert_eq!(out["email"], "signer@maestro-test-project.iam.gserviceaccount.com");
    assert_eq!(out["project"], "maestro-test-project");
    assert_eq!(out["path"], world.mounted("gcp/service-account.json"));

    // The signature verifies with the public key, and not for other bytes.
    std::fs::write(keys.path().join("sig.bin"), from_hex(out["signature"].as_str().unwrap()))
        .unwrap();
    std::fs::write(keys.path().join("message"), message).unwrap();
    std::fs::write(keys.path().join("other"), "other bytes").unwrap();
    let verify = |file: &str| {
        openssl(
            keys.path(),
            &["dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.bin", file],
        )
    };
    assert_eq!(verify("message").ok().stdout.trim(), "Verified OK");
    assert_ne!(verify("other").status, 0);

    // Deactivated: the file and the variable are gone, and google-auth finds no credentials.
    world.deactivate(&["GCP_CI"], &[]).await;
    let out = sign(message);
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("DefaultCredentialsError"), "{out:?}");
    assert!(!world.agent.file("gcp/service-account.json").exists());
    // The key's base64 body, one line of it, is what would show in a leak.
    let key_line = private_key.lines().nth(1).unwrap();
    world.assert_no_leak(&[key_line]);
}

/// `aws sts get-caller-identity` (AWS CLI) and a DynamoDB client (boto3), both regional, through
/// the documented `~/.aws/config` profile: `credential_process` gives the keys, the profile's
/// `region` line (the secret's region) gives the region. Without that line both fail with
/// "You must specify a region", which is what the profile used to leave out. moto stands in for
/// AWS on loopback, with SigV4 checks on, so a call only succeeds with the registered keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_aws_profile_gives_regional_clients_their_region() {
    let python = venv_python();
    let aws = python.parent().unwrap().join("aws");
    if !clients_available(&[python.as_os_str(), aws.as_os_str()]) {
        return;
    }
    let dir = temp_dir("maestro-aws-region-");
    let certs = dir.path().join("certs");
    let out = run_cmd({
        let mut c = Command::new("bash");
        c.arg(support("sealed/certs.sh")).arg(&certs);
        c
    });
    assert_eq!(out.status, 0, "certs.sh: {out:?}");
    // The sandbox user reads the CA bundle.
    for path in [dir.path(), certs.as_path()] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let ca = certs.join("ca.pem");
    std::fs::set_permissions(&ca, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let keys_file = dir.path().join("moto-keys.json");
    let moto = maestro_tests::util::ChildGuard::spawn("moto", {
        let mut c = Command::new(&python);
        c.arg(support("sealed/moto_tls.py"))
            .arg("--cert")
            .arg(certs.join("server.pem"))
            .arg("--key")
            .arg(certs.join("server.key"))
            .args(["--port", "0", "--keys-out"])
            .arg(&keys_file);
        c
    });
    let port: u16 = moto
        .wait_for_stdout(std::time::Duration::from_secs(60), |l| l.starts_with("listening on "))
        .unwrap_or_else(|| panic!("moto did not start:\n{}", moto.log()))
        .trim_start_matches("listening on ")
        .trim()
        .parse()
        .unwrap();
    let keys: Value = serde_json::from_str(&std::fs::read_to_string(&keys_file).unwrap()).unwrap();
    let key_id = keys["access_key_id"].as_str().unwrap().to_owned();
    let secret = keys["secret_access_key"].as_str().unwrap().to_owned();

    let world = World::new("aws-region");
    world
        .add(
            "AWS_EU",
            "aws",
            json!({"access_key_id": key_id, "secret_access_key": secret, "region": "eu-west-3"}),
        )
        .await;
    world.activate(&["AWS_EU"], &["AWS_EU"]).await;
    // Exactly the profile docs/integrations.md shows, with the secret's region.
    let with_region = world.write_home(
        ".aws/config",
        "[default]\ncredential_process = maestro-exec aws-credential-process\nregion = eu-west-3\n",
    );
    let without_region = world.write_home(
        ".aws/config-no-region",
        "[default]\ncredential_process = maestro-exec aws-credential-process\n",
    );
    // The tools run as the sandbox user with no AWS variable of ours: only the profile.
    let run = |config: &std::path::Path, program: &std::path::Path, args: &[&str]| {
        let mut cmd = world.command(program);
        cmd.args(args);
        offline(&mut cmd)
            .env("AWS_CONFIG_FILE", config)
            .env("AWS_SHARED_CREDENTIALS_FILE", world.home.join("no-credentials"))
            .env("AWS_ENDPOINT_URL", format!("https://127.0.0.1:{port}"))
            .env("AWS_CA_BUNDLE", &ca);
        run_cmd(cmd)
    };
    let dynamodb = "import boto3\nc = boto3.client('dynamodb')\n\
                    print(c.meta.region_name, c.list_tables()['TableNames'])";

    let out = run(&with_region, &aws, &["sts", "get-caller-identity", "--output", "json"]);
    assert_eq!(out.status, 0, "aws sts get-caller-identity: {out:?}");
    assert!(out.stdout.contains("maestro-sealed"), "{out:?}");
    let out = run(&with_region, &python, &["-c", dynamodb]);
    assert_eq!(out.status, 0, "boto3 dynamodb: {out:?}");
    assert_eq!(out.stdout.trim(), "eu-west-3 []", "{out:?}");

    // The profile without its region line: what users met before the docs were fixed.
    let out = run(&without_region, &aws, &["sts", "get-caller-identity", "--output", "json"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("You must specify a region"), "{out:?}");
    let out = run(&without_region, &python, &["-c", dynamodb]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("NoRegionError"), "{out:?}");
    world.assert_no_leak(&[&secret]);
}
