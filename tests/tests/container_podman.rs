//! The agent as a container's entrypoint, in a container engine from Debian (podman 4.3 with
//! runc), the way `deploy/Dockerfile.sandbox` runs it:
//!
//! * the image is built by `podman build` from a Containerfile whose ENTRYPOINT is
//!   `maestro-agent run --user 1000:1000 --`, like the example's. Its base is `scratch` with this
//!   build's own binaries, the C libraries they link and Debian's static busybox, because the
//!   example's `debian:12-slim` comes from a registry these machines cannot reach (the example
//!   itself differs only in its base and in installing git, curl and the AWS set-up);
//! * the container gets the session bundle as a read-only volume, `/dev/fuse`, `CAP_SYS_ADMIN`
//!   and `CAP_IPC_LOCK`, as docs/docker.md says (without `IPC_LOCK` the agent cannot lock its
//!   memory under the engine's memlock limit and refuses to start); the broker runs on the host (host network);
//! * inside it: the agent enrolls and mounts `/run/secrets`, `podman exec` as uid 1000 gets the
//!   secret from `maestro-exec` (masked in CMD's output by default) and from the file, a deactivation removes both, and ending the
//!   session ends the agent and so the container, its command included.
//!
//! Podman needs runc here: crun 1.8 refuses this machine's hybrid cgroup layout. The container's
//! rlimits are set below the host's hard limits, which runc may not raise without
//! `CAP_SYS_RESOURCE`.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod integrations_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integrations_support::clients_available;
use maestro_tests::agent::{Sandbox, run_cmd, wait_until};
use maestro_tests::broker::CmdOutput;
use maestro_tests::util::{bin, temp_dir};
use serde_json::json;

const VALUE: &str = "planted-podman-container-value-41c7";
const BUSYBOX: &str = "/bin/busybox";
const ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn podman(args: &[&str]) -> CmdOutput {
    run_cmd({
        let mut c = Command::new("podman");
        c.args(["--runtime", "runc"]).args(args);
        c
    })
}

/// Copies `from` to the same absolute path under `root`, following links.
fn copy_into(root: &Path, from: &Path) {
    let to = root.join(from.strip_prefix("/").unwrap());
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

/// The shared libraries `binary` loads, as ldd lists them (absolute paths).
fn libraries(binary: &Path) -> Vec<String> {
    let out = run_cmd({
        let mut c = Command::new("ldd");
        c.arg(binary);
        c
    });
    assert_eq!(out.status, 0, "ldd {}: {out:?}", binary.display());
    out.stdout.split_whitespace().filter(|w| w.starts_with('/')).map(str::to_owned).collect()
}

/// Removes the container and the image, whatever happened.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.container]);
        let _ = podman(&["rmi", "-f", &self.image]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_is_a_podman_containers_entrypoint() {
    if !clients_available(&["podman".as_ref(), "runc".as_ref(), "ldd".as_ref(), BUSYBOX.as_ref()]) {
        return;
    }
    let tag = std::process::id();
    let cleanup = Cleanup {
        container: format!("maestro-podman-test-{tag}"),
        image: format!("localhost/maestro-podman-test:{tag}"),
    };

    // The build context: the binaries, what they link, busybox, a passwd with the sandbox user.
    let ctx = temp_dir("maestro-podman-");
    let root = ctx.path().join("root");
    for name in ["maestro-agent", "maestro-exec"] {
        let path = bin(name);
        let to = root.join("usr/local/bin").join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&path, &to).unwrap();
        for lib in libraries(&path) {
            copy_into(&root, Path::new(&lib));
        }
    }
    copy_into(&root, Path::new(BUSYBOX));
    // The system's roots, which the agent's egress proxy needs (the example image installs
    // Debian's ca-certificates).
    copy_into(&root, Path::new(ROOTS));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nsandbox:x:1000:1000::/home/sandbox:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nsandbox:x:1000:\n").unwrap();
    std::fs::write(
        ctx.path().join("Containerfile"),
        "FROM scratch\n\
         COPY root/ /\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN mkdir -p /home/sandbox /tmp /run && chown 1000:1000 /home/sandbox && chmod 1777 /tmp\n\
         ENV MAESTRO_BUNDLE=/run/maestro/bundle.json\n\
         WORKDIR /home/sandbox\n\
         ENTRYPOINT [\"/usr/local/bin/maestro-agent\", \"run\", \"--user\", \"1000:1000\", \"--\"]\n\
         CMD [\"sleep\", \"600\"]\n",
    )
    .unwrap();
    let built = podman(&["build", "-q", "-t", &cleanup.image, &ctx.path().to_string_lossy()]);
    assert_eq!(built.status, 0, "podman build: {built:?}");

    // The broker on the host; the session's bundle goes into the container read-only.
    let sb = Sandbox::new();
    sb.api
        .post("/v1/secrets", json!({"name": "CTR", "kind": "generic", "fields": {"CTR": VALUE}}))
        .await
        .ok();
    let (session, bundle) = sb.new_session("podman");
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o644)).unwrap();
    let volume = format!("{}:/run/maestro/bundle.json:ro", bundle.display());
    let started = podman(&[
        "run",
        "-d",
        "--name",
        &cleanup.container,
        "--network",
        "host",
        "--device",
        "/dev/fuse",
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "IPC_LOCK",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=4096:4096",
        "-v",
        &volume,
        &cleanup.image,
    ]);
    assert_eq!(started.status, 0, "podman run: {started:?}");
    let logs = || {
        let out = podman(&["logs", &cleanup.container]);
        format!("{}{}", out.stdout, out.stderr)
    };
    let ready = wait_until(Duration::from_secs(30), || logs().contains("maestro-agent: ready"));
    assert!(ready.is_some(), "the agent did not get ready in the container:\n{}", logs());

    // As the sandbox user inside the container, the way `docker exec` reaches it.
    let inside = |args: &[&str]| {
        let mut all = vec!["exec", "-u", "1000:1000", cleanup.container.as_str()];
        all.extend_from_slice(args);
        podman(&all)
    };
    sb.api.activate(&session, &["CTR"]).await.ok();
    let seen = wait_until(Duration::from_secs(10), || {
        inside(&["cat", "/run/secrets/CTR"]).stdout == VALUE
    });
    assert!(seen.is_some(), "the secret's file never showed:\n{}", logs());
    // (busybox has no printenv; its sh prints the variable) Masked by default, as anywhere.
    let out = inside(&["maestro-exec", "--", "sh", "-c", "echo \"$CTR\""]);
    assert_eq!((out.status, out.stdout.trim()), (0, "<CTR>"), "{out:?}");
    let out = inside(&["maestro-exec", "--no-mask", "--", "sh", "-c", "echo \"$CTR\""]);
    assert_eq!((out.status, out.stdout.trim()), (0, VALUE), "{out:?}");
    let out = inside(&["id", "-u"]);
    assert_eq!(out.stdout.trim(), "1000", "{out:?}");

    // Deactivation takes the file and the variable away.
    sb.api.deactivate(&session, &["CTR"]).await.ok();
    let gone =
        wait_until(Duration::from_secs(10), || inside(&["cat", "/run/secrets/CTR"]).status != 0);
    assert!(gone.is_some(), "the file outlived the deactivation:\n{}", logs());
    let out = inside(&["maestro-exec", "--no-mask", "--", "sh", "-c", "echo \"[$CTR]\""]);
    assert_eq!(out.stdout.trim(), "[]", "{out:?}");

    // Ending the session ends the agent, its command and so the container.
    sb.maestro(&["sessions", "end", &session]).ok();
    let stopped = wait_until(Duration::from_secs(20), || {
        podman(&["inspect", "-f", "{{.State.Running}}", &cleanup.container]).stdout.trim()
            == "false"
    });
    assert!(stopped.is_some(), "the container outlived its session:\n{}", logs());
    let log = logs();
    assert!(!log.contains(VALUE), "the container's log holds the value:\n{log}");
    drop(cleanup);
}
