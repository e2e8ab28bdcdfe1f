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
        let mut cmd = world.exec(&["--"]);
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
