//! The broker as a sandbox reaches it (issue 15, "The broker reachable from sandboxes"): the
//! per-user default data directory, a port clash failing before anything is made, bundles that
//! carry `--public-url`, the agent's `--broker-url`, and the hint an agent gives when the bundle
//! points at loopback, which inside a sandbox is the sandbox itself.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use maestro_tests::agent::{AgentOptions, Sandbox};
use maestro_tests::broker::BrokerOptions;
use maestro_tests::util::{ChildGuard, bin, temp_dir};

const START: Duration = Duration::from_secs(30);

/// `maestro-broker serve` with no `--data-dir`, in `cwd`, with `XDG_DATA_HOME=xdg`.
fn serve_default(cwd: &Path, xdg: &Path, listen: &str) -> Command {
    let mut cmd = Command::new(bin("maestro-broker"));
    cmd.args(["serve", "--listen", listen])
        .current_dir(cwd)
        .env_remove("MAESTRO_DATA_DIR")
        .env_remove("MAESTRO_MASTER_KEY")
        .env("XDG_DATA_HOME", xdg);
    cmd
}

/// The value of `maestro-broker: NAME: VALUE` in a broker's output.
fn printed(log: &str, name: &str) -> Option<String> {
    let prefix = format!("maestro-broker: {name}: ");
    log.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().to_owned())
}

#[test]
fn serve_without_a_data_dir_uses_one_absolute_directory_wherever_it_starts() {
    let tmp = temp_dir("maestro-reach-");
    let xdg = tmp.path().join("xdg");
    let expected = xdg.join("maestro");
    let mut tokens = Vec::new();
    for cwd in ["first", "second"] {
        let cwd = tmp.path().join(cwd);
        std::fs::create_dir(&cwd).unwrap();
        let broker = ChildGuard::spawn("maestro-broker", serve_default(&cwd, &xdg, "127.0.0.1:0"));
        let listening =
            broker.wait_for_stdout(START, |l| l.starts_with("maestro-broker: listening on "));
        let log = broker.log();
        assert!(listening.is_some(), "the broker did not start:\n{log}");
        assert_eq!(printed(&log, "data directory").as_deref(), expected.to_str(), "{log}");
        assert_eq!(
            printed(&log, "admin token").as_deref(),
            expected.join("admin.token").to_str(),
            "{log}"
        );
        // Nothing is made in the working directory.
        assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "{log}");
        tokens.push(std::fs::read_to_string(expected.join("admin.token")).unwrap());
        drop(broker);
    }
    assert_eq!(tokens[0], tokens[1], "the second start used the same store and admin token");
}

#[test]
fn a_port_in_use_fails_before_anything_is_created() {
    let sandbox = Sandbox::new();
    let port = sandbox.broker.url.rsplit(':').next().unwrap().to_owned();
    let tmp = temp_dir("maestro-reach-");
    let xdg = tmp.path().join("xdg");
    let mut clash = ChildGuard::spawn(
        "maestro-broker",
        serve_default(tmp.path(), &xdg, &format!("127.0.0.1:{port}")),
    );
    let status = clash.wait_exit(START).expect("a broker on a port in use exits");
    let log = clash.log();
    assert!(!status.success(), "{log}");
    let error = log.lines().last().unwrap_or_default();
    assert!(error.starts_with("maestro-broker: cannot listen on "), "{log}");
    assert!(error.contains(&port), "the error names the address: {log}");
    assert!(!xdg.exists(), "no data directory, store, CA or token was made: {log}");
}

#[test]
fn bundles_carry_the_public_url_and_the_agent_can_override_it() {
    // The public name is not resolvable here: only the agent's --broker-url makes enrollment
    // work, which shows both that the bundle carries the public URL and that the flag wins.
    let public = "https://broker.sandbox.test:9443";
    let sandbox =
        Sandbox::with(BrokerOptions::args(&["--heartbeat", "300ms", "--public-url", public]));
    let (_, bundle_path) = sandbox.new_session("public");
    let bundle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle_path).unwrap()).unwrap();
    assert_eq!(bundle["broker_url"], public);

    // The server certificate names the public URL's host: a client that reaches the broker
    // under that name verifies it.
    let port = sandbox.broker.url.rsplit(':').next().unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(sandbox.broker.ca_path())
        .args(["--resolve", &format!("broker.sandbox.test:{port}:127.0.0.1")])
        .arg(format!("https://broker.sandbox.test:{port}/v1/kinds"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "TLS to the public name: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    sandbox
        .maestro(&["secrets", "add", "REACH", "--kind", "generic", "--field", "REACH=reached"])
        .ok();
    let (session, bundle_path) = sandbox.new_session("override");
    sandbox.maestro(&["secrets", "activate", "REACH", "--session", &session]).ok();
    let options = AgentOptions {
        extra_args: vec!["--broker-url".into(), sandbox.broker.url.clone()],
        ..Default::default()
    };
    let agent = sandbox.start_agent(&bundle_path, options);
    assert_eq!(std::fs::read_to_string(agent.file("REACH")).unwrap(), "reached");
}

#[test]
fn the_cli_warns_when_a_bundle_points_at_loopback() {
    let sandbox = Sandbox::new();
    let bundle = sandbox.dir().join("loop.json");
    let out =
        sandbox.maestro(&["sessions", "create", "--bundle-out", bundle.to_str().unwrap()]).ok();
    assert!(out.stderr.contains("loopback address"), "{out:?}");
    assert!(out.stderr.contains("--public-url"), "{out:?}");
}

#[test]
fn an_agent_that_cannot_reach_a_loopback_broker_says_why() {
    let sandbox = Sandbox::new();
    let (_, bundle_path) = sandbox.new_session("unreachable");
    // A closed port on loopback, as in a container whose bundle says 127.0.0.1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let options = AgentOptions {
        extra_args: vec!["--broker-url".into(), format!("https://{closed}")],
        ..Default::default()
    };
    let cmd = maestro_tests::agent::Agent::command(
        &bundle_path,
        &sandbox.mount(),
        &sandbox.socket(),
        &options,
    );
    let agent = ChildGuard::spawn("maestro-agent", cmd);
    let started = Instant::now();
    let mut log = agent.log();
    while !log.contains("loopback address") && started.elapsed() < START {
        std::thread::sleep(Duration::from_millis(100));
        log = agent.log();
    }
    assert!(log.contains("which inside a sandbox is the sandbox itself"), "{log}");
    assert!(log.contains("--public-url") && log.contains("--broker-url"), "{log}");
}
