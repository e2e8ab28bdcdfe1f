//! Logs: tracing to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! The agent's own code never logs a value. The HTTP and TLS libraries under it log at debug and
//! trace what they send and receive, which could include response bodies, so their targets are
//! capped at `info` whatever `RUST_LOG` says.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Library targets that might log bytes of a body or a handshake at debug or trace.
pub const CAPPED_TARGETS: &[&str] =
    &["h2", "hyper", "hyper_util", "reqwest", "rustls", "tokio_rustls", "hyper_rustls"];

/// The filter: `RUST_LOG` (or `default`), with [`CAPPED_TARGETS`] at `info` at most.
pub fn filter(rust_log: Option<&str>, default: &str) -> EnvFilter {
    let base = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or(default);
    // An invalid RUST_LOG falls back to the default rather than silencing the agent.
    let mut filter = EnvFilter::try_new(base).unwrap_or_else(|_| EnvFilter::new(default));
    for target in CAPPED_TARGETS {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
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
