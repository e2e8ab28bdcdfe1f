//! `maestro completions SHELL` and `maestro man`: shell completion scripts and man pages,
//! generated from the same clap definitions that parse the command line, so they never drift
//! from the real flags.

use std::fs;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use super::{Output, output};
use crate::args::{Cli, CompletionsArgs, ManArgs};

/// The completion script for one shell.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<Output> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "maestro", &mut script);
    let text = String::from_utf8(script).context("the completion script is not UTF-8")?;
    Ok(output(text))
}

/// The man page of `maestro` on stdout, or every page written into `--dir`.
pub fn man(args: ManArgs) -> anyhow::Result<Output> {
    let command = Cli::command();
    match args.dir {
        None => Ok(output(render(&command)?)),
        Some(dir) => {
            fs::create_dir_all(&dir).with_context(|| {
                format!("cannot create {}; give a directory you can write to", dir.display())
            })?;
            let mut written = Vec::new();
            write_pages(&command, "maestro", &dir, &mut written)?;
            let mut text = String::new();
            for path in written {
                text.push_str(&format!("{path}\n"));
            }
            Ok(output(text))
        }
    }
}

/// Writes `command`'s page as `name.1`, then its subcommands' as `name-sub.1`, recursively.
fn write_pages(
    command: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<String>,
) -> anyhow::Result<()> {
    // A subcommand's page is titled with its full name, as `man maestro-secrets-add` finds it.
    let path = dir.join(format!("{name}.1"));
    fs::write(&path, render_titled(command, name)?).with_context(|| {
        format!("cannot write {}; give a directory you can write to", path.display())
    })?;
    written.push(path.display().to_string());
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

fn render(command: &clap::Command) -> anyhow::Result<String> {
    render_titled(command, "maestro")
}

fn render_titled(command: &clap::Command, title: &str) -> anyhow::Result<String> {
    let mut page = Vec::new();
    let named =
        command.clone().display_name(title.replace('-', " ")).bin_name(title.replace('-', " "));
    clap_mangen::Man::new(named)
        .title(title.to_owned())
        .render(&mut page)
        .context("cannot render the man page")?;
    String::from_utf8(page).context("the man page is not UTF-8")
}
