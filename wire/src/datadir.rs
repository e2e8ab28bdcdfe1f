//! Where the broker keeps its data when no directory is given, so that `maestro-broker serve`
//! and the `maestro` CLI agree without any setup, whatever the working directory.
//!
//! A relative default (`./maestro-data`, as before) made a new store, CA and admin token each time
//! `serve` was started in another directory; this default is fixed per user instead.

use std::ffi::OsString;
use std::path::PathBuf;

/// The directory root uses when nothing else is set.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/maestro";

/// The default data directory: `$XDG_DATA_HOME/maestro` when that variable is set (to an
/// absolute path, as the XDG spec requires), else `/var/lib/maestro` for root, else
/// `$HOME/.local/share/maestro`. `None` when none of these can be formed (no `HOME` for a
/// non-root user). `var` reads the environment (a parameter, so tests need not change it).
pub fn default_data_dir(is_root: bool, var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let absolute = |name: &str| var(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = absolute("XDG_DATA_HOME") {
        return Some(xdg.join("maestro"));
    }
    if is_root {
        return Some(PathBuf::from(SYSTEM_DATA_DIR));
    }
    absolute("HOME").map(|home| home.join(".local/share/maestro"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn xdg_first_then_root_then_home() {
        let all = env(&[("XDG_DATA_HOME", "/x"), ("HOME", "/home/u")]);
        assert_eq!(default_data_dir(true, &all), Some(PathBuf::from("/x/maestro")));
        let home = env(&[("HOME", "/home/u")]);
        assert_eq!(default_data_dir(true, &home), Some(PathBuf::from("/var/lib/maestro")));
        assert_eq!(
            default_data_dir(false, &home),
            Some(PathBuf::from("/home/u/.local/share/maestro"))
        );
    }

    #[test]
    fn relative_or_missing_variables_are_ignored() {
        let rel = env(&[("XDG_DATA_HOME", "rel"), ("HOME", "also-rel")]);
        assert_eq!(default_data_dir(false, &rel), None);
        assert_eq!(default_data_dir(false, env(&[])), None);
    }
}
