//! One module per command group. Each command checks its arguments, calls the broker (or reads
//! the local catalog), and returns what to print on stdout: the broker's JSON with `--json`,
//! a table or a `key: value` block otherwise.

pub mod alerts;
pub mod audit;
pub mod export;
pub mod generated;
pub mod kinds;
pub mod oauth;
pub mod secrets;
pub mod sessions;
pub mod teams;
pub mod tokens;
pub mod usage;

use zeroize::Zeroizing;

/// What a command prints on stdout. Zeroizing, because `sessions create` prints a token.
pub type Output = Zeroizing<String>;

/// Wraps text as an [`Output`].
pub fn output(text: String) -> Output {
    Zeroizing::new(text)
}

/// `value` as pretty JSON with a newline, like every other output.
pub fn json_output<T: serde::Serialize>(value: &T) -> anyhow::Result<Output> {
    Ok(crate::client::pretty_json(value)?)
}
