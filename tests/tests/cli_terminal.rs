//! `maestro` at a terminal and around it: shell completions and man pages generated from the
//! command definitions, the hidden prompt of `--field-stdin`, the confirmation of `secrets rm`
//! (and `--yes`), and what `oauth connect` says while it waits.
//!
//! The terminal cases run `maestro` on the slave side of a real pseudo-terminal opened by the
//! test, type on the master side and read back everything the terminal would have shown, so
//! an echoed value would be seen exactly as a person looking at the screen would see it.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{broker_env, command};
use maestro_tests::broker::Broker;
use maestro_tests::util::temp_dir;
use nix::pty::openpty;
use serde_json::Value;

const PLANTED: &str = "planted-terminal-value-93c1";

/// What a pseudo-terminal showed while `maestro` ran on it, and its exit status.
struct Screen {
    status: i32,
    shown: String,
}

/// Runs `cmd` with stdin, stdout and stderr on a new pseudo-terminal. Each time the screen
/// shows `(wait_for, then_type)`'s text, types the answer (in order). Kills the command if it
/// has not ended after 20 s.
fn on_terminal(mut cmd: Command, script: &[(&str, &str)]) -> Screen {
    let pty = openpty(None, None).expect("a pseudo-terminal");
    let slave: OwnedFd = pty.slave;
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("maestro starts");
    // The parent's copies of the slave are gone with `cmd`, so reads end (EIO) when it exits.
    drop(cmd);
    let mut master = File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let pump = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut shown = Vec::new();
    for (wait_for, answer) in script {
        while !String::from_utf8_lossy(&shown).contains(wait_for) {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(bytes) => shown.extend(bytes),
                Err(_) if Instant::now() > deadline => {
                    let _ = child.kill();
                    panic!(
                        "the terminal never showed {wait_for:?}: {}",
                        String::from_utf8_lossy(&shown)
                    );
                }
                Err(_) => {}
            }
        }
        master.write_all(answer.as_bytes()).unwrap();
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("maestro did not end: {}", String::from_utf8_lossy(&shown));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(master);
    let _ = pump.join();
    shown.extend(rx.try_iter().flatten());
    Screen {
        status: status.code().unwrap_or(-1),
        shown: String::from_utf8_lossy(&shown).into_owned(),
    }
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let tmp = temp_dir("maestro-gen-");
    let run = |args: &[&str]| {
        let out = command(tmp.path(), &[], args).output().unwrap();
        assert!(out.status.success(), "maestro {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = run(&["completions", shell]);
        for word in ["secrets", "sessions", "activate", "field-stdin"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    // The bash script is valid bash.
    let bash = tmp.path().join("maestro.bash");
    std::fs::write(&bash, run(&["completions", "bash"])).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(syntax.status.success(), "{syntax:?}");

    let page = run(&["man"]);
    assert!(page.starts_with(".ie") || page.contains(".TH maestro 1"), "{page}");
    assert!(page.contains("MAESTRO_URL"));
    let dir = tmp.path().join("man1");
    let listed = run(&["man", "--dir", dir.to_str().unwrap()]);
    let rm = dir.join("maestro-secrets-rm.1");
    assert!(listed.contains(rm.to_str().unwrap()), "{listed}");
    let rm_page = std::fs::read_to_string(&rm).unwrap();
    assert!(rm_page.contains(".TH maestro-secrets-rm 1") && rm_page.contains("yes"), "{rm_page}");
    assert!(dir.join("maestro-sessions-create.1").exists());

    // A shell that does not exist is clap's usage error, not a crash.
    let out = command(tmp.path(), &[], &["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn field_stdin_on_a_terminal_prompts_without_echo() {
    let broker = Broker::start();
    let tmp = temp_dir("maestro-tty-");
    let env = broker_env(&broker, &broker.admin_token);
    let cmd = command(
        tmp.path(),
        &env,
        &["secrets", "add", "TTY_TOKEN", "--kind", "generic", "--field-stdin", "VALUE"],
    );
    let screen = on_terminal(cmd, &[("(hidden, one line, then Enter): ", &format!("{PLANTED}\n"))]);
    assert_eq!(screen.status, 0, "{}", screen.shown);
    assert!(screen.shown.contains("value of VALUE (hidden"), "{}", screen.shown);
    assert!(!screen.shown.contains(PLANTED), "the value was echoed: {}", screen.shown);
    assert!(screen.shown.contains("TTY_TOKEN"), "{}", screen.shown);

    // The value stored is exactly what was typed (without the newline).
    let got = cli_support::material(&broker, &broker.admin_token, &["TTY_TOKEN"]).await;
    assert_eq!(got["TTY_TOKEN"]["VALUE"], PLANTED);

    // A pipe is read to the end as before, with no prompt.
    let out = cli_support::run_env(
        tmp.path(),
        &env,
        &["secrets", "add", "PIPED", "--kind", "generic", "--field-stdin", "VALUE"],
        Some(b"piped-value-1234\n"),
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert!(!out.stderr.contains("hidden"), "{out:?}");
    assert!(!broker.log().contains(PLANTED), "the value reached the broker's log");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_rm_asks_on_a_terminal_and_yes_skips_the_question() {
    let broker = Broker::start();
    let tmp = temp_dir("maestro-rm-");
    let env = broker_env(&broker, &broker.admin_token);
    for name in ["KEEP_ME", "GO_AWAY", "SCRIPTED"] {
        let out = broker.maestro(
            &broker.admin_token,
            &["secrets", "add", name, "--kind", "generic", "--field", "VALUE=some-value-1"],
        );
        assert_eq!(out.status, 0, "{out:?}");
    }
    let names = || -> Vec<String> {
        let out = broker.maestro(&broker.admin_token, &["secrets", "ls", "--json"]);
        let list: Value = serde_json::from_str(&out.ok().stdout).unwrap();
        cli_support::keys(&list, "name")
    };

    // "n" (or anything but yes) keeps the secret and says how to skip the question.
    let cmd = command(tmp.path(), &env, &["secrets", "rm", "KEEP_ME"]);
    let screen = on_terminal(cmd, &[("[y/N] ", "n\n")]);
    assert_eq!(screen.status, 1, "{}", screen.shown);
    assert!(screen.shown.contains("delete secret KEEP_ME"), "{}", screen.shown);
    assert!(screen.shown.contains("maestro: not deleted"), "{}", screen.shown);
    assert!(names().contains(&"KEEP_ME".to_owned()));

    let cmd = command(tmp.path(), &env, &["secrets", "rm", "GO_AWAY"]);
    let screen = on_terminal(cmd, &[("[y/N] ", "yes\n")]);
    assert_eq!(screen.status, 0, "{}", screen.shown);
    assert!(screen.shown.contains("deleted GO_AWAY"), "{}", screen.shown);
    assert!(!names().contains(&"GO_AWAY".to_owned()));

    // --yes on a terminal: no question.
    let cmd = command(tmp.path(), &env, &["secrets", "rm", "--yes", "KEEP_ME"]);
    let screen = on_terminal(cmd, &[]);
    assert_eq!(screen.status, 0, "{}", screen.shown);
    assert!(!screen.shown.contains("[y/N]"), "{}", screen.shown);

    // Not a terminal (a script): no question, as before.
    let out = cli_support::run_env(tmp.path(), &env, &["secrets", "rm", "SCRIPTED"], None);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(!out.stderr.contains("[y/N]"), "{out:?}");
    assert!(names().is_empty(), "{:?}", names());

    // A bad name is refused before any question.
    let cmd = command(tmp.path(), &env, &["secrets", "rm", "bad name"]);
    let screen = on_terminal(cmd, &[]);
    assert_eq!(screen.status, 1, "{}", screen.shown);
    assert!(!screen.shown.contains("[y/N]"), "{}", screen.shown);
}
