//! History that scales: filtered, paged listings of a user's audit trail
//! (`GET /v1/audit?secret=&session=&action=&command=&uid=&since=&until=&limit=&cursor=`) and a
//! secret's usage summary (`GET /v1/secrets/{name}/usage`).
//!
//! Parsing is strict: an unknown parameter, a repeated one, or a value out of range is a
//! one-line 400 and nothing is read. A cursor is opaque to clients; it is the position in the
//! trail (`seq`) and the direction, nothing else, so a client may change the filters and keep
//! its place. Session labels come from the owner's sessions, read once per answer.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maestro_wire::api::{
    AuditAction, AuditEvent, CommandUsage, DayUsage, SecretUsage, SessionUsage,
};

use super::audit::AUDIT_PAGE;
use super::error::{DomainError, DomainResult};
use super::teams::{self, Action};
use super::{secrets, validate};
use crate::app::App;
use crate::clock;
use crate::store::{AuditPosition, AuditQuery, AuditRow, UserRecord};

/// Longest command or session filter accepted (longer matches nothing that was recorded).
const MAX_FILTER_BYTES: usize = 4096;

/// The furthest back a relative time may reach (`since=100y` is a mistake, not a query).
const MAX_RELATIVE: Duration = Duration::from_secs(100 * 366 * 86_400);

/// A parsed `GET /v1/audit` query. `session` is still what the caller wrote: an id, a unique
/// id prefix or a label, resolved against the owner's sessions by [`list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub secret: Option<String>,
    pub session: Option<String>,
    pub actions: Vec<AuditAction>,
    pub command: Option<String>,
    pub uid: Option<u32>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub position: AuditPosition,
    pub limit: i64,
}

/// The cursor of `position`: `b<seq>` (older than) or `a<seq>` (newer than), base64url.
pub fn cursor_of(position: AuditPosition) -> Option<String> {
    let text = match position {
        AuditPosition::Newest => return None,
        AuditPosition::Before(seq) => format!("b{seq}"),
        AuditPosition::After(seq) => format!("a{seq}"),
    };
    Some(URL_SAFE_NO_PAD.encode(text))
}

/// The position a cursor stands for.
pub fn parse_cursor(cursor: &str) -> DomainResult<AuditPosition> {
    let bad = || {
        DomainError::bad_request(
            "cursor is not one this broker gave out (Maestro-Next-Cursor); start again without it",
        )
    };
    if cursor.len() > 64 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
    let (dir, seq) = text.split_at_checked(1).ok_or_else(bad)?;
    let seq: i64 = seq.parse().ok().filter(|s| *s >= 0).ok_or_else(bad)?;
    match dir {
        "b" if seq > 0 => Ok(AuditPosition::Before(seq)),
        "a" => Ok(AuditPosition::After(seq)),
        _ => Err(bad()),
    }
}

/// A point in time: RFC 3339 (`2026-12-01T00:00:00Z`) or a duration before `now` (`90s`,
/// `30m`, `1h`, `7d`, `2w`, `1h30m`).
pub fn parse_time(what: &str, text: &str, now: i64) -> DomainResult<i64> {
    if let Some(at) = clock::parse_rfc3339(text) {
        return Ok(at);
    }
    let ago = humantime::parse_duration(text).ok().filter(|d| *d <= MAX_RELATIVE).ok_or_else(
        || {
            DomainError::bad_request(format!(
                "{what} must be an RFC 3339 time (2026-12-01T00:00:00Z) or a duration before now (30m, 1h, 7d)"
            ))
        },
    )?;
    Ok(now.saturating_sub(i64::try_from(ago.as_secs()).unwrap_or(i64::MAX)))
}

/// Parses the query of `GET /v1/audit` at `now` (for relative times).
pub fn parse_filters(query: Option<&str>, now: i64) -> DomainResult<Filters> {
    let mut f = Filters { limit: AUDIT_PAGE, ..Filters::default() };
    let mut seen: Vec<String> = Vec::new();
    let mut position_from: Option<&'static str> = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        // `action` may repeat; every other parameter is given at most once.
        if key != "action" {
            if seen.iter().any(|k| *k == key) {
                return Err(DomainError::bad_request(format!(
                    "{key} is given twice; give it once"
                )));
            }
            seen.push(key.to_string());
        }
        let mut set_position = |name: &'static str, p: AuditPosition| {
            if let Some(other) = position_from {
                return Err(DomainError::bad_request(format!(
                    "{name} and {other} both say where the page starts; give one of them"
                )));
            }
            position_from = Some(name);
            f.position = p;
            Ok(())
        };
        match key.as_ref() {
            "limit" => {
                f.limit =
                    value.parse::<i64>().ok().filter(|n| (1..=AUDIT_PAGE).contains(n)).ok_or_else(
                        || {
                            DomainError::bad_request(format!(
                                "limit must be a number from 1 to {AUDIT_PAGE}"
                            ))
                        },
                    )?;
            }
            "before" => {
                let seq = value.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    DomainError::bad_request(
                        "before must be the seq of an audit record (a positive number)",
                    )
                })?;
                set_position("before", AuditPosition::Before(seq))?;
            }
            "after" => {
                let seq = value.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    DomainError::bad_request(
                        "after must be the seq of an audit record (0 for the oldest)",
                    )
                })?;
                set_position("after", AuditPosition::After(seq))?;
            }
            "cursor" => set_position("cursor", parse_cursor(&value)?)?,
            "secret" => {
                validate::check_name(&value)?;
                f.secret = Some(value.into_owned());
            }
            "session" => {
                if value.is_empty() || value.len() > MAX_FILTER_BYTES {
                    return Err(DomainError::bad_request(format!(
                        "session must be a session id, a unique id prefix or a label (1 to {MAX_FILTER_BYTES} bytes)"
                    )));
                }
                f.session = Some(value.into_owned());
            }
            "action" => {
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let action = AuditAction::from_stored_name(name).ok_or_else(|| {
                        let known: Vec<&str> =
                            AuditAction::ALL.iter().map(|a| a.stored_name()).collect();
                        DomainError::bad_request(format!(
                            "unknown action '{}'; actions are {}",
                            name.chars().take(40).collect::<String>().escape_default(),
                            known.join(", ")
                        ))
                    })?;
                    if !f.actions.contains(&action) {
                        f.actions.push(action);
                    }
                }
                if f.actions.is_empty() {
                    return Err(DomainError::bad_request(
                        "action is empty; name one or more actions (file_read,injected)",
                    ));
                }
            }
            "command" => {
                if value.is_empty() || value.len() > MAX_FILTER_BYTES {
                    return Err(DomainError::bad_request(format!(
                        "command must be 1 to {MAX_FILTER_BYTES} bytes (a command name as recorded)"
                    )));
                }
                f.command = Some(value.into_owned());
            }
            "uid" => {
                f.uid = Some(value.parse::<u32>().map_err(|_| {
                    DomainError::bad_request("uid must be a number from 0 to 4294967295")
                })?);
            }
            "since" => f.since = Some(parse_time("since", &value, now)?),
            "until" => f.until = Some(parse_time("until", &value, now)?),
            _ => {
                return Err(DomainError::bad_request(format!(
                    "unknown query parameter '{}'; this route takes secret, session, action, command, uid, since, until, limit, before, after and cursor",
                    key.chars().take(40).collect::<String>().escape_default()
                )));
            }
        }
    }
    if let (Some(since), Some(until)) = (f.since, f.until)
        && until < since
    {
        return Err(DomainError::bad_request("until is before since; swap them"));
    }
    Ok(f)
}

/// A filtered page and the cursor of the next one.
pub struct Listing {
    pub events: Vec<AuditEvent>,
    /// Older records (listing from the newest or `before`) when this page is full; newer ones
    /// (`after`) always, so that a follower polls with it.
    pub next: Option<String>,
}

/// The ids of the owner's sessions that `wanted` names: the session with that id, else the
/// one whose id starts with it, else every session with that label.
pub(super) fn resolve_session(
    sessions: &[crate::store::SessionRecord],
    wanted: &str,
) -> DomainResult<Vec<String>> {
    if sessions.iter().any(|s| s.id == wanted) {
        return Ok(vec![wanted.to_owned()]);
    }
    let prefixed: Vec<&str> =
        sessions.iter().filter(|s| s.id.starts_with(wanted)).map(|s| s.id.as_str()).collect();
    let labelled: Vec<String> = sessions
        .iter()
        .filter(|s| s.label.as_deref() == Some(wanted))
        .map(|s| s.id.clone())
        .collect();
    match (prefixed.as_slice(), labelled.is_empty()) {
        ([one], _) => Ok(vec![(*one).to_owned()]),
        ([], false) => Ok(labelled),
        ([], true) => Err(DomainError::bad_request(format!(
            "no session of yours has the id, id prefix or label '{}'; see maestro sessions ls",
            wanted.chars().take(80).collect::<String>().escape_default()
        ))),
        (many, _) => Err(DomainError::bad_request(format!(
            "'{}' is the start of {} session ids: {}; give more of the id",
            wanted.escape_default(),
            many.len(),
            many.join(", ")
        ))),
    }
}

/// The labels of the owner's sessions, by id.
async fn labels(app: &App, user: &UserRecord) -> DomainResult<HashMap<String, String>> {
    Ok(app
        .store
        .list_sessions(user.id)
        .await?
        .into_iter()
        .filter_map(|s| Some((s.id, s.label?)))
        .collect())
}

/// Records as users see them, with their sessions' labels.
pub fn events_with_labels(rows: &[AuditRow], labels: &HashMap<String, String>) -> Vec<AuditEvent> {
    rows.iter()
        .map(|row| {
            let mut event = crate::audit::to_event(row);
            event.session_label = event.session.as_ref().and_then(|s| labels.get(s)).cloned();
            event
        })
        .collect()
}

/// A filtered page of `user`'s trail.
pub async fn list(app: &App, user: &UserRecord, f: Filters) -> DomainResult<Listing> {
    let sessions = app.store.list_sessions(user.id).await?;
    let resolved = f.session.as_deref().map(|s| resolve_session(&sessions, s)).transpose()?;
    let labels: HashMap<String, String> =
        sessions.into_iter().filter_map(|s| Some((s.id, s.label?))).collect();
    let query = AuditQuery {
        owner_id: user.id,
        secret_name: f.secret,
        sessions: resolved,
        actions: f.actions,
        command: f.command,
        uid: f.uid,
        since: f.since,
        until: f.until,
        position: f.position,
        limit: f.limit,
    };
    let rows = app.store.audit_query(&query).await?;
    let full = rows.len() as i64 >= f.limit;
    let next = match f.position {
        AuditPosition::After(seq) => {
            cursor_of(AuditPosition::After(rows.last().map_or(seq, |r| r.seq)))
        }
        _ if full => rows.first().and_then(|r| cursor_of(AuditPosition::Before(r.seq))),
        _ => None,
    };
    Ok(Listing { events: events_with_labels(&rows, &labels), next })
}

/// The usage summary of `user`'s secret `name`, or of a team's (`team/NAME`: every member's
/// sessions' uses).
pub async fn usage(app: &App, user: &UserRecord, name: &str) -> DomainResult<SecretUsage> {
    let (owner, bare) = teams::resolve(app, user, name, Action::See).await?;
    let secret = secrets::owned_by(app, &owner, bare).await?;
    let groups = if owner.team.is_some() {
        app.teams.secret_usage_all(&secret.id).await?
    } else {
        app.store.secret_usage_groups(user.id, &secret.id).await?
    };
    let labels = labels(app, user).await?;
    let to_u64 = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut out = SecretUsage { secret: secret.name.clone(), ..SecretUsage::default() };
    // (uses, first, last) per session; (uses, last) per command; uses per day.
    let mut by_session: HashMap<Option<String>, (u64, i64, i64)> = HashMap::new();
    let mut by_command: HashMap<Option<String>, (u64, i64)> = HashMap::new();
    let mut by_day: BTreeMap<i64, u64> = BTreeMap::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for g in &groups {
        let uses = to_u64(g.uses);
        out.uses += uses;
        out.records += to_u64(g.records);
        first = first.min(g.first_at);
        last = last.max(g.last_at);
        let s = by_session.entry(g.session_id.clone()).or_insert((0, i64::MAX, i64::MIN));
        *s = (s.0 + uses, s.1.min(g.first_at), s.2.max(g.last_at));
        let c = by_command.entry(g.command.clone()).or_insert((0, i64::MIN));
        *c = (c.0 + uses, c.1.max(g.last_at));
        *by_day.entry(g.day).or_default() += uses;
    }
    if !groups.is_empty() {
        out.first_used_at = Some(clock::rfc3339(first));
        out.last_used_at = Some(clock::rfc3339(last));
    }
    let mut sessions: Vec<_> = by_session.into_iter().collect();
    sessions.sort_by(|a, b| b.1.2.cmp(&a.1.2).then_with(|| a.0.cmp(&b.0)));
    out.sessions = sessions
        .into_iter()
        .map(|(session, (uses, first, last))| SessionUsage {
            label: session.as_ref().and_then(|s| labels.get(s)).cloned(),
            session,
            uses,
            first_used_at: clock::rfc3339(first),
            last_used_at: clock::rfc3339(last),
        })
        .collect();
    let mut commands: Vec<_> = by_command.into_iter().collect();
    commands.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    out.commands = commands
        .into_iter()
        .map(|(command, (uses, last))| CommandUsage {
            command,
            uses,
            last_used_at: clock::rfc3339(last),
        })
        .collect();
    out.days = by_day
        .into_iter()
        .map(|(day, uses)| DayUsage {
            day: clock::rfc3339(day.saturating_mul(86_400)).chars().take(10).collect(),
            uses,
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn parse(q: &str) -> DomainResult<Filters> {
        parse_filters(Some(q), NOW)
    }

    fn message(q: &str) -> String {
        parse(q).unwrap_err().message
    }

    #[test]
    fn no_query_is_the_newest_full_page() {
        let f = parse_filters(None, NOW).unwrap();
        assert_eq!(f, Filters { limit: AUDIT_PAGE, ..Filters::default() });
    }

    #[test]
    fn reads_every_filter() {
        let f = parse(
            "secret=AWS_PROD&session=ci-run&action=file_read,injected&action=fetched&command=aws\
             &uid=1000&since=2026-12-01T00:00:00Z&until=1h&limit=50&before=99",
        )
        .unwrap();
        assert_eq!(f.secret.as_deref(), Some("AWS_PROD"));
        assert_eq!(f.session.as_deref(), Some("ci-run"));
        assert_eq!(f.actions, [AuditAction::FileRead, AuditAction::Injected, AuditAction::Fetched]);
        assert_eq!(f.command.as_deref(), Some("aws"));
        assert_eq!(f.uid, Some(1000));
        assert_eq!(f.since, clock::parse_rfc3339("2026-12-01T00:00:00Z"));
        assert_eq!(f.until, Some(NOW - 3600));
        assert_eq!(f.limit, 50);
        assert_eq!(f.position, AuditPosition::Before(99));
    }

    #[test]
    fn relative_times_count_back_from_now() {
        assert_eq!(parse_time("since", "30m", NOW).unwrap(), NOW - 1800);
        assert_eq!(parse_time("since", "7d", NOW).unwrap(), NOW - 7 * 86_400);
        assert_eq!(parse_time("since", "1h30m", NOW).unwrap(), NOW - 5400);
        assert_eq!(parse_time("since", "1970-01-01T00:01:40Z", NOW).unwrap(), 100);
        for bad in ["yesterday", "", "-1h", "1x", "1000y", "2026-13-01T00:00:00Z"] {
            let e = parse_time("since", bad, NOW).unwrap_err();
            assert!(e.message.starts_with("since must be an RFC 3339 time"), "{bad}: {e:?}");
        }
    }

    #[test]
    fn cursors_round_trip_and_forgeries_are_refused() {
        for p in
            [AuditPosition::Before(1), AuditPosition::Before(i64::MAX), AuditPosition::After(0)]
        {
            assert_eq!(parse_cursor(&cursor_of(p).unwrap()).unwrap(), p);
        }
        assert_eq!(cursor_of(AuditPosition::Newest), None);
        let forged = [
            "",
            "!!!",
            &URL_SAFE_NO_PAD.encode("b0"),
            &URL_SAFE_NO_PAD.encode("b-5"),
            &URL_SAFE_NO_PAD.encode("x5"),
            &URL_SAFE_NO_PAD.encode("b99999999999999999999"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
            &"A".repeat(100),
        ];
        for c in forged {
            let e = parse_cursor(c).unwrap_err();
            assert!(e.message.starts_with("cursor is not one this broker gave out"), "{c}");
        }
        let f = parse(&format!("cursor={}", cursor_of(AuditPosition::After(7)).unwrap())).unwrap();
        assert_eq!(f.position, AuditPosition::After(7));
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        let cases = [
            ("limit=0", "limit must be a number from 1 to 10000"),
            ("limit=10001", "limit must be"),
            ("limit=x", "limit must be"),
            ("before=0", "before must be the seq"),
            ("after=-1", "after must be the seq"),
            ("before=5&after=3", "after and before both say where the page starts"),
            ("before=5&cursor=YjU", "cursor and before both say"),
            ("uid=-1", "uid must be a number"),
            ("uid=4294967296", "uid must be a number"),
            ("action=bogus", "unknown action 'bogus'; actions are created,"),
            ("action=", "action is empty"),
            ("action=,,", "action is empty"),
            ("command=", "command must be 1 to"),
            ("session=", "session must be a session id"),
            ("secret=lower", "invalid secret name 'lower'"),
            ("secret=A&secret=B", "secret is given twice"),
            ("since=1h&until=2h", "until is before since"),
            ("offset=3", "unknown query parameter 'offset'"),
        ];
        for (q, want) in cases {
            let got = message(q);
            assert!(got.starts_with(want), "{q}: {got}");
            assert!(!got.contains('\n'), "{q}: {got}");
        }
        let long = format!("command={}", "a".repeat(MAX_FILTER_BYTES + 1));
        assert!(message(&long).starts_with("command must be"));
    }

    fn session(id: &str, label: Option<&str>) -> crate::store::SessionRecord {
        crate::store::SessionRecord {
            id: id.into(),
            owner_id: 1,
            label: label.map(str::to_owned),
            created_at: 0,
            expires_at: 1,
            ended_at: None,
            ended_reason: None,
            enrolled: false,
            decoys: false,
            serials: Default::default(),
        }
    }

    #[test]
    fn a_session_is_named_by_id_unique_prefix_or_label() {
        let all = [
            session("abc123", Some("ci")),
            session("abd456", Some("ci")),
            session("ffff00", Some("laptop")),
        ];
        assert_eq!(resolve_session(&all, "abc123").unwrap(), ["abc123"]);
        assert_eq!(resolve_session(&all, "abd").unwrap(), ["abd456"]);
        assert_eq!(resolve_session(&all, "ci").unwrap(), ["abc123", "abd456"]);
        assert_eq!(resolve_session(&all, "laptop").unwrap(), ["ffff00"]);
        assert!(
            resolve_session(&all, "ab").unwrap_err().message.contains("start of 2 session ids")
        );
        assert!(
            resolve_session(&all, "zz").unwrap_err().message.starts_with("no session of yours")
        );
    }
}
