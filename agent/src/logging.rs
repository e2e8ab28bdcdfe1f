//! Logs: tracing to stderr, filtered by `RUST_LOG` (default `info`), with the HTTP and TLS
//! libraries capped at `info` whatever `RUST_LOG` says (see [`maestro_wire::logging`]): the
//! agent's own code never logs a value, but those libraries log bodies at debug and trace.

use std::io::IsTerminal;

use maestro_wire::logging::filter_directives;
use tracing_subscriber::EnvFilter;

/// The filter: `RUST_LOG` (or `default`), with the capped targets at `info` at most.
pub fn filter(rust_log: Option<&str>, default: &str) -> EnvFilter {
    // An invalid RUST_LOG falls back to the default rather than silencing the agent.
    EnvFilter::try_new(filter_directives(rust_log, default))
        .unwrap_or_else(|_| EnvFilter::new(filter_directives(None, default)))
}

/// Installs the subscriber (and the bridge for crates that use `log`).
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(rust_log.as_deref(), "info"))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_everywhere_still_caps_the_http_stack() {
        let f = filter(Some("trace"), "info").to_string();
        assert!(f.contains("h2=info"), "{f}");
        assert!(f.contains("hyper=info"), "{f}");
        assert!(f.contains("trace"), "{f}");
        let f = filter(Some("h2=trace,maestro_agent=debug"), "info").to_string();
        assert!(f.contains("h2=info") && !f.contains("h2=trace"), "{f}");
        assert!(filter(Some("=bad=[["), "info").to_string().contains("info"));
    }
}
