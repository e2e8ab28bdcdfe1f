//! `maestro audit`: the caller's whole audit trail, and the audit table that `secrets history`
//! shares.

use maestro_wire::api::AuditEvent;

use super::{Output, json_output, output};
use crate::args::{AuditArgs, AuditCommand, PageArgs};
use crate::client::Client;
use crate::input;
use crate::table::{Table, opt, time};

pub async fn run(client: &Client, args: AuditArgs) -> anyhow::Result<Output> {
    if let Some(AuditCommand::Export(export)) = args.export {
        return super::export::run(client, export).await;
    }
    if let Some(name) = &args.secret {
        input::secret_name(name)?;
    }
    // The broker filters (docs/broker.md, "History and export") and checks every value.
    let mut filters: Vec<(&str, String)> = Vec::new();
    let optional = [
        ("secret", args.secret.clone()),
        ("session", args.session.clone()),
        ("command", args.command.clone()),
        ("uid", args.uid.map(|u| u.to_string())),
        ("since", args.since.clone()),
        ("until", args.until.clone()),
    ];
    filters.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
    filters.extend(args.action.iter().map(|a| ("action", a.clone())));
    let events = if args.page.is_default() && filters.is_empty() {
        let answer = client.get(&["v1", "audit"]).await?;
        if args.json {
            return Ok(answer.pretty::<Vec<AuditEvent>>()?);
        }
        answer.parse::<Vec<AuditEvent>>()?
    } else {
        fetch_filtered(client, &["v1", "audit"], &args.page, &filters).await?
    };
    if args.json {
        return json_output(&events);
    }
    if events.is_empty() {
        return Ok(output("no audit records\n".to_owned()));
    }
    Ok(output(render(&events, true)))
}

/// Records of the broker's largest page.
const PAGE: i64 = 10_000;

impl PageArgs {
    /// Whether no paging option was given (then one request, the newest page, as before).
    pub fn is_default(&self) -> bool {
        self.limit.is_none() && self.before.is_none() && !self.all
    }
}

/// The records `page` asks for at `path` (`/v1/audit` or a secret's history), oldest first:
/// one page (`--limit`, `--before`), or every page (`--all`), each asked for with the `seq` of
/// the oldest record of the one before as its `before`.
pub async fn fetch_pages(
    client: &Client,
    path: &[&str],
    page: &PageArgs,
) -> anyhow::Result<Vec<AuditEvent>> {
    fetch_filtered(client, path, page, &[]).await
}

/// [`fetch_pages`] with the broker's filters added to every request.
pub async fn fetch_filtered(
    client: &Client,
    path: &[&str],
    page: &PageArgs,
    filters: &[(&str, String)],
) -> anyhow::Result<Vec<AuditEvent>> {
    let get = |limit: i64, before: Option<i64>| async move {
        let mut query = filters.to_vec();
        query.push(("limit", limit.to_string()));
        if let Some(before) = before {
            query.push(("before", before.to_string()));
        }
        client.get_query(path, &query).await?.parse::<Vec<AuditEvent>>()
    };
    if !page.all {
        return Ok(get(page.limit.unwrap_or(PAGE), page.before).await?);
    }
    let mut pages: Vec<Vec<AuditEvent>> = Vec::new();
    let mut before = None;
    loop {
        let events = get(PAGE, before).await?;
        let full = events.len() as i64 >= PAGE;
        before = events.first().map(|e| e.seq);
        pages.push(events);
        if !full || before.is_none() {
            break;
        }
    }
    Ok(pages.into_iter().rev().flatten().collect())
}

/// The audit table; `with_secret` adds the SECRET column (a secret's history leaves it out).
pub fn render(events: &[AuditEvent], with_secret: bool) -> String {
    let mut header = vec!["SEQ", "TIME", "ACTION"];
    if with_secret {
        header.push("SECRET");
    }
    header.extend(["SESSION", "PID", "UID", "COMMAND", "DETAIL"]);
    let mut table = Table::new(&header);
    for e in events {
        let mut row = vec![e.seq.to_string(), time(&e.at), action(e)];
        // A coalesced record: how many uses, and until when.
        if let Some(count) = e.count.filter(|c| *c > 1) {
            let until = e.last_at.as_deref().map(|l| format!(" until {}", time(l)));
            row[2] = format!("{} ({count}x{})", row[2], until.unwrap_or_default());
        }
        if with_secret {
            row.push(opt(e.secret.as_deref()));
        }
        // A team secret's history names the member whose session it was.
        let session = opt(e.session_label.as_deref().or(e.session.as_deref()));
        let session = match &e.by {
            Some(by) => format!("{by}: {session}"),
            None => session,
        };
        row.extend([
            session,
            e.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            e.uid.map_or_else(|| "-".to_owned(), |u| u.to_string()),
            opt(e.command.as_deref()),
            detail(e),
        ]);
        table.row(row);
    }
    table.render()
}

/// The detail, with the executable the kernel reported and the name the process claimed.
fn detail(e: &AuditEvent) -> String {
    let mut parts: Vec<String> = e.detail.iter().cloned().collect();
    if let Some(exe) = &e.exe {
        parts.push(format!("exe {exe}"));
    }
    if let Some(claimed) = &e.claimed_command {
        parts.push(format!("claimed {claimed}"));
    }
    if parts.is_empty() { "-".to_owned() } else { parts.join("; ") }
}

/// The action as its snake_case wire name (`file_read`), the name `--json` shows too.
fn action(event: &AuditEvent) -> String {
    serde_json::to_value(event.action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", event.action))
}

#[cfg(test)]
mod tests {
    use maestro_wire::api::AuditAction;

    use super::*;

    #[test]
    fn renders_actions_by_wire_name() {
        let e = AuditEvent {
            seq: 7,
            at: "2026-11-29T10:00:00.25Z".into(),
            action: AuditAction::FileRead,
            secret: Some("AWS_PROD".into()),
            session: Some("s1".into()),
            pid: Some(42),
            uid: Some(1000),
            command: Some("cat".into()),
            detail: Some("aws/credentials".into()),
            count: None,
            last_at: None,
            exe: None,
            claimed_command: None,
            session_label: None,
            by: None,
        };
        let out = render(&[e], true);
        let line = out.lines().nth(1).unwrap();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            [
                "7",
                "2026-11-29",
                "10:00:00Z",
                "file_read",
                "AWS_PROD",
                "s1",
                "42",
                "1000",
                "cat",
                "aws/credentials"
            ]
        );
    }
}
