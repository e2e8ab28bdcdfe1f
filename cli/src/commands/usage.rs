//! `maestro secrets usage NAME`: a secret's usage summary from `GET /v1/secrets/{name}/usage`:
//! totals, first and last use, then uses per session (with its label), per command and per
//! UTC day. Uses count a coalesced record's count; `records` says how many rows they are in.

use maestro_wire::api::SecretUsage;

use super::{Output, output};
use crate::args::NameArgs;
use crate::client::Client;
use crate::input;
use crate::table::{Table, key_values, opt, opt_time, time};

pub async fn run(client: &Client, args: NameArgs) -> anyhow::Result<Output> {
    input::secret_name(&args.name)?;
    let answer = client.get(&["v1", "secrets", &args.name, "usage"]).await?;
    if args.json {
        return Ok(answer.pretty::<SecretUsage>()?);
    }
    Ok(output(render(&answer.parse::<SecretUsage>()?)))
}

/// The summary as a `key: value` block and three tables.
pub fn render(u: &SecretUsage) -> String {
    let mut text = key_values(&[
        ("secret", u.secret.clone()),
        ("uses", u.uses.to_string()),
        ("records", u.records.to_string()),
        ("first use", opt_time(u.first_used_at.as_deref())),
        ("last use", opt_time(u.last_used_at.as_deref())),
        ("sessions", u.sessions.len().to_string()),
    ]);
    if u.uses == 0 {
        text.push_str("\nno uses recorded\n");
        return text;
    }
    let mut sessions = Table::new(&["SESSION", "LABEL", "USES", "FIRST USE", "LAST USE"]);
    for s in &u.sessions {
        sessions.row(vec![
            opt(s.session.as_deref()),
            opt(s.label.as_deref()),
            s.uses.to_string(),
            time(&s.first_used_at),
            time(&s.last_used_at),
        ]);
    }
    let mut commands = Table::new(&["COMMAND", "USES", "LAST USE"]);
    for c in &u.commands {
        commands.row(vec![opt(c.command.as_deref()), c.uses.to_string(), time(&c.last_used_at)]);
    }
    let mut days = Table::new(&["DAY", "USES"]);
    for d in &u.days {
        days.row(vec![d.day.clone(), d.uses.to_string()]);
    }
    for table in [sessions, commands, days] {
        text.push('\n');
        text.push_str(&table.render());
    }
    text
}

#[cfg(test)]
mod tests {
    use maestro_wire::api::{CommandUsage, DayUsage, SessionUsage};

    use super::*;

    #[test]
    fn renders_totals_and_the_three_tables() {
        let u = SecretUsage {
            secret: "GH".into(),
            uses: 5,
            records: 3,
            first_used_at: Some("2026-12-01T10:00:00Z".into()),
            last_used_at: Some("2026-12-02T11:00:00Z".into()),
            sessions: vec![SessionUsage {
                session: Some("abc".into()),
                label: Some("ci".into()),
                uses: 5,
                first_used_at: "2026-12-01T10:00:00Z".into(),
                last_used_at: "2026-12-02T11:00:00Z".into(),
            }],
            commands: vec![CommandUsage {
                command: Some("git".into()),
                uses: 5,
                last_used_at: "2026-12-02T11:00:00Z".into(),
            }],
            days: vec![
                DayUsage { day: "2026-12-01".into(), uses: 2 },
                DayUsage { day: "2026-12-02".into(), uses: 3 },
            ],
        };
        let text = render(&u);
        for want in ["uses: ", "records: ", "SESSION", "ci", "COMMAND", "git", "2026-12-02"] {
            assert!(text.contains(want), "{want}: {text}");
        }
        let empty = render(&SecretUsage { secret: "GH".into(), ..SecretUsage::default() });
        assert!(empty.ends_with("no uses recorded\n"), "{empty}");
    }
}
