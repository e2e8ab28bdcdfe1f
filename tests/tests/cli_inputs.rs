//! How `maestro` takes values and refuses bad input, against a real broker:
//!
//! * `--field-file` and `--field-stdin` deliver exactly the bytes the rules promise (one trailing
//!   newline of a single line dropped, multi-line content kept byte for byte), checked in what
//!   an enrolled agent receives;
//! * those values never appear in the process's argv (read from /proc while it runs);
//! * each bad input gets one line on stderr, exit status 1, no value in the message, and
//!   changes nothing (`secrets ls` and `sessions ls` identical before and after).

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_support;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cli_support::{
    broker_env, command, fails_with_one_line, ls_snapshot, material, not_printed, sessions_snapshot,
};
use maestro_tests::broker::Broker;
use maestro_tests::util::temp_dir;
use maestro_wire::limits::{MAX_FIELD_BYTES, MAX_FIELDS};
use nix::sys::stat::Mode;

const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIBplanted-pem-line-one\nplanted-pem-line-two==\n-----END PRIVATE KEY-----\n";

#[tokio::test(flavor = "multi_thread")]
async fn file_and_stdin_values_arrive_byte_exact() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    let tmp = temp_dir("maestro-cli-");
    let write = |name: &str, content: &[u8]| {
        let path = tmp.path().join(name);
        std::fs::write(&path, content).unwrap();
        format!("{}={}", name.to_uppercase(), path.display())
    };
    let lf = write("lf", b"planted-lf-value\n");
    let crlf = write("crlf", b"planted-crlf-value\r\n");
    let bare = write("bare", b"planted-bare-value");
    let pem = write("pem", PEM.as_bytes());
    let two = write("two", b"planted-two\n\n");
    let json_doc = write("json", b"{\n  \"k\": \"planted-json\"\n}\r\n");
    let at_limit = {
        // A value exactly at the limit, followed by a newline that does not count.
        let mut v = vec![b'L'; MAX_FIELD_BYTES];
        v.push(b'\n');
        write("big", &v)
    };
    broker
        .maestro(
            &me,
            &[
                "secrets",
                "add",
                "FILES",
                "--kind",
                "generic",
                "--field-file",
                &lf,
                "--field-file",
                &crlf,
                "--field-file",
                &bare,
                "--field-file",
                &pem,
                "--field-file",
                &two,
                "--field-file",
                &json_doc,
                "--field-file",
                &at_limit,
            ],
        )
        .ok();
    let out = broker
        .maestro_stdin(
            &me,
            &["secrets", "add", "PIPED", "--kind", "generic", "--field-stdin", "PIPED_VALUE"],
            Some(b"planted-piped-value\r\n"),
        )
        .ok();
    not_printed(&out, "planted");
    let out = broker
        .maestro_stdin(
            &me,
            &["secrets", "add", "PIPED_PEM", "--kind", "generic", "--field-stdin", "PEM_VALUE"],
            Some(PEM.as_bytes()),
        )
        .ok();
    not_printed(&out, "planted");

    let got = material(&broker, &me, &["FILES", "PIPED", "PIPED_PEM"]).await;
    let files = &got["FILES"];
    assert_eq!(files["LF"], "planted-lf-value");
    assert_eq!(files["CRLF"], "planted-crlf-value");
    assert_eq!(files["BARE"], "planted-bare-value");
    assert_eq!(files["PEM"], PEM, "multi-line content is byte-exact");
    assert_eq!(files["TWO"], "planted-two\n\n", "two newlines: not a single line, kept");
    assert_eq!(files["JSON"], "{\n  \"k\": \"planted-json\"\n}\r\n");
    assert_eq!(files["BIG"].len(), MAX_FIELD_BYTES);
    assert_eq!(got["PIPED"]["PIPED_VALUE"], "planted-piped-value");
    assert_eq!(got["PIPED_PEM"]["PEM_VALUE"], PEM);

    // Edit with a file and stdin too: new values, same rules.
    let renew = write("renewed", b"planted-renewed\n");
    let renew = renew.replace("RENEWED=", "LF=");
    broker.maestro(&me, &["secrets", "edit", "FILES", "--field-file", &renew]).ok();
    broker
        .maestro_stdin(
            &me,
            &["secrets", "edit", "PIPED", "--field-stdin", "PIPED_VALUE"],
            Some(b"planted-piped-2\n"),
        )
        .ok();
    let got = material(&broker, &me, &["FILES", "PIPED"]).await;
    assert_eq!(got["FILES"]["LF"], "planted-renewed");
    assert_eq!(got["PIPED"]["PIPED_VALUE"], "planted-piped-2");
}

/// Opens a FIFO for writing once a reader has it open (retrying while it has none), failing
/// after `timeout`.
fn open_fifo_writer(path: &Path, timeout: Duration) -> std::fs::File {
    let deadline = Instant::now() + timeout;
    loop {
        match OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path) {
            Ok(f) => return f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no reader opened {} in time: {e}", path.display()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn file_and_stdin_values_never_reach_argv() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    let tmp = temp_dir("maestro-cli-");
    // A FIFO as the value file: maestro blocks reading it, so its argv can be read while it
    // holds (or waits for) the values.
    let fifo = tmp.path().join("value.fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let file_arg = format!("FROM_FILE={}", fifo.display());
    let env = broker_env(&broker, &me);
    let mut child = command(
        tmp.path(),
        &env,
        &[
            "secrets",
            "add",
            "HIDDEN",
            "--kind",
            "generic",
            "--field-file",
            &file_arg,
            "--field-stdin",
            "FROM_STDIN",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = child.id();
    let argv = || std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);

    let mut writer = open_fifo_writer(&fifo, Duration::from_secs(10));
    let before = argv();
    assert!(contains(&before, b"--field-file"), "argv is readable: {before:?}");
    writer.write_all(b"planted-argv-file-4e1\n").unwrap();
    drop(writer);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"planted-argv-stdin-9c3").unwrap();
    // maestro is reading stdin (or about to): argv and environment hold neither value.
    let during = argv();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    for needle in [&b"planted-argv-file-4e1"[..], b"planted-argv-stdin-9c3"] {
        assert!(!contains(&before, needle) && !contains(&during, needle), "value in argv");
        assert!(!contains(&environ, needle), "value in the environment");
        assert!(!contains(&out.stdout, needle) && !contains(&out.stderr, needle));
    }
    let got = material(&broker, &me, &["HIDDEN"]).await;
    assert_eq!(got["HIDDEN"]["FROM_FILE"], "planted-argv-file-4e1");
    assert_eq!(got["HIDDEN"]["FROM_STDIN"], "planted-argv-stdin-9c3");
}

/// Arguments, standard input, and texts the error line must contain.
type Case<'a> = (Vec<&'a str>, Option<&'a [u8]>, Vec<&'a str>);

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    let tmp = temp_dir("maestro-cli-");
    broker
        .maestro(&me, &["secrets", "add", "KEEP", "--kind", "generic", "--field", "KEEP_VAR=v1"])
        .ok();
    let session = broker.maestro(&me, &["sessions", "create"]).ok().stdout;
    let session = session.lines().next().unwrap().to_owned();
    broker.maestro(&me, &["secrets", "activate", "--session", &session, "KEEP"]).ok();
    let secrets_before = ls_snapshot(&broker, &me);
    let sessions_before = sessions_snapshot(&broker, &me);

    let oversized = tmp.path().join("oversized");
    std::fs::write(&oversized, "planted-oversized-".repeat(MAX_FIELD_BYTES / 16)).unwrap();
    assert!(std::fs::metadata(&oversized).unwrap().len() > MAX_FIELD_BYTES as u64);
    let oversized_arg = format!("BIG={}", oversized.display());
    let mut limit_plus_one = vec![b'x'; MAX_FIELD_BYTES + 1];
    let too_many: Vec<String> = (0..=MAX_FIELDS).map(|i| format!("F{i}=v")).collect();
    let mut too_many_args = vec!["secrets", "add", "MANY", "--kind", "generic"];
    for f in &too_many {
        too_many_args.extend(["--field", f.as_str()]);
    }

    let cases: Vec<Case> = vec![
        // bad name
        (
            vec!["secrets", "add", "bad-name", "--kind", "generic", "--field", "A=1"],
            None,
            vec!["bad-name", "[A-Z][A-Z0-9_]"],
        ),
        (vec!["secrets", "show", "../KEEP"], None, vec!["invalid secret name"]),
        // unknown kind
        (
            vec!["secrets", "add", "NEW", "--kind", "nosuchkind", "--field", "A=1"],
            None,
            vec!["nosuchkind"],
        ),
        // missing required field
        (
            vec!["secrets", "add", "NEW", "--kind", "aws", "--field", "access_key_id=AKIA1"],
            None,
            vec!["secret_access_key"],
        ),
        // oversized value: file, stdin, argv, and in an edit
        (
            vec!["secrets", "add", "NEW", "--kind", "generic", "--field-file", &oversized_arg],
            None,
            vec!["'BIG'", "65536"],
        ),
        (
            vec!["secrets", "add", "NEW", "--kind", "generic", "--field-stdin", "BIG"],
            Some(&limit_plus_one[..]),
            vec!["'BIG'", "65536"],
        ),
        (vec!["secrets", "edit", "KEEP", "--field-file", &oversized_arg], None, vec!["'BIG'"]),
        // too many fields
        (too_many_args.clone(), None, vec!["at most 32 fields", "33"]),
        // repeated field, malformed field, unreadable file
        (
            vec!["secrets", "add", "NEW", "--kind", "generic", "--field", "A=1", "--field", "A=2"],
            None,
            vec!["'A'", "more than once"],
        ),
        (
            vec!["secrets", "add", "NEW", "--kind", "generic", "--field", "planted-no-equals"],
            None,
            vec!["F=VALUE"],
        ),
        (
            vec!["secrets", "add", "NEW", "--kind", "generic", "--field-file", "A=/nonexistent/v"],
            None,
            vec!["/nonexistent/v"],
        ),
        // already exists
        (
            vec!["secrets", "add", "KEEP", "--kind", "generic", "--field", "KEEP_VAR=v2"],
            None,
            vec!["KEEP"],
        ),
        // unknown secret or session
        (vec!["secrets", "edit", "NOPE", "--field", "A=1"], None, vec!["NOPE"]),
        (vec!["secrets", "rm", "NOPE"], None, vec!["NOPE"]),
        (
            vec!["secrets", "activate", "--session", "0123456789abcdef", "KEEP"],
            None,
            vec!["0123456789abcdef"],
        ),
        (
            vec!["secrets", "deactivate", "--session", "0123456789abcdef", "KEEP"],
            None,
            vec!["0123456789abcdef"],
        ),
        (vec!["secrets", "activate", "--session", &session, "NOPE"], None, vec!["NOPE"]),
        (vec!["sessions", "show", "0123456789abcdef"], None, vec!["0123456789abcdef"]),
        (vec!["sessions", "end", "0123456789abcdef"], None, vec!["0123456789abcdef"]),
        (vec!["sessions", "show", ".."], None, vec!["invalid session id"]),
        // an edit that changes nothing, set-and-removed, bad TTLs, bad free text
        (vec!["secrets", "edit", "KEEP"], None, vec!["nothing to change"]),
        (
            vec!["secrets", "edit", "KEEP", "--field", "KEEP_VAR=1", "--remove-field", "KEEP_VAR"],
            None,
            vec!["KEEP_VAR"],
        ),
        (vec!["sessions", "create", "--ttl", "12x"], None, vec!["--ttl", "12x"]),
        (vec!["sessions", "create", "--ttl", "31d"], None, vec!["30 days"]),
        (vec!["sessions", "create", "--ttl", "0s"], None, vec!["--ttl"]),
        (vec!["sessions", "create", "--label", "two\nlines"], None, vec!["--label"]),
        (
            vec![
                "secrets",
                "add",
                "NEW",
                "--kind",
                "generic",
                "--field",
                "A=1",
                "--tag",
                "has space",
            ],
            None,
            vec!["tag"],
        ),
    ];
    for (args, stdin, texts) in &cases {
        let out = broker.maestro_stdin(&me, args, *stdin);
        fails_with_one_line(&out, texts);
        not_printed(&out, "planted");
        assert_eq!(ls_snapshot(&broker, &me), secrets_before, "changed by {args:?}");
        assert_eq!(sessions_snapshot(&broker, &me), sessions_before, "changed by {args:?}");
    }
    limit_plus_one.clear();

    // Usage errors are clap's: exit status 2.
    let out = broker.maestro(&me, &["secrets", "add", "NEW"]);
    assert_eq!(out.status, 2, "{out:?}");
    let out = broker.maestro(&me, &["secrets", "activate", "--session", &session]);
    assert_eq!(out.status, 2, "{out:?}");
    assert_eq!(ls_snapshot(&broker, &me), secrets_before);
}
