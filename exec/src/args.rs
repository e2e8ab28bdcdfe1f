//! `maestro-exec`'s command line, parsed by hand: options stop where CMD starts, so CMD's own
//! options are never taken for ours.

use std::ffi::OsString;

pub const USAGE: &str = "\
usage: maestro-exec [--only NAME]... [--no-mask] [--] CMD [ARGS...]
       maestro-exec --list [--json]
       maestro-exec git-credential <get|store|erase>
       maestro-exec aws-credential-process [NAME]
       maestro-exec scan [--history | --no-history] [PATH]...   (see maestro-exec scan --help)
       maestro-exec git-hooks install [--force] [REPO]

Runs CMD with the variables of the session's active secrets (or only the named ones) added to
its environment. --list shows the active secrets, their kinds, variables and files; never values.
CMD's stdout and stderr are masked: an injected value (6 bytes or longer), or its base64, hex,
URL or JSON encoding, shows as <NAME>; CMD then runs as maestro-exec's child (under a
pseudo-terminal when stdout is a terminal). --no-mask execs CMD with its output untouched.
The agent's socket is $MAESTRO_AGENT_SOCK, or /run/maestro/agent.sock.
Exit status: CMD's own; 125 maestro-exec's own error; 126 CMD cannot run; 127 CMD not found.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    Run { only: Vec<String>, command: Vec<OsString>, mask: bool },
    List { json: bool },
    Help,
    Version,
}

/// Parses the arguments (without argv[0]). Options stop at `--` or at the first argument that
/// is not an option, which starts CMD, so CMD's own options are never taken for ours.
///
/// The credential helpers' subcommands (`git-credential`, `aws-credential-process`) are matched
/// on `args[0]` before this, in [`crate::helpers::dispatch`].
pub fn parse(args: &[OsString]) -> Result<Invocation, String> {
    let mut only = Vec::new();
    let mut list = false;
    let mut json = false;
    let mut mask = true;
    let mut i = 0;
    while i < args.len() {
        let Some(arg) = args[i].to_str() else { break };
        match arg {
            "--" => {
                i += 1;
                break;
            }
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            "--list" => list = true,
            "--json" => json = true,
            "--no-mask" => mask = false,
            "--only" => {
                i += 1;
                let name =
                    args.get(i).and_then(|a| a.to_str()).ok_or("--only needs a secret name")?;
                only.push(name.to_owned());
            }
            _ if arg.starts_with("--only=") => only.push(arg["--only=".len()..].to_owned()),
            _ if arg.starts_with('-') && arg.len() > 1 => {
                return Err(format!("unknown option {arg}; see maestro-exec --help"));
            }
            _ => break,
        }
        i += 1;
    }
    let command: Vec<OsString> = args[i..].to_vec();
    if list {
        if !command.is_empty() || !only.is_empty() || !mask {
            return Err("--list takes no command, no --only and no --no-mask".to_owned());
        }
        return Ok(Invocation::List { json });
    }
    if json {
        return Err("--json goes with --list".to_owned());
    }
    if command.is_empty() {
        return Err(
            "no command given; usage: maestro-exec [--only NAME]... [--] CMD [ARGS...]".into()
        );
    }
    if let Some(bad) = only.iter().find(|n| !maestro_wire::names::is_valid_secret_name(n)) {
        return Err(format!("{bad:?} is not a secret name (they look like AWS_PROD)"));
    }
    Ok(Invocation::Run { only, command, mask })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_like_env() {
        assert_eq!(
            parse(&args(&["--only", "AWS", "--only=GH", "make", "-j4"])).unwrap(),
            Invocation::Run {
                only: vec!["AWS".into(), "GH".into()],
                command: args(&["make", "-j4"]),
                mask: true,
            }
        );
        // CMD's own options are CMD's.
        assert_eq!(
            parse(&args(&["ls", "--list"])).unwrap(),
            Invocation::Run { only: vec![], command: args(&["ls", "--list"]), mask: true }
        );
        assert_eq!(
            parse(&args(&["--", "--weird-cmd"])).unwrap(),
            Invocation::Run { only: vec![], command: args(&["--weird-cmd"]), mask: true }
        );
        assert_eq!(parse(&args(&["--list", "--json"])).unwrap(), Invocation::List { json: true });
        assert_eq!(parse(&args(&["--help"])).unwrap(), Invocation::Help);
        assert_eq!(
            parse(&args(&["--no-mask", "cat", "--no-mask"])).unwrap(),
            Invocation::Run { only: vec![], command: args(&["cat", "--no-mask"]), mask: false }
        );
    }

    #[test]
    fn refuses_bad_usage_with_one_line() {
        assert!(parse(&args(&[])).unwrap_err().starts_with("no command given"));
        assert!(parse(&args(&["--only"])).unwrap_err().contains("needs a secret name"));
        assert!(
            parse(&args(&["--only", "bad-name", "x"])).unwrap_err().contains("not a secret name")
        );
        assert!(parse(&args(&["--frob", "x"])).unwrap_err().contains("unknown option --frob"));
        assert!(parse(&args(&["--list", "x"])).is_err());
        assert!(parse(&args(&["--json", "x"])).is_err());
        assert!(parse(&args(&["--list", "--no-mask"])).is_err());
    }
}
