//! SSH keys (kind `ssh`) against a real OpenSSH server on a loopback port (Debian's
//! openssh-server, started by the test with a temporary host key, config and authorized_keys)
//! and a bare git repository reached over `ssh://`:
//!
//! * plain: the key is a 0400 file under the mount and `GIT_SSH_COMMAND` points at it;
//!   `maestro-exec -- git clone` and `git push` work;
//! * sealed: the sandbox gets `SSH_AUTH_SOCK` only; `git clone` and `git push` work through the
//!   agent's ssh-agent socket; the key is in no file under the mount, in no sandbox process's
//!   environment or memory; another uid is refused at the socket; a key whose `hosts` do not
//!   name the server signs nothing; deactivation ends an open `ssh` session and removes the
//!   socket; the audit shows each signature with its command.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod integrations_support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use integrations_support::{World, clients_available, process_holds, sandbox_pids};
use maestro_tests::agent::{OTHER_UID, SANDBOX_UID, as_uid, run_cmd, wait_until};
use maestro_tests::broker::CmdOutput;
use maestro_tests::util::{ChildGuard, files_containing};
use serde_json::{Value, json};

const SSHD: &str = "/usr/sbin/sshd";

/// The sandbox uid's account name (sshd logs in by name).
fn sandbox_user() -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2) == Some(&SANDBOX_UID.to_string().as_str())).then(|| f[0].to_owned())
        })
        .expect("the sandbox uid has an account in /etc/passwd")
}

fn available() -> bool {
    clients_available(&["git".as_ref(), "ssh".as_ref(), "ssh-keygen".as_ref(), SSHD.as_ref()])
}

/// A loopback sshd with its own host key and authorized_keys, and a bare repository.
struct Server {
    _sshd: ChildGuard,
    port: u16,
    user: String,
    repo: PathBuf,
    /// `[127.0.0.1]:PORT ssh-ed25519 ...`
    known_hosts: String,
    /// The client key pair the server trusts: the private key's text and its public line.
    key: String,
    /// The raw Ed25519 private scalar seed (32 bytes), for the memory scan.
    seed: Vec<u8>,
}

fn keygen(path: &Path) {
    let out = run_cmd({
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-t", "ed25519", "-N", "", "-C", "maestro-test", "-f"]).arg(path);
        c
    });
    assert_eq!(out.status, 0, "{out:?}");
}

/// The 32-byte seed of an unencrypted OpenSSH Ed25519 private key (its private section holds
/// the 64-byte secret key, seed first, right after the public key).
fn ed25519_seed(key: &str) -> Vec<u8> {
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let raw = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    let marker = b"ssh-ed25519";
    let last = raw.windows(marker.len()).rposition(|w| w == marker).unwrap();
    // The private section repeats the key type; after its last "ssh-ed25519" come the public
    // key (4 + 32 bytes) and the 64-byte secret, whose first half is the seed.
    let secret = &raw[last + marker.len() + 4 + 32 + 4..][..64];
    secret[..32].to_vec()
}

impl Server {
    fn start(dir: &Path) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("user_key"));
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
        // sshd's privilege separation directory (Debian's build wants /run/sshd).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let user = sandbox_user();
        // `UsePAM yes`: with it off, sshd refuses an account whose password is locked ('!'),
        // which the sandbox account is; PAM's account check does not.
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             AllowUsers {user}\nLogLevel VERBOSE\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let mut cmd = Command::new(SSHD);
        cmd.args(["-D", "-e", "-f"]).arg(dir.join("sshd_config"));
        let sshd = ChildGuard::spawn("sshd", cmd);
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up.is_some(), "sshd did not listen: {}", sshd.log());
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let known_hosts = format!("[127.0.0.1]:{port} {}\n", host_pub.join(" "));
        let repo = dir.join("repo.git");
        let out = run_cmd({
            let mut c = Command::new("git");
            c.args(["init", "-q", "--bare", "-b", "main"]).arg(&repo);
            c
        });
        assert_eq!(out.status, 0, "{out:?}");
        let out = run_cmd({
            let mut c = Command::new("chown");
            c.arg("-R").arg(format!("{SANDBOX_UID}:{SANDBOX_UID}")).arg(&repo);
            c
        });
        assert_eq!(out.status, 0, "{out:?}");
        let key = std::fs::read_to_string(dir.join("user_key")).unwrap();
        let seed = ed25519_seed(&key);
        Server { _sshd: sshd, port, user, repo, known_hosts, key, seed }
    }

    fn url(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}{}", self.user, self.port, self.repo.display())
    }

    /// The key's base64 lines (each long enough not to turn up by chance).
    fn key_lines(&self) -> Vec<String> {
        self.key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 40)
            .map(str::to_owned)
            .collect()
    }
}

/// `maestro-exec -- ARGS` as the sandbox user, git quiet and never prompting.
fn exec(world: &World, args: &[&str]) -> CmdOutput {
    let mut cmd = world.exec(&["--"]);
    cmd.args(args).env("GIT_TERMINAL_PROMPT", "0").env("GIT_CONFIG_NOSYSTEM", "1");
    run_cmd(cmd)
}

/// Clones, commits a file and pushes it, in a fresh work tree `name` under the home.
fn clone_commit_push(world: &World, server: &Server, name: &str) -> CmdOutput {
    let out = exec(world, &["git", "clone", "-q", &server.url(), name]);
    if out.status != 0 {
        return out;
    }
    let script = format!(
        "cd {name} && git -c user.name=t -c user.email=t@example.com commit -q --allow-empty -m {name} && git push -q origin HEAD:main"
    );
    exec(world, &["sh", "-c", &script])
}

fn pushed_commits(server: &Server) -> String {
    let out = run_cmd({
        let mut c = Command::new("git");
        // Root reads a repository the sandbox user owns: safe.directory says that is fine.
        c.args(["-c", "safe.directory=*", "--git-dir"]).arg(&server.repo);
        c.args(["log", "--format=%s", "main"]);
        c.env("GIT_CONFIG_NOSYSTEM", "1").env("HOME", "/nonexistent");
        c
    });
    out.stdout
}

async fn add(world: &World, name: &str, fields: Value, exposure: &str) {
    world
        .sb
        .api
        .post(
            "/v1/secrets",
            json!({"name": name, "kind": "ssh", "fields": fields, "exposure": exposure}),
        )
        .await
        .ok();
}

fn var(world: &World, name: &str) -> Option<String> {
    let out = exec(world, &["printenv", name]);
    (out.status == 0).then(|| out.stdout.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_key_is_a_0400_file_and_git_clones_and_pushes_over_ssh() {
    if !available() {
        return;
    }
    let world = World::new("ssh-plain");
    let server = Server::start(&world.sb.dir().join("sshd"));
    add(
        &world,
        "DEPLOY",
        json!({"private_key": server.key, "known_hosts": server.known_hosts, "hosts": "127.0.0.1"}),
        "plain",
    )
    .await;
    world.activate(&["DEPLOY"], &["DEPLOY"]).await;

    let id = world.mounted("ssh/id");
    let meta = std::fs::metadata(&id).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o400, "{id}");
    assert_eq!(meta.uid(), SANDBOX_UID);
    let command = var(&world, "GIT_SSH_COMMAND").unwrap();
    assert_eq!(
        command,
        format!(
            "ssh -i {id} -o IdentitiesOnly=yes -o UserKnownHostsFile={}",
            world.mounted("ssh/known_hosts")
        )
    );

    let out = clone_commit_push(&world, &server, "plain");
    assert_eq!(out.status, 0, "{out:?}");
    assert!(pushed_commits(&server).contains("plain"), "{}", pushed_commits(&server));
    world.assert_no_leak(&server.key_lines().iter().map(String::as_str).collect::<Vec<_>>());

    // Deactivated: the file and the variable are gone, and git cannot log in.
    world.deactivate(&["DEPLOY"], &[]).await;
    assert!(!Path::new(&id).exists());
    let out = exec(&world, &["git", "ls-remote", &server.url()]);
    assert_ne!(out.status, 0, "{out:?}");
}

/// A registered sealed key: the response's error, if any.
async fn try_add_sealed(world: &World, name: &str, fields: Value) -> String {
    let reply = world
        .sb
        .api
        .post(
            "/v1/secrets",
            json!({"name": name, "kind": "ssh", "fields": fields, "exposure": "sealed"}),
        )
        .await;
    reply.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_key_signs_through_the_agent_only_for_its_hosts_and_the_sandbox_user() {
    if !available() {
        return;
    }
    let world = World::new("ssh-sealed");
    let server = Server::start(&world.sb.dir().join("sshd"));

    // Registration refuses what the agent could not enforce.
    let e =
        try_add_sealed(&world, "NOKH", json!({"private_key": server.key, "hosts": "127.0.0.1"}))
            .await;
    assert!(e.contains("known_hosts"), "{e}");

    add(
        &world,
        "DEPLOY",
        json!({"private_key": server.key, "known_hosts": server.known_hosts, "hosts": "127.0.0.1"}),
        "sealed",
    )
    .await;
    world.activate(&["DEPLOY"], &["DEPLOY"]).await;

    let sock = var(&world, "SSH_AUTH_SOCK").unwrap();
    assert!(sock.ends_with("/ssh/DEPLOY.sock"), "{sock}");
    assert_eq!(
        var(&world, "GIT_SSH_COMMAND").unwrap(),
        format!("ssh -o UserKnownHostsFile={}", world.mounted("ssh/known_hosts"))
    );
    assert!(!Path::new(&world.mounted("ssh/id")).exists());

    let out = clone_commit_push(&world, &server, "sealed");
    assert_eq!(out.status, 0, "{out:?}\n{}", world.agent.log());
    assert!(pushed_commits(&server).contains("sealed"), "{}", pushed_commits(&server));

    // The key's text and its raw secret are in no file under the mount and in no process of
    // the sandbox user, while a session signed with it is open.
    let mut ssh = ChildGuard::spawn("ssh", {
        let mut c = world.exec(&["--"]);
        c.args(["sh", "-c"]).arg(format!(
            "$GIT_SSH_COMMAND -o BatchMode=yes -p {} {}@127.0.0.1 'echo connected; sleep 30'",
            server.port, server.user
        ));
        c
    });
    ssh.wait_for_stdout(Duration::from_secs(10), |l| l.contains("connected"))
        .unwrap_or_else(|| panic!("ssh did not connect: {}\n{}", ssh.log(), world.agent.log()));
    let lines = server.key_lines();
    for line in &lines {
        let found = files_containing(&world.sb.mount(), line.as_bytes());
        assert!(found.is_empty(), "the key is in {found:?}");
    }
    let pids = sandbox_pids();
    assert!(!pids.is_empty());
    for pid in &pids {
        for needle in lines.iter().map(|l| l.as_bytes()).chain([server.seed.as_slice()]) {
            assert_eq!(process_holds(*pid, needle), None, "process {pid} holds the key");
        }
    }

    // Another uid is refused at the socket.
    let out = run_cmd({
        let mut c = as_uid(OTHER_UID, "ssh-add");
        c.arg("-l").env_clear().env("SSH_AUTH_SOCK", &sock);
        c
    });
    assert_ne!(out.status, 0, "{out:?}");
    assert!(!out.stdout.contains("ED25519"), "{out:?}");
    // The sandbox user sees the key's public half only.
    let out = exec(&world, &["ssh-add", "-L"]);
    assert!(out.stdout.starts_with("ssh-ed25519 "), "{out:?}");

    // Deactivation ends the open session and removes the socket at once.
    let started = Instant::now();
    world.deactivate(&["DEPLOY"], &[]).await;
    let ended = ssh.wait_exit(Duration::from_secs(5));
    assert!(ended.is_some(), "the ssh session outlived the deactivation: {}", ssh.log());
    eprintln!("ssh session ended {:?} after the deactivation was asked", started.elapsed());
    assert!(!Path::new(&sock).exists(), "{sock} is still there");
    let out = run_cmd({
        let mut c = as_uid(SANDBOX_UID, "ssh-add");
        c.arg("-l").env_clear().env("SSH_AUTH_SOCK", &sock);
        c
    });
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("Error connecting to agent"), "{out:?}");

    // A key whose hosts do not name this server signs nothing for it.
    add(
        &world,
        "ELSEWHERE",
        json!({"private_key": server.key, "known_hosts": server.known_hosts, "hosts": "git.example.com"}),
        "sealed",
    )
    .await;
    world.activate(&["ELSEWHERE"], &["ELSEWHERE"]).await;
    let out = exec(&world, &["git", "ls-remote", &server.url()]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");

    // The audit: each signature with its command and host; the refusals.
    let refused_uid = format!("ssh-agent socket of DEPLOY: uid {OTHER_UID}");
    let mut history = String::new();
    let seen = wait_until(Duration::from_secs(5), || {
        history = world.sb.maestro(&["secrets", "history", "DEPLOY"]).ok().stdout;
        history.contains("ssh signature for 127.0.0.1") && history.contains(&refused_uid)
    });
    assert!(seen.is_some(), "{history}");
    // Each signature names the program that asked: ssh (git runs it).
    let signed: Vec<&str> =
        history.lines().filter(|l| l.contains("ssh signature for 127.0.0.1")).collect();
    assert!(signed.len() >= 3, "clone, push and the session each signed: {history}");
    assert!(signed.iter().all(|l| l.contains(" ssh ")), "{history}");
    // Usage reaches the broker in batches: wait for the refusal's record.
    let mut history = String::new();
    let seen = wait_until(Duration::from_secs(5), || {
        history = world.sb.maestro(&["secrets", "history", "ELSEWHERE"]).ok().stdout;
        history.contains("is not one of the key's hosts")
    });
    assert!(seen.is_some(), "{history}\n{}", world.agent.log());
    world.assert_no_leak(&lines.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passphrase_protected_key_works_plain_and_sealed_without_a_prompt() {
    if !available() {
        return;
    }
    let world = World::new("ssh-passphrase");
    let dir = world.sb.dir().join("sshd");
    let server = Server::start(&dir);
    let protected = dir.join("protected_key");
    std::fs::write(&protected, &server.key).unwrap();
    std::fs::set_permissions(&protected, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_cmd({
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-p", "-P", "", "-N", "correct horse", "-f"]).arg(&protected);
        c
    });
    assert_eq!(out.status, 0, "{out:?}");
    let protected = std::fs::read_to_string(&protected).unwrap();
    assert_ne!(protected, server.key);

    // A wrong passphrase, or none, is refused at registration.
    for fields in [
        json!({"private_key": protected, "passphrase": "wrong"}),
        json!({"private_key": protected}),
    ] {
        let reply = world
            .sb
            .api
            .post("/v1/secrets", json!({"name": "BAD", "kind": "ssh", "fields": fields}))
            .await;
        assert!(reply.message().contains("passphrase"), "{}", reply.message());
        assert!(!reply.message().contains("correct horse"));
    }

    add(
        &world,
        "PLAIN_PW",
        json!({"private_key": protected, "passphrase": "correct horse", "known_hosts": server.known_hosts}),
        "plain",
    )
    .await;
    world.activate(&["PLAIN_PW"], &["PLAIN_PW"]).await;
    // The file is the decrypted key: ssh uses it without asking (no terminal here).
    let out = exec(&world, &["git", "ls-remote", &server.url()]);
    assert_eq!(out.status, 0, "{out:?}");
    world.deactivate(&["PLAIN_PW"], &[]).await;

    add(
        &world,
        "SEALED_PW",
        json!({"private_key": protected, "passphrase": "correct horse", "known_hosts": server.known_hosts}),
        "sealed",
    )
    .await;
    world.activate(&["SEALED_PW"], &["SEALED_PW"]).await;
    let out = exec(&world, &["git", "ls-remote", &server.url()]);
    assert_eq!(out.status, 0, "{out:?}\n{}", world.agent.log());
    let out = exec(&world, &["env"]);
    assert!(!out.stdout.contains("correct horse"), "{out:?}");
    // Without hosts the key signs for any server; the record names it from known_hosts.
    let mut history = String::new();
    let seen = wait_until(Duration::from_secs(5), || {
        history = world.sb.maestro(&["secrets", "history", "SEALED_PW"]).ok().stdout;
        history.contains("ssh signature for 127.0.0.1")
    });
    assert!(seen.is_some(), "{history}");
    world.assert_no_leak(&["correct horse"]);
}
