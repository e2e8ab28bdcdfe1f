//! `maestro-exec scan`: finds the active secrets' values (and sealed secrets' placeholders),
//! in their common encodings, in files and in git history, and says where: `FILE:LINE: NAME
//! (ENCODING)` or `COMMIT:FILE:LINE: NAME (ENCODING)`, never the value.
//!
//! This process reads the content with the caller's rights ([`tree`], [`git`]) and streams it
//! to the agent ([`conn`]), which holds the values, matches, and records each finding. Exit
//! status: 0 clean, 1 something found, 2 the scan could not be done (or was incomplete and
//! found nothing). The git hooks ([`hooks`]) run it on what is committed or pushed.

pub mod conn;
pub mod git;
pub mod hooks;
pub mod tree;

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use maestro_wire::sock::{FoundKind, ScanItem};

use crate::client::{self, Failure};
use conn::ScanConn;

pub const SUBCOMMAND: &str = "scan";
/// Nothing found.
pub const EXIT_CLEAN: i32 = 0;
/// A value or placeholder was found.
pub const EXIT_FOUND: i32 = 1;
/// The scan could not be done, or some content could not be read (and nothing was found).
pub const EXIT_ERROR: i32 = 2;

pub const USAGE: &str = "\
usage: maestro-exec scan [--history | --no-history] [PATH]...
       maestro-exec scan --staged [REPO]      (the pre-commit hook)
       maestro-exec scan --pre-push [REPO]    (the pre-push hook; reads the pushed refs on stdin)
       maestro-exec git-hooks install [--force] [REPO]

Looks for the values of the session's active secrets (and the placeholders of sealed ones), as
they are and base64, base64url, hex, URL- or JSON-escaped, in the files under each PATH (default:
.; - is standard input) and, when PATH is the top of a git work tree or with --history, in every
object of its repository. Prints FILE:LINE: NAME (ENCODING) or COMMIT:FILE:LINE: NAME (ENCODING), never a value.
Exit status: 0 nothing found, 1 found, 2 error.
";

/// What to scan.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Paths { paths: Vec<PathBuf>, history: Option<bool> },
    Staged(PathBuf),
    PrePush(PathBuf),
    Help,
}

fn parse(args: &[OsString]) -> Result<Mode, String> {
    let mut history = None;
    let mut staged = false;
    let mut pre_push = false;
    let mut paths = Vec::new();
    let mut options = true;
    for arg in args {
        match arg.to_str() {
            Some("--") if options => options = false,
            Some("-h" | "--help") if options => return Ok(Mode::Help),
            Some("--history") if options => history = Some(true),
            Some("--no-history") if options => history = Some(false),
            Some("--staged") if options => staged = true,
            Some("--pre-push") if options => pre_push = true,
            Some(o) if options && o.starts_with('-') && o != "-" => {
                return Err(format!("unknown option {o}; see maestro-exec scan --help"));
            }
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    if staged || pre_push {
        if (staged && pre_push) || history.is_some() || paths.len() > 1 {
            return Err("--staged and --pre-push take one REPO at most and no other option".into());
        }
        let repo = paths.pop().unwrap_or_else(|| PathBuf::from("."));
        return Ok(if staged { Mode::Staged(repo) } else { Mode::PrePush(repo) });
    }
    if paths.is_empty() {
        paths.push(PathBuf::from("."));
    }
    Ok(Mode::Paths { paths, history })
}

/// Runs `maestro-exec scan ARGS` or `maestro-exec git-hooks ARGS` when `args[0]` names one.
pub fn dispatch(args: &[OsString]) -> Option<i32> {
    match args.first()?.to_str()? {
        SUBCOMMAND => Some(main(&args[1..])),
        hooks::SUBCOMMAND => Some(hooks::main(&args[1..])),
        _ => None,
    }
}

fn main(args: &[OsString]) -> i32 {
    let mode = match parse(args) {
        Ok(Mode::Help) => {
            let _ = io::stdout().write_all(USAGE.as_bytes());
            return EXIT_CLEAN;
        }
        Ok(mode) => mode,
        Err(message) => {
            eprintln!("maestro-exec scan: {message}");
            return EXIT_ERROR;
        }
    };
    let hook = match &mode {
        Mode::Staged(_) => Some("commit"),
        Mode::PrePush(_) => Some("push"),
        _ => None,
    };
    match run(mode) {
        Ok(scan) => {
            let code = scan.exit_code();
            if let Some(what) = hook {
                hooks::explain(what, code, &scan.names);
            }
            code
        }
        Err(Failure(message)) => {
            eprintln!("maestro-exec scan: {message}");
            if let Some(what) = hook {
                hooks::explain(what, EXIT_ERROR, &[]);
            }
            EXIT_ERROR
        }
    }
}

fn run(mode: Mode) -> Result<Scan, Failure> {
    let mut scan = Scan::new(&client::socket_path())?;
    match mode {
        Mode::Paths { paths, history } => {
            for path in &paths {
                tree::walk(&mut scan, path)?;
                let stdin = path.as_os_str() == "-";
                let wanted = !stdin && history.unwrap_or_else(|| path.join(".git").exists());
                if wanted {
                    if git::is_repository(path) {
                        git::history(&mut scan, path)?;
                    } else if history == Some(true) {
                        scan.problem(&format!(
                            "{}: not in a git repository; no history scanned",
                            path.display()
                        ));
                    }
                }
            }
        }
        Mode::Staged(repo) => git::staged(&mut scan, &repo)?,
        Mode::PrePush(repo) => {
            let mut input = String::new();
            io::stdin().take(1024 * 1024).read_to_string(&mut input).map_err(|e| {
                Failure(format!("cannot read the pushed refs on standard input: {e}"))
            })?;
            for revs in git::pushed_ranges(&repo, &input) {
                git::range(&mut scan, &repo, &revs)?;
            }
        }
        Mode::Help => {}
    }
    Ok(scan)
}

/// A scan under way: the agent connection, and what was found and what went wrong.
pub struct Scan {
    conn: ScanConn,
    found: u64,
    problems: u64,
    /// Names of the secrets found, once each.
    names: Vec<String>,
}

impl Scan {
    fn new(socket: &Path) -> Result<Scan, Failure> {
        Ok(Scan { conn: ScanConn::new(socket)?, found: 0, problems: 0, names: Vec::new() })
    }

    fn exit_code(&self) -> i32 {
        if self.found > 0 {
            EXIT_FOUND
        } else if self.problems > 0 {
            EXIT_ERROR
        } else {
            EXIT_CLEAN
        }
    }

    /// Something could not be scanned: told on stderr, and the exit status is 2 if nothing is
    /// found.
    fn problem(&mut self, message: &str) {
        self.problems += 1;
        eprintln!("maestro-exec scan: {message}");
    }

    /// Scans one item of `size` bytes (as far as known) and prints its findings.
    fn item(&mut self, item: ScanItem, content: &mut dyn Read, size: u64) -> Result<(), Failure> {
        let max = self.conn.max_item_bytes();
        if size > max {
            eprintln!(
                "maestro-exec scan: warning: {} is larger than {} MiB; skipped",
                item.label,
                max / (1024 * 1024)
            );
            return Ok(());
        }
        let outcome = self.conn.scan(&item, content, size)?;
        let mut out = io::stdout().lock();
        for f in &outcome.findings {
            let what = match f.found {
                FoundKind::Value => f.encoding.clone(),
                FoundKind::Placeholder => format!("placeholder, {}", f.encoding),
            };
            let place =
                if item.lines { format!("{}:{}", item.label, f.line) } else { item.label.clone() };
            let _ = writeln!(out, "{place}: {} ({what})", f.secret);
            if !self.names.contains(&f.secret) {
                self.names.push(f.secret.clone());
            }
        }
        if outcome.more > 0 {
            let _ = writeln!(out, "{}: {} more occurrences", item.label, outcome.more);
        }
        let _ = out.flush();
        drop(out);
        self.found += outcome.findings.len() as u64 + outcome.more;
        if outcome.truncated {
            eprintln!(
                "maestro-exec scan: warning: {} grew past {} MiB while read; the rest is not scanned",
                item.label,
                max / (1024 * 1024)
            );
        }
        if let Some(e) = outcome.read_error {
            self.problem(&format!("cannot read all of {}: {e}", item.label));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_paths_and_modes() {
        assert_eq!(
            parse(&args(&[])).unwrap(),
            Mode::Paths { paths: vec![".".into()], history: None }
        );
        assert_eq!(
            parse(&args(&["--no-history", "a", "-", "--", "-b"])).unwrap(),
            Mode::Paths { paths: vec!["a".into(), "-".into(), "-b".into()], history: Some(false) }
        );
        assert_eq!(parse(&args(&["--staged"])).unwrap(), Mode::Staged(".".into()));
        assert_eq!(parse(&args(&["--pre-push", "r"])).unwrap(), Mode::PrePush("r".into()));
        assert!(parse(&args(&["--staged", "--history"])).is_err());
        assert!(parse(&args(&["--frob"])).unwrap_err().contains("unknown option --frob"));
    }
}
