//! The log filter of every Maestro binary that logs (`maestro-broker`, `maestro-agent`), as
//! directives for `tracing_subscriber::EnvFilter`, so that this crate needs no tracing.
//!
//! Our own code never logs a value. The HTTP and TLS libraries under it log at debug and trace
//! what they send and receive, which could include request and response bodies, so their
//! targets are capped at `info` whatever `RUST_LOG` says.

/// Library targets that might log bytes of a body or a handshake at debug or trace.
pub const CAPPED_TARGETS: &[&str] =
    &["h2", "hyper", "hyper_util", "reqwest", "rustls", "tokio_rustls", "hyper_rustls"];

/// `rust_log` (or `default` when it is unset or blank), then each of [`CAPPED_TARGETS`] at
/// `info`. `EnvFilter` keeps the last directive of a target, so `RUST_LOG=trace` or
/// `RUST_LOG=h2=trace` still ends with `h2=info`. When `EnvFilter` refuses the result (an
/// invalid `RUST_LOG`), use `filter_directives(None, default)`, which it accepts.
pub fn filter_directives(rust_log: Option<&str>, default: &str) -> String {
    let base = rust_log.map(str::trim).filter(|s| !s.is_empty()).unwrap_or(default);
    let mut out = base.trim_end_matches(',').to_owned();
    for target in CAPPED_TARGETS {
        out.push(',');
        out.push_str(target);
        out.push_str("=info");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capped_target_comes_last() {
        assert_eq!(
            filter_directives(Some("trace"), "info"),
            "trace,h2=info,hyper=info,hyper_util=info,reqwest=info,rustls=info,\
             tokio_rustls=info,hyper_rustls=info"
        );
        assert!(filter_directives(Some("  "), "warn").starts_with("warn,h2=info,"));
        assert!(filter_directives(None, "info").starts_with("info,h2=info,"));
        assert!(filter_directives(Some("h2=trace,"), "info").starts_with("h2=trace,h2=info,"));
    }
}
