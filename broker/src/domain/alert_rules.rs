//! The unusual-usage rules of issue 12 part 2, as pure functions: each looks at one usage report
//! and the secret's own history (gathered by the caller from indexed queries) and returns a
//! one-line reason when the use is unusual. No storage and no I/O here, so every rule is unit
//! tested on its own and a rule can never break ingestion: the caller records the use first.
//!
//! Wired into the usage route by [`super::alerts`]; the numbers are stated in docs/alerts.md:
//! `burst` flags more than `max(BURST_FLOOR, BURST_FACTOR x usual)` uses in the last minute.

use maestro_wire::agent_api::UsageAction;

/// Uses in the last minute never flagged as a burst below this many, whatever the usual rate.
pub const BURST_FLOOR: u64 = 30;
/// How many times the usual per-minute rate a minute must exceed to be a burst.
pub const BURST_FACTOR: u64 = 10;

/// What the broker knows of a secret's past uses (before this one).
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Commands or executables seen with this secret before, oldest first.
    pub commands: Vec<String>,
    /// Labels of the earlier sessions that used this secret.
    pub labels: Vec<String>,
    /// Uses of this secret in the last minute (this one excluded).
    pub last_minute: u64,
    /// The secret's usual uses per minute (over its history), rounded up.
    pub usual_per_minute: u64,
    /// Whether every earlier file read went through maestro-exec.
    pub only_through_exec: bool,
    /// Whether the secret has a baseline of earlier uses to judge by (the broker asks for
    /// `crate::domain::alerts::BASELINE_USES` of them).
    pub used_before: bool,
}

/// One use as reported by an agent, with what the rules need of it.
#[derive(Debug, Clone)]
pub struct Use<'a> {
    pub secret: &'a str,
    pub action: UsageAction,
    pub command: Option<&'a str>,
    pub uid: Option<u32>,
    pub sandbox_uid: Option<u32>,
    pub session_label: &'a str,
    /// The agent found the reader outside any process tree started by maestro-exec.
    pub outside_exec: Option<bool>,
}

/// A rule that flagged a use, with its one-line reason for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub rule: &'static str,
    pub reason: String,
}

/// Every rule's flag for `u` against `h`, skipping the rules named in `off`.
pub fn evaluate(u: &Use<'_>, h: &History, off: &[&str]) -> Vec<Flag> {
    let mut out = Vec::new();
    let mut flag = |rule: &'static str, reason: String| {
        if !off.contains(&rule) {
            out.push(Flag { rule, reason });
        }
    };
    match u.action {
        UsageAction::LeakAttempt => flag(
            "leak_attempt",
            format!("{} was sent toward a host it does not belong to", u.secret),
        ),
        UsageAction::ScanFinding => {
            flag("scan_finding", format!("{} was found in a file or commit by a scan", u.secret))
        }
        UsageAction::DecoyRead => flag("decoy", format!("decoy credential {} was read", u.secret)),
        _ => {}
    }
    if let Some(cmd) = u.command
        && h.used_before
        && !h.commands.iter().any(|c| c == cmd)
    {
        flag(
            "new_command",
            format!(
                "`{cmd}` used {} for the first time (seen before: {})",
                u.secret,
                h.commands.join(", ")
            ),
        );
    }
    if let (Some(uid), Some(sandbox)) = (u.uid, u.sandbox_uid)
        && uid != sandbox
    {
        flag("foreign_uid", format!("uid {uid} used {} (the sandbox user is {sandbox})", u.secret));
    }
    let limit = BURST_FLOOR.max(BURST_FACTOR.saturating_mul(h.usual_per_minute));
    if h.last_minute + 1 > limit {
        flag(
            "burst",
            format!(
                "{} used {} times in the last minute (usual: {}/min)",
                u.secret,
                h.last_minute + 1,
                h.usual_per_minute
            ),
        );
    }
    if !h.labels.is_empty() && !h.labels.iter().any(|l| l == u.session_label) {
        flag(
            "new_label",
            format!(
                "{} used in session \"{}\" (earlier sessions: {})",
                u.secret,
                u.session_label,
                h.labels.join(", ")
            ),
        );
    }
    if u.outside_exec == Some(true) && h.used_before && h.only_through_exec {
        flag(
            "outside_exec",
            format!("{} read by a process not started through maestro-exec", u.secret),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordinary<'a>() -> Use<'a> {
        Use {
            secret: "API_KEY",
            action: UsageAction::Injected,
            command: Some("curl"),
            uid: Some(1000),
            sandbox_uid: Some(1000),
            session_label: "dev",
            outside_exec: Some(false),
        }
    }

    fn seen() -> History {
        History {
            commands: vec!["python3".into(), "curl".into()],
            labels: vec!["dev".into()],
            last_minute: 2,
            usual_per_minute: 1,
            only_through_exec: true,
            used_before: true,
        }
    }

    fn rules(f: &[Flag]) -> Vec<&'static str> {
        f.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn ordinary_repeated_use_stays_quiet() {
        assert!(evaluate(&ordinary(), &seen(), &[]).is_empty());
    }

    #[test]
    fn first_use_ever_stays_quiet() {
        assert!(evaluate(&ordinary(), &History::default(), &[]).is_empty());
    }

    #[test]
    fn new_command_flags_with_reason() {
        let u = Use { command: Some("nc"), ..ordinary() };
        let f = evaluate(&u, &seen(), &[]);
        assert_eq!(rules(&f), ["new_command"]);
        assert_eq!(
            f[0].reason,
            "`nc` used API_KEY for the first time (seen before: python3, curl)"
        );
    }

    #[test]
    fn foreign_uid_flags() {
        let u = Use { uid: Some(0), ..ordinary() };
        assert_eq!(rules(&evaluate(&u, &seen(), &[])), ["foreign_uid"]);
    }

    #[test]
    fn burst_flags_above_floor_and_factor() {
        let mut h = seen();
        h.last_minute = BURST_FLOOR - 1;
        assert!(evaluate(&ordinary(), &h, &[]).is_empty());
        h.last_minute = BURST_FLOOR;
        assert_eq!(rules(&evaluate(&ordinary(), &h, &[])), ["burst"]);
        h.usual_per_minute = 5;
        h.last_minute = 49;
        assert!(evaluate(&ordinary(), &h, &[]).is_empty());
    }

    #[test]
    fn new_label_flags_only_with_earlier_sessions() {
        let u = Use { session_label: "ci", ..ordinary() };
        assert_eq!(rules(&evaluate(&u, &seen(), &[])), ["new_label"]);
        let h = History { labels: vec![], ..seen() };
        assert!(evaluate(&u, &h, &[]).is_empty());
    }

    #[test]
    fn outside_exec_flags_only_when_always_through_exec() {
        let u = Use { outside_exec: Some(true), ..ordinary() };
        assert_eq!(rules(&evaluate(&u, &seen(), &[])), ["outside_exec"]);
        let h = History { only_through_exec: false, ..seen() };
        assert!(evaluate(&u, &h, &[]).is_empty());
    }

    #[test]
    fn action_rules_flag_and_can_be_turned_off() {
        for (action, rule) in [
            (UsageAction::LeakAttempt, "leak_attempt"),
            (UsageAction::ScanFinding, "scan_finding"),
            (UsageAction::DecoyRead, "decoy"),
        ] {
            let u = Use { action, ..ordinary() };
            assert_eq!(rules(&evaluate(&u, &seen(), &[])), [rule]);
            assert!(evaluate(&u, &seen(), &[rule]).is_empty());
        }
    }
}
