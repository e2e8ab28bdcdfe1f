//! `maestro sessions ...`: create (optionally writing the sandbox's bundle), ls, show, end.

use std::io::IsTerminal;
use std::io::Write;

use maestro_wire::api::{CreateSession, SessionCreated, SessionInfo, SessionState};
use reqwest::Method;
use zeroize::Zeroizing;

use super::{Output, json_output, output};
use crate::args::{CreateSessionArgs, JsonArgs, SessionArgs, SessionsCommand};
use crate::client::Client;
use crate::config::Config;
use crate::table::{Table, key_values, list, opt, opt_time, time};
use crate::{bundle, input, ttl};

pub async fn run(
    client: &Client,
    config: &Config,
    command: SessionsCommand,
) -> anyhow::Result<Output> {
    match command {
        SessionsCommand::Create(args) => create(client, config, args).await,
        SessionsCommand::Ls(args) => ls(client, args).await,
        SessionsCommand::Show(args) => show(client, args).await,
        SessionsCommand::End(args) => end(client, args).await,
    }
}

/// Prints the session id on the first line and, without `--bundle-out`, the enrollment token on
/// the second: scripts take `| head -1` or use `--json`.
async fn create(
    client: &Client,
    config: &Config,
    args: CreateSessionArgs,
) -> anyhow::Result<Output> {
    let ttl_seconds = args.ttl.as_deref().map(ttl::parse_ttl).transpose()?;
    if let Some(label) = &args.label {
        input::text("label", label)?;
    }
    // The bundle's temporary file is made first: an unwritable path must fail before the
    // session exists.
    let pending = args.bundle_out.as_deref().map(bundle::prepare).transpose()?;
    let mut urls = bundle::broker_urls(&args.broker_url, &config.url_text)?;

    let body = CreateSession { ttl_seconds, label: args.label, decoys: args.decoys };
    let answer = client.send(Method::POST, &["v1", "sessions"], &body).await?;
    let created: SessionCreated = answer.parse()?;
    let id = created.session.id.clone();

    if let (Some(pending), Some(path)) = (pending, &args.bundle_out) {
        // No --broker-url: the broker's --public-url, when it has one, is what sandboxes reach.
        if let (true, Some(public)) = (args.broker_url.is_empty(), &created.broker_url) {
            urls = vec![public.clone()];
        }
        if let Some(url) = urls.iter().find(|u| bundle::is_loopback(u)) {
            // Always said (not only at a terminal): the agent would otherwise retry for minutes.
            eprintln!(
                "maestro: warning: the bundle's broker URL {url} is a loopback address: a sandbox \
                 with its own network (a container) cannot reach it; start the broker with \
                 --public-url, or pass --broker-url"
            );
        }
        let bundle = bundle::bundle_for(urls, &created);
        if let Err(e) = pending.finish(&bundle) {
            // Without its bundle the session is of no use: end it rather than leave it live.
            let undo = match client.post_empty(&["v1", "sessions", &id, "end"]).await {
                Ok(_) => format!("session {id} was ended"),
                Err(end) => format!(
                    "session {id} is still live ({end}); end it with `maestro sessions end {id}`"
                ),
            };
            anyhow::bail!("{e}; {undo}");
        }
        note(&format!(
            "bundle for session {id} written to {} (mode 0600); its enrollment token is valid \
             until {}",
            path.display(),
            time(&created.enrollment_expires_at)
        ));
        if args.json {
            // The broker's answer without the token, which is in the bundle, plus its path.
            let value = serde_json::json!({
                "session": created.session,
                "enrollment_expires_at": created.enrollment_expires_at,
                "ca_pem": created.ca_pem,
                "bundle": path.display().to_string(),
            });
            return json_output(&value);
        }
        return Ok(output(format!("{id}\n")));
    }

    if args.json {
        return Ok(answer.pretty::<SessionCreated>()?);
    }
    note(&format!(
        "session {id}: the enrollment token (line 2) works once, until {}",
        time(&created.enrollment_expires_at)
    ));
    let mut text =
        Zeroizing::new(String::with_capacity(id.len() + created.enrollment_token.len() + 2));
    text.push_str(&id);
    text.push('\n');
    text.push_str(created.enrollment_token.expose());
    text.push('\n');
    Ok(text)
}

/// A hint for a person at a terminal; scripts capturing stdout or stderr do not get it.
fn note(text: &str) {
    let mut stderr = std::io::stderr();
    if stderr.is_terminal() {
        // Losing a hint is harmless; the command's result is on stdout.
        let _ = writeln!(stderr, "{text}");
    }
}

async fn ls(client: &Client, args: JsonArgs) -> anyhow::Result<Output> {
    let answer = client.get(&["v1", "sessions"]).await?;
    if args.json {
        return Ok(answer.pretty::<Vec<SessionInfo>>()?);
    }
    let sessions: Vec<SessionInfo> = answer.parse()?;
    if sessions.is_empty() {
        return Ok(output("no sessions; create one with `maestro sessions create`\n".to_owned()));
    }
    let mut table = Table::new(&["ID", "STATE", "LABEL", "CREATED", "EXPIRES", "AGENT", "ACTIVE"]);
    for s in &sessions {
        table.row(vec![
            s.id.clone(),
            state(s),
            opt(s.label.as_deref()),
            time(&s.created_at),
            time(&s.expires_at),
            agent(s).to_owned(),
            active_line(s),
        ]);
    }
    Ok(output(table.render()))
}

async fn show(client: &Client, args: SessionArgs) -> anyhow::Result<Output> {
    input::session_id(&args.id)?;
    let answer = client.get(&["v1", "sessions", &args.id]).await?;
    if args.json {
        return Ok(answer.pretty::<SessionInfo>()?);
    }
    let s: SessionInfo = answer.parse()?;
    Ok(output(render_session(&s)))
}

/// The active secrets, each with the time it has left when its activation ends before the
/// session does (`A (1h59m left), B`).
pub(crate) fn active_line(s: &SessionInfo) -> String {
    let names: Vec<String> = s
        .active
        .iter()
        .map(|name| {
            let until = s.activations.iter().find(|a| &a.secret == name);
            match until.and_then(|a| a.expires_at.as_deref()).and_then(crate::table::secs_until) {
                Some(left) => {
                    format!("{name} ({} left)", maestro_wire::duration::format_secs(left))
                }
                None => name.clone(),
            }
        })
        .collect();
    list(&names)
}

fn render_session(s: &SessionInfo) -> String {
    let mut pairs = vec![
        ("id", s.id.clone()),
        ("label", opt(s.label.as_deref())),
        ("state", if s.state == SessionState::Live { "live" } else { "ended" }.to_owned()),
        ("created", time(&s.created_at)),
        ("expires", time(&s.expires_at)),
    ];
    if s.state == SessionState::Ended {
        pairs.push(("ended", opt_time(s.ended_at.as_deref())));
        pairs.push(("ended because", opt(s.ended_reason.as_deref())));
    }
    pairs.push(("agent", agent(s).to_owned()));
    pairs.push(("active secrets", active_line(s)));
    if s.decoys {
        pairs.push(("decoys", "yes (any read is flagged: maestro alerts ls)".to_owned()));
    }
    key_values(&pairs)
}

async fn end(client: &Client, args: SessionArgs) -> anyhow::Result<Output> {
    input::session_id(&args.id)?;
    let answer = client.post_empty(&["v1", "sessions", &args.id, "end"]).await?;
    if args.json {
        return Ok(answer.pretty::<SessionInfo>()?);
    }
    let s: SessionInfo = answer.parse()?;
    Ok(output(format!("ended session {}\n", s.id)))
}

fn state(s: &SessionInfo) -> String {
    match s.state {
        SessionState::Live => "live".to_owned(),
        SessionState::Ended => match &s.ended_reason {
            Some(reason) => format!("ended ({reason})"),
            None => "ended".to_owned(),
        },
    }
}

fn agent(s: &SessionInfo) -> &'static str {
    match (s.agent_connected, s.enrolled) {
        (true, _) => "connected",
        (false, true) => "enrolled",
        (false, false) => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: SessionState) -> SessionInfo {
        SessionInfo {
            id: "s1".into(),
            label: Some("ci".into()),
            state,
            created_at: "2026-11-29T10:00:00Z".into(),
            expires_at: "2026-11-29T22:00:00Z".into(),
            ended_at: Some("2026-11-29T11:00:00Z".into()),
            ended_reason: Some("user".into()),
            active: vec!["A".into(), "B".into()],
            agent_connected: false,
            enrolled: true,
            decoys: false,
            activations: vec![],
        }
    }

    #[test]
    fn show_has_state_and_active_secrets() {
        let live = render_session(&info(SessionState::Live));
        assert!(live.contains("live") && live.contains("A, B") && live.contains("enrolled"));
        assert!(!live.contains("ended"));
        let timed = SessionInfo {
            activations: vec![maestro_wire::api::ActivationInfo {
                secret: "A".into(),
                session: "s1".into(),
                session_label: None,
                activated_at: "2026-11-29T10:00:00Z".into(),
                // Far ahead: a day and more is shown in days and hours.
                expires_at: Some("2999-01-01T00:00:00Z".into()),
            }],
            ..info(SessionState::Live)
        };
        let text = render_session(&timed);
        assert!(text.contains("A (") && text.contains("left), B"), "{text}");
        let ended = render_session(&info(SessionState::Ended));
        assert!(ended.lines().any(|l| l.starts_with("ended because:") && l.ends_with(" user")));
        assert!(ended.contains("2026-11-29 11:00:00Z"));
    }
}
