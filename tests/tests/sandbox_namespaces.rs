//! A real sandbox: the agent as the entrypoint of an isolated sandbox made with Linux namespaces,
//! the way a container runtime would start it, and the whole flow inside it.
//!
//! * The broker runs in a network namespace of its own, listening on a non-loopback address
//!   (`10.215.0.1`) with `--public-url`, so the bundle `maestro sessions create --bundle-out`
//!   writes carries that address, not loopback.
//! * The sandbox is `unshare --mount --pid --uts --fork --mount-proc --kill-child` inside a
//!   second network namespace joined to the broker's by a veth pair: its own mounts (a tmpfs on
//!   `/run`, so its `/run/secrets` and `/run/maestro` are its own), its own PID 1 (the agent,
//!   by `exec`), its own hostname, and no network but the veth.
//! * Inside it: the agent enrolls over the veth, `maestro-exec` gives a command the secret, the
//!   sandbox user reads the file, a deactivation removes both, and ending the session ends the
//!   agent and with it every process of the sandbox (a detached one included).
//!
//! The test reaches into the sandbox with `nsenter`, as `docker exec` would.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use maestro_tests::agent::{SANDBOX_UID, fuse_available, run_cmd};
use maestro_tests::broker::CmdOutput;
use maestro_tests::util::{ChildGuard, bin, temp_dir};

const BROKER_ADDR: &str = "10.215.0.1";
const SANDBOX_ADDR: &str = "10.215.0.2";
/// The broker's port inside its own network namespace, so it cannot clash with anything.
const BROKER_PORT: u16 = 8443;
const VALUE: &str = "planted-namespace-sandbox-value-6d2f";

fn ip(args: &[&str]) {
    let out = run_cmd({
        let mut c = Command::new("ip");
        c.args(args);
        c
    });
    assert_eq!(out.status, 0, "ip {}: {out:?}", args.join(" "));
}

/// Two network namespaces joined by a veth pair; both deleted on drop (with the pair).
struct Net {
    broker_ns: String,
    sandbox_ns: String,
}

impl Net {
    fn create() -> Net {
        let tag = std::process::id() % 100_000;
        let net = Net { broker_ns: format!("mbx-b-{tag}"), sandbox_ns: format!("mbx-s-{tag}") };
        let (b, s) = (net.broker_ns.as_str(), net.sandbox_ns.as_str());
        let (b_if, s_if) = (format!("mbxb{tag}"), format!("mbxs{tag}"));
        for ns in [b, s] {
            let _ = run_cmd({
                let mut c = Command::new("ip");
                c.args(["netns", "del", ns]);
                c
            });
            ip(&["netns", "add", ns]);
        }
        ip(&["-n", b, "link", "add", &b_if, "type", "veth", "peer", "name", &s_if]);
        ip(&["-n", b, "link", "set", &s_if, "netns", s]);
        ip(&["-n", b, "addr", "add", &format!("{BROKER_ADDR}/30"), "dev", &b_if]);
        ip(&["-n", s, "addr", "add", &format!("{SANDBOX_ADDR}/30"), "dev", &s_if]);
        for (ns, dev) in [(b, "lo"), (b, b_if.as_str()), (s, "lo"), (s, s_if.as_str())] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        net
    }

    /// `program` in the broker's network namespace.
    fn in_broker_ns(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.broker_ns)).arg("--").arg(program);
        cmd
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.sandbox_ns, &self.broker_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The pid (on the host) of the sandbox's PID 1: the only child of `unshare --fork`.
fn sandbox_init(unshare: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// SIGKILL to a host pid on drop (no-op once it is gone).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// `ARGS` run inside the sandbox (all its namespaces) as the sandbox user.
fn in_sandbox(init: u32, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--target={init}"))
        .args(["--mount", "--pid", "--net", "--uts", "--"])
        .arg("setpriv")
        .arg(format!("--reuid={SANDBOX_UID}"))
        .arg(format!("--regid={SANDBOX_UID}"))
        .args(["--clear-groups", "--"])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    run_cmd(cmd)
}

/// Every host pid whose PID namespace is `ns` (a `/proc/PID/ns/pid` link target).
fn pids_in(ns: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .is_ok_and(|l| l.to_string_lossy() == ns)
        {
            found.push(pid);
        }
    }
    found
}

fn poll<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let started = Instant::now();
    loop {
        if let Some(found) = check() {
            return Some((found, started.elapsed()));
        }
        if started.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn the_agent_as_a_namespaced_sandbox_entrypoint() {
    if !fuse_available() {
        return;
    }
    let net = Net::create();
    let tmp = temp_dir("maestro-sandbox-ns-");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    let public_url = format!("https://{BROKER_ADDR}:{BROKER_PORT}");

    let mut cmd = net.in_broker_ns(bin("maestro-broker"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("{BROKER_ADDR}:{BROKER_PORT}")])
        .args(["--public-url", &public_url])
        .env_remove("MAESTRO_MASTER_KEY")
        .env_remove("MAESTRO_DATA_DIR")
        .env_remove("MAESTRO_DATABASE_URL")
        .env("RUST_LOG", "info");
    let broker = ChildGuard::spawn("maestro-broker (netns)", cmd);
    broker
        .wait_for_stdout(Duration::from_secs(60), |l| {
            l.starts_with("maestro-broker: listening on ")
        })
        .unwrap_or_else(|| panic!("the broker did not start:\n{}", broker.log()));
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let cli = |args: &[&str], stdin: Option<&str>| -> CmdOutput {
        let mut c = net.in_broker_ns(bin("maestro"));
        c.args(args)
            .env_remove("MAESTRO_TOKEN_FILE")
            .env("MAESTRO_URL", &public_url)
            .env("MAESTRO_TOKEN", token.trim())
            .env("MAESTRO_CA", data.join("ca.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        CmdOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    cli(
        &["secrets", "add", "NS_DEMO", "--kind", "generic", "--field-stdin", "NS_DEMO"],
        Some(VALUE),
    )
    .ok();
    let bundle = tmp.path().join("bundle.json");
    let out = cli(
        &["sessions", "create", "--label", "ns-sandbox", "--bundle-out", bundle.to_str().unwrap()],
        None,
    )
    .ok();
    let session = out.stdout.lines().next().unwrap().trim().to_owned();
    // No loopback warning: the bundle carries the public URL, the broker's veth address.
    assert!(!out.stderr.contains("loopback"), "{out:?}");
    let carried: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    assert_eq!(carried["broker_url"], public_url.as_str(), "{carried}");
    cli(&["secrets", "activate", "--session", &session, "NS_DEMO"], None).ok();

    // The sandbox: its own mounts, PIDs, hostname and network; the agent is its PID 1.
    let script = format!(
        "mount -t tmpfs -o mode=0755 sandbox-run /run && hostname maestro-sandbox && \
         exec {agent} run --bundle {bundle} --user {SANDBOX_UID} -- sleep 100000",
        agent = bin("maestro-agent").display(),
        bundle = bundle.display(),
    );
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", net.sandbox_ns))
        .args(["--", "unshare", "--mount", "--pid", "--uts", "--fork", "--mount-proc"])
        .args(["--propagation", "private", "--kill-child", "--", "sh", "-c", &script])
        .env("RUST_LOG", "info");
    let mut sandbox = ChildGuard::spawn("sandbox (unshare)", cmd);
    let unshare = sandbox.pid().unwrap();
    let (init, _) = poll(Duration::from_secs(10), || sandbox_init(unshare))
        .unwrap_or_else(|| panic!("the sandbox has no PID 1:\n{}", sandbox.log()));
    // Dropped before `sandbox` (declared after it): a failed test kills the sandbox's PID 1,
    // and with it everything in its PID namespace, before waiting for its output to end.
    let _kill = KillOnDrop(init);
    let pid_ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    let pid_ns = pid_ns.to_string_lossy().into_owned();
    assert_ne!(pid_ns, std::fs::read_link("/proc/self/ns/pid").unwrap().to_string_lossy());

    // Enrolled over the veth: maestro-exec inside gets the value.
    let exec = bin("maestro-exec");
    let exec = exec.to_str().unwrap();
    let (out, took) = poll(Duration::from_secs(60), || {
        let out = in_sandbox(init, &[exec, "--no-mask", "--", "printenv", "NS_DEMO"]);
        (out.status == 0).then_some(out)
    })
    .unwrap_or_else(|| panic!("maestro-exec never got the secret:\n{}", sandbox.log()));
    assert_eq!(out.stdout.trim(), VALUE);
    eprintln!("sandbox ready (enrolled over {BROKER_ADDR}) after {took:?}");
    assert!(sandbox.log().contains("enrolled"), "{}", sandbox.log());
    // Printed without --no-mask, the value is masked by maestro-exec.
    let out = in_sandbox(init, &[exec, "--", "printenv", "NS_DEMO"]);
    assert_eq!(out.stdout.trim(), "<NS_DEMO>", "{out:?}");
    // Inside: PID 1 is the agent, the hostname is the sandbox's, /run/secrets is its own.
    let out = in_sandbox(init, &["cat", "/proc/1/comm"]);
    assert_eq!(out.stdout.trim(), "maestro-agent", "{out:?}");
    assert_eq!(in_sandbox(init, &["hostname"]).stdout.trim(), "maestro-sandbox");
    let out = in_sandbox(init, &["cat", "/run/secrets/NS_DEMO"]);
    assert_eq!(out.stdout, VALUE, "{out:?}");
    assert!(!Path::new("/run/secrets/NS_DEMO").exists(), "the host sees the sandbox's mount");
    // Its only way out is the veth: loopback here is the sandbox itself.
    let out = in_sandbox(init, &["cat", "/proc/net/dev"]);
    assert!(out.stdout.contains("mbxs"), "{out:?}");

    // Deactivation: the variable and the file are gone inside.
    cli(&["secrets", "deactivate", "--session", &session, "NS_DEMO"], None).ok();
    let (_, took) = poll(Duration::from_secs(10), || {
        let out = in_sandbox(init, &["cat", "/run/secrets/NS_DEMO"]);
        (out.status != 0).then_some(())
    })
    .expect("the file stays after deactivation");
    eprintln!("file gone {took:?} after deactivation");
    let out = in_sandbox(init, &[exec, "--no-mask", "--", "printenv", "NS_DEMO"]);
    assert!(!out.stdout.contains(VALUE), "{out:?}");

    // A process that left its parent behind, as a hostile tool might.
    let out = in_sandbox(
        init,
        &["sh", "-c", "setsid sleep 100000 >/dev/null 2>&1 < /dev/null & echo started"],
    );
    assert_eq!(out.stdout.trim(), "started", "{out:?}");
    assert!(pids_in(&pid_ns).len() >= 3, "agent, its command and the detached sleep");

    // Ending the session ends the agent, so the kernel ends everything in its PID namespace.
    cli(&["sessions", "end", &session], None).ok();
    let status = sandbox.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "the sandbox did not end with its session:\n{}", sandbox.log());
    let (_, took) = poll(Duration::from_secs(10), || pids_in(&pid_ns).is_empty().then_some(()))
        .unwrap_or_else(|| panic!("processes left in the sandbox: {:?}", pids_in(&pid_ns)));
    eprintln!("every sandbox process gone {took:?} after the agent exited");

    // The value reached no log and no file the broker keeps.
    assert!(!sandbox.log().contains(VALUE) && !broker.log().contains(VALUE));
    for file in files(&data) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(!bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()), "{}", file.display());
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    maestro_tests::util::files_under(dir)
}
