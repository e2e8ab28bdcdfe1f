//! `maestro-exec git-hooks install [--force] [REPO]`: pre-commit and pre-push hooks that run
//! `maestro-exec scan` on what is being committed (the staged blobs) or pushed (the objects of
//! the pushed commits) and refuse it when an active secret's value or placeholder is in it.
//!
//! A hook that is already there and is not ours is left alone unless `--force` (then it is
//! kept beside as `HOOK.maestro-backup`). The hooks fail closed: when the scan cannot run (no
//! agent) the commit or push is refused too, with the way around it.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{EXIT_CLEAN, EXIT_ERROR, EXIT_FOUND};

pub const SUBCOMMAND: &str = "git-hooks";
/// The line that marks a hook as ours.
const MARK: &str = "# installed by maestro-exec git-hooks";

/// The hook's text: `maestro-exec` by the path it was installed from if that is still there,
/// else from PATH.
fn hook_text(hook: &str, exe: &str) -> String {
    let mode = if hook == "pre-commit" { "--staged" } else { "--pre-push" };
    let exe = exe.replace('\'', "'\\''");
    format!(
        "#!/bin/sh\n{MARK} ({hook}): refuses a {what} that holds an active secret's value or \
         placeholder.\n# Remove this file to stop it; see docs/sandbox.md, \"Finding committed secrets\".\n\
         exe='{exe}'\n[ -x \"$exe\" ] || exe=maestro-exec\nexec \"$exe\" scan {mode} .\n",
        what = if hook == "pre-commit" { "commit" } else { "push" },
    )
}

/// Explains a hook's outcome on stderr (`what`: commit or push).
pub fn explain(what: &str, code: i32, names: &[String]) {
    let flag = "--no-verify";
    match code {
        EXIT_CLEAN => {}
        EXIT_FOUND => {
            let names = names.join(", ");
            eprintln!(
                "maestro-exec: {what} refused: the lines above hold the value or placeholder of {names}.\n\
                 Remove it from what you {what} (for a commit: edit the file, git add it again; for a \
                 push: rewrite the commits that hold it, e.g. git rebase -i, or git commit --amend).\n\
                 A value that reached a commit or left the sandbox is leaked: rotate it (maestro \
                 secrets compromised NAME deactivates it everywhere and shows the provider's rotation \
                 steps). A placeholder only names this session; remove it all the same."
            );
        }
        _ => eprintln!(
            "maestro-exec: {what} refused: the secret scan could not run (see above). Start the \
             session's agent, or {what} with {flag} to skip the scan (not advised)."
        ),
    }
}

fn usage_error(message: &str) -> i32 {
    eprintln!("maestro-exec git-hooks: {message}");
    EXIT_ERROR
}

pub fn main(args: &[OsString]) -> i32 {
    let mut force = false;
    let mut rest = Vec::new();
    for arg in args {
        match arg.to_str() {
            Some("--force") => force = true,
            Some("-h" | "--help") => {
                let _ = std::io::stdout().write_all(super::USAGE.as_bytes());
                return EXIT_CLEAN;
            }
            Some(o) if o.starts_with('-') => {
                return usage_error(&format!(
                    "unknown option {o}; usage: maestro-exec git-hooks install [--force] [REPO]"
                ));
            }
            _ => rest.push(arg.clone()),
        }
    }
    if rest.first().and_then(|a| a.to_str()) != Some("install") || rest.len() > 2 {
        return usage_error("usage: maestro-exec git-hooks install [--force] [REPO]");
    }
    let repo = rest.get(1).map_or_else(|| PathBuf::from("."), PathBuf::from);
    match install(&repo, force) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            EXIT_CLEAN
        }
        Err(message) => usage_error(&message),
    }
}

/// The hooks directory of `repo` (honours `core.hooksPath`).
fn hooks_dir(repo: &Path) -> Result<PathBuf, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--path-format=absolute", "--git-path", "hooks"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e} (is git installed and on PATH?)"))?;
    if !out.status.success() {
        return Err(format!(
            "{} is not in a git repository; name one: git-hooks install REPO",
            repo.display()
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n')))
}

/// Installs both hooks; returns what was done, one line each.
fn install(repo: &Path, force: bool) -> Result<Vec<String>, String> {
    let dir = hooks_dir(repo)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let exe = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "maestro-exec".to_owned());
    let hooks = ["pre-commit", "pre-push"];
    // Check both before writing either: a refusal changes nothing.
    for hook in hooks {
        let path = dir.join(hook);
        if let Ok(existing) = std::fs::read_to_string(&path)
            && !existing.contains(MARK)
            && !force
        {
            return Err(format!(
                "{} exists and is not maestro's; nothing installed. Merge it by hand, or run again \
                 with --force (it is kept as {hook}.maestro-backup)",
                path.display()
            ));
        }
    }
    let mut done = Vec::new();
    for hook in hooks {
        let path = dir.join(hook);
        let text = hook_text(hook, &exe);
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing == text => {
                done.push(format!("{}: already installed", path.display()));
                continue;
            }
            Ok(existing) if !existing.contains(MARK) => {
                let backup = dir.join(format!("{hook}.maestro-backup"));
                std::fs::rename(&path, &backup).map_err(|e| {
                    format!("cannot keep the old {} as {}: {e}", path.display(), backup.display())
                })?;
                done.push(format!(
                    "{}: the old hook is kept as {}",
                    path.display(),
                    backup.display()
                ));
            }
            _ => {}
        }
        let temp = dir.join(format!(".{hook}.maestro-new"));
        std::fs::write(&temp, &text)
            .and_then(|()| std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)))
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        done.push(format!("{}: installed", path.display()));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("git").arg("init").arg("-q").arg(dir.path()).status();
        assert!(ok.is_ok_and(|s| s.success()));
        dir
    }

    #[test]
    fn installs_both_hooks_again_without_harm_and_keeps_a_foreign_one_unless_forced() {
        let dir = repo();
        let hooks = dir.path().join(".git/hooks");
        let lines = install(dir.path(), false).unwrap();
        assert!(lines.iter().all(|l| l.ends_with(": installed")), "{lines:?}");
        let text = std::fs::read_to_string(hooks.join("pre-commit")).unwrap();
        assert!(text.contains("scan --staged ."), "{text}");
        assert!(std::fs::read_to_string(hooks.join("pre-push")).unwrap().contains("--pre-push"));
        let mode = std::fs::metadata(hooks.join("pre-push")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(
            install(dir.path(), false).unwrap().iter().all(|l| l.ends_with("already installed"))
        );

        std::fs::write(hooks.join("pre-push"), "#!/bin/sh\necho mine\n").unwrap();
        let err = install(dir.path(), false).unwrap_err();
        assert!(err.contains("exists and is not maestro's; nothing installed"), "{err}");
        assert_eq!(
            std::fs::read_to_string(hooks.join("pre-push")).unwrap(),
            "#!/bin/sh\necho mine\n"
        );
        install(dir.path(), true).unwrap();
        assert_eq!(
            std::fs::read_to_string(hooks.join("pre-push.maestro-backup")).unwrap(),
            "#!/bin/sh\necho mine\n"
        );
        assert!(std::fs::read_to_string(hooks.join("pre-push")).unwrap().contains(MARK));
    }

    #[test]
    fn outside_a_repository_is_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = install(dir.path(), false).unwrap_err();
        assert!(err.contains("is not in a git repository"), "{err}");
    }
}
