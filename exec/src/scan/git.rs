//! The git side of `maestro-exec scan`, run as the caller through the `git` program:
//!
//! * history: every object of the repository, loose or packed, reachable or not
//!   (`git cat-file --batch-all-objects`), blobs, commits and tags, read through one
//!   `git cat-file --batch`; a blob is named by the oldest commit that brought it in and its
//!   path there (`git log --all --raw --root`), an object no commit brings in by its id;
//! * pushed commits (`--pre-push`): the objects of the pushed range only (`git rev-list
//!   --objects`), named the same way;
//! * staged content (`--staged`): the index's blobs that differ from HEAD (`git diff --cached`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use maestro_wire::sock::ScanItem;

use super::Scan;
use crate::client::Failure;

/// An object to scan: id, type, size, and how it is named.
struct Object {
    id: String,
    size: u64,
    item: ScanItem,
}

fn git(repo: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(repo);
    cmd
}

/// Runs git to the end and returns its standard output; a failure is one line.
fn output(mut cmd: Command, what: &str) -> Result<Vec<u8>, Failure> {
    let out = cmd.stderr(Stdio::piped()).stdin(Stdio::null()).output().map_err(|e| {
        Failure(format!("cannot run git to {what}: {e} (is git installed and on PATH?)"))
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.lines().next().unwrap_or("").trim();
        return Err(Failure(format!("git could not {what}: {err}")));
    }
    Ok(out.stdout)
}

/// Whether `path` is inside a git work tree (or a bare repository).
pub fn is_repository(path: &Path) -> bool {
    let mut cmd = git(path);
    cmd.args(["rev-parse", "--git-dir"]).stdout(Stdio::null());
    output(cmd, "find the repository").is_ok()
}

/// Oldest commit (12 hex digits) and path that brought in each blob, over `revs`.
fn introductions(repo: &Path, revs: &[String]) -> Result<HashMap<String, String>, Failure> {
    let mut cmd = git(repo);
    cmd.args(["log", "--reverse", "--raw", "--root", "--no-abbrev", "--no-renames", "-z"])
        .arg("--format=%x01%H")
        .args(revs)
        .arg("--");
    let out = output(cmd, "list the history")?;
    let mut named = HashMap::new();
    let mut commit = String::new();
    // With `-z`: each commit is `\x01HASH` and a NUL, each change of it `\n:MODES IDS STATUS`
    // (the newline before the first change only) and a NUL, then its path and a NUL.
    let mut fields = out.split(|b| *b == 0);
    while let Some(field) = fields.next() {
        let text = String::from_utf8_lossy(field);
        let text = text.trim_start_matches('\n');
        if let Some(hash) = text.strip_prefix('\x01') {
            commit = hash.chars().take(12).collect();
            continue;
        }
        let Some(meta) = text.strip_prefix(':') else { continue };
        let Some(path) = fields.next() else { break };
        let parts: Vec<&str> = meta.split(' ').collect();
        // A submodule's entry (mode 160000) is a commit of another repository.
        if parts.len() >= 4 && parts[1] != "160000" {
            named
                .entry(parts[3].to_owned())
                .or_insert_with(|| format!("{commit}:{}", String::from_utf8_lossy(path)));
        }
    }
    Ok(named)
}

/// Types and sizes of `ids` (or of every object with `ids == None`).
fn check(repo: &Path, ids: Option<&[String]>) -> Result<Vec<(String, String, u64)>, Failure> {
    let mut cmd = git(repo);
    cmd.args(["cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)"]);
    let out = match ids {
        None => {
            cmd.args(["--batch-all-objects", "--unordered"]);
            output(cmd, "list the repository's objects")?
        }
        Some(ids) => {
            let input = ids.iter().fold(String::new(), |acc, id| acc + id + "\n");
            feed(cmd, input.into_bytes(), "list the pushed objects")?
        }
    };
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            let (id, kind, size) = (p.next()?, p.next()?, p.next()?.parse().ok()?);
            Some((id.to_owned(), kind.to_owned(), size))
        })
        .collect())
}

/// Runs git with `input` on its standard input (written from a thread, so a large answer
/// cannot block it) and returns its output.
fn feed(mut cmd: Command, input: Vec<u8>, what: &str) -> Result<Vec<u8>, Failure> {
    let mut child = spawn(&mut cmd, what)?;
    let writer = child.stdin.take().map(|mut stdin| {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        })
    });
    let out =
        child.wait_with_output().map_err(|e| Failure(format!("git could not {what}: {e}")))?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Failure(format!("git could not {what}: {}", err.lines().next().unwrap_or(""))));
    }
    Ok(out.stdout)
}

fn spawn(cmd: &mut Command, what: &str) -> Result<Child, Failure> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
        Failure(format!("cannot run git to {what}: {e} (is git installed and on PATH?)"))
    })
}

/// Scans the content of `objects` through one `git cat-file --batch`.
fn scan_objects(scan: &mut Scan, repo: &Path, objects: Vec<Object>) -> Result<(), Failure> {
    let what = "read the repository's objects";
    let mut cmd = git(repo);
    cmd.args(["cat-file", "--batch"]);
    let mut child = spawn(&mut cmd, what)?;
    let input = objects.iter().fold(String::new(), |acc, o| acc + &o.id + "\n");
    let writer = child.stdin.take().map(|mut stdin| {
        std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        })
    });
    let Some(stdout) = child.stdout.take() else {
        return Err(Failure(format!("git could not {what}: no output")));
    };
    let mut out = BufReader::with_capacity(256 * 1024, stdout);
    let result = (|| {
        for object in objects {
            let mut header = String::new();
            out.read_line(&mut header)
                .map_err(|e| Failure(format!("git could not {what}: {e}")))?;
            let mut parts = header.split_whitespace();
            let (Some(_), Some(kind), Some(size)) = (parts.next(), parts.next(), parts.next())
            else {
                // `<id> missing`: gone since it was listed (a gc ran); nothing to scan.
                continue;
            };
            if kind == "missing" {
                continue;
            }
            let size: u64 = size
                .parse()
                .map_err(|_| Failure(format!("git could not {what}: unexpected header")))?;
            let mut content = (&mut out).take(size);
            scan.item(object.item, &mut content, object.size)?;
            // Whatever the scan left unread (too large), then the newline after the content.
            std::io::copy(&mut content, &mut std::io::sink())
                .map_err(|e| Failure(format!("git could not {what}: {e}")))?;
            let mut newline = [0u8; 1];
            out.read_exact(&mut newline)
                .map_err(|e| Failure(format!("git could not {what}: {e}")))?;
        }
        Ok(())
    })();
    drop(out);
    let _ = child.kill();
    let _ = child.wait();
    if let Some(w) = writer {
        let _ = w.join();
    }
    result
}

/// Names the objects of `listed` and scans them.
fn scan_listed(
    scan: &mut Scan,
    repo: &Path,
    listed: Vec<(String, String, u64)>,
    named: &HashMap<String, String>,
) -> Result<(), Failure> {
    let objects = listed
        .into_iter()
        .filter_map(|(id, kind, size)| {
            let short: String = id.chars().take(12).collect();
            let item = match kind.as_str() {
                "blob" => match named.get(&id) {
                    Some(name) => ScanItem { label: name.clone(), lines: true },
                    None => {
                        ScanItem { label: format!("object {short} (in no commit)"), lines: true }
                    }
                },
                "commit" => ScanItem { label: format!("{short} (commit message)"), lines: false },
                "tag" => ScanItem { label: format!("tag {short}"), lines: false },
                _ => return None,
            };
            Some(Object { id, size, item })
        })
        .collect();
    scan_objects(scan, repo, objects)
}

/// Every object of the repository at `repo`.
pub fn history(scan: &mut Scan, repo: &Path) -> Result<(), Failure> {
    let named = introductions(repo, &["--all".to_owned()])?;
    let listed = check(repo, None)?;
    scan_listed(scan, repo, listed, &named)
}

/// The objects of the commits `revs` select (`git rev-list --objects REVS`).
pub fn range(scan: &mut Scan, repo: &Path, revs: &[String]) -> Result<(), Failure> {
    let mut cmd = git(repo);
    cmd.args(["rev-list", "--objects"]).args(revs).arg("--");
    let out = output(cmd, "list the pushed commits")?;
    let ids: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let named = introductions(repo, revs)?;
    let listed = check(repo, Some(&ids))?;
    scan_listed(scan, repo, listed, &named)
}

/// The commits a pre-push hook is told about on its standard input (`LOCAL_REF LOCAL_ID
/// REMOTE_REF REMOTE_ID` lines): for each, the rev-list arguments of what is pushed.
pub fn pushed_ranges(repo: &Path, stdin: &str) -> Vec<Vec<String>> {
    let zero = |id: &str| id.bytes().all(|b| b == b'0');
    stdin
        .lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [_, local, _, remote] = parts[..] else { return None };
            if zero(local) {
                // A deletion pushes nothing.
                return None;
            }
            let known = !zero(remote) && {
                let mut cmd = git(repo);
                cmd.args(["cat-file", "-e", &format!("{remote}^{{commit}}")]);
                output(cmd, "look up the remote commit").is_ok()
            };
            Some(if known {
                vec![local.to_owned(), format!("^{remote}")]
            } else {
                // A new branch, or a remote commit we do not have: what no remote-tracking
                // branch already holds.
                vec![local.to_owned(), "--not".to_owned(), "--remotes".to_owned()]
            })
        })
        .collect()
}

/// The staged blobs that differ from HEAD (added, copied, modified, type-changed), by path.
pub fn staged(scan: &mut Scan, repo: &Path) -> Result<(), Failure> {
    let mut cmd = git(repo);
    cmd.args([
        "diff",
        "--cached",
        "--raw",
        "-z",
        "--no-abbrev",
        "--no-renames",
        "--diff-filter=ACMT",
    ]);
    let out = output(cmd, "list the staged files")?;
    let mut fields = out.split(|b| *b == 0);
    let mut entries = Vec::new();
    while let Some(meta) = fields.next() {
        let meta = String::from_utf8_lossy(meta);
        let Some(meta) = meta.strip_prefix(':') else { continue };
        let Some(path) = fields.next() else { break };
        let parts: Vec<&str> = meta.split(' ').collect();
        // A submodule's entry is a commit of another repository.
        if parts.len() >= 4 && parts[1] != "160000" {
            entries.push((parts[3].to_owned(), String::from_utf8_lossy(path).into_owned()));
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
    let sizes: HashMap<String, (String, u64)> =
        check(repo, Some(&ids))?.into_iter().map(|(id, kind, size)| (id, (kind, size))).collect();
    let objects = entries
        .into_iter()
        .filter_map(|(id, label)| {
            let (kind, size) = sizes.get(&id)?;
            (kind == "blob").then_some(Object {
                id,
                size: *size,
                item: ScanItem { label, lines: true },
            })
        })
        .collect();
    scan_objects(scan, repo, objects)
}
