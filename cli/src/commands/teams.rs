//! `maestro teams ...`: teams and their members. A team's secrets are the usual secret
//! commands with the name written `team/NAME` (`maestro secrets add infra/DB ...`,
//! `maestro secrets activate infra/DB`); this group creates teams and manages members, whose
//! roles say what they may do (docs/teams.md).

use clap::{Args, Subcommand};
use maestro_wire::teams::{
    CreateTeam, MemberChanged, Role, SetMember, TeamInfo, is_valid_team_name,
};
use reqwest::Method;

use super::{Output, output};
use crate::client::Client;
use crate::table::{Table, clean, time};

#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// List your teams and your role in each.
    Ls(JsonArgs),
    /// Create a team; you become its owner.
    Create(TeamArgs),
    /// Show a team and its members.
    Show(TeamArgs),
    /// Add a member, or change a member's role (owners only).
    Add(AddArgs),
    /// Remove a member (owners only; anyone may remove themselves): the team's secrets leave
    /// their sessions at once.
    Rm(RmArgs),
    /// Delete a team that owns no secrets any more (owners only).
    Delete(TeamArgs),
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TeamArgs {
    /// Team name: [a-z][a-z0-9-]{0,31}, e.g. infra
    pub team: String,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The team's name
    pub team: String,
    /// The user's name (as `maestro-broker user ls` shows it)
    pub user: String,
    /// owner (manages members), admin (adds, edits, deletes the team's secrets), member
    /// (activates them in their own sessions), viewer (sees metadata and usage)
    #[arg(long, default_value = "member")]
    pub role: String,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The team's name
    pub team: String,
    /// The member's name
    pub user: String,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

/// Why a `teams` command cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum TeamsError {
    #[error(
        "invalid team name '{0}': use 1 to 32 of a-z, 0-9 and -, starting with a letter (like infra)"
    )]
    Name(String),
    #[error("invalid --role '{0}': use owner, admin, member or viewer")]
    Role(String),
    #[error("invalid user name '{0}': give 1 to 64 characters, no control characters")]
    User(String),
}

pub async fn run(client: &Client, command: TeamsCommand) -> anyhow::Result<Output> {
    match command {
        TeamsCommand::Ls(args) => list(client, args).await,
        TeamsCommand::Create(args) => create(client, args).await,
        TeamsCommand::Show(args) => show(client, args).await,
        TeamsCommand::Add(args) => add(client, args).await,
        TeamsCommand::Rm(args) => remove(client, args).await,
        TeamsCommand::Delete(args) => delete(client, args).await,
    }
}

fn check_team(name: &str) -> Result<(), TeamsError> {
    if is_valid_team_name(name) {
        Ok(())
    } else {
        Err(TeamsError::Name(clean(&name.chars().take(40).collect::<String>())))
    }
}

fn check_user(name: &str) -> Result<(), TeamsError> {
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        Err(TeamsError::User(clean(&name.chars().take(70).collect::<String>())))
    } else {
        Ok(())
    }
}

fn parse_role(text: &str) -> Result<Role, TeamsError> {
    Role::parse(text.trim()).ok_or_else(|| TeamsError::Role(clean(text)))
}

async fn list(client: &Client, args: JsonArgs) -> anyhow::Result<Output> {
    let answer = client.get(&["v1", "teams"]).await?;
    if args.json {
        return Ok(answer.pretty::<Vec<TeamInfo>>()?);
    }
    let teams: Vec<TeamInfo> = answer.parse()?;
    if teams.is_empty() {
        return Ok(output(
            "you are in no team; create one with `maestro teams create NAME`\n".to_owned(),
        ));
    }
    let mut table = Table::new(&["TEAM", "ROLE", "SECRETS", "CREATED"]);
    for t in &teams {
        table.row(vec![
            t.name.clone(),
            t.role.as_str().to_owned(),
            t.secrets.to_string(),
            time(&t.created_at),
        ]);
    }
    Ok(output(table.render()))
}

fn render_team(t: &TeamInfo) -> String {
    let mut text = format!(
        "team:     {}\nyour role: {}\nsecrets:  {} (named {}/NAME)\ncreated:  {}\n\n",
        t.name,
        t.role.as_str(),
        t.secrets,
        t.name,
        time(&t.created_at)
    );
    let mut table = Table::new(&["MEMBER", "ROLE", "ADDED"]);
    for m in &t.members {
        table.row(vec![m.user.clone(), m.role.as_str().to_owned(), time(&m.added_at)]);
    }
    text.push_str(&table.render());
    text
}

async fn create(client: &Client, args: TeamArgs) -> anyhow::Result<Output> {
    check_team(&args.team)?;
    let body = CreateTeam { name: args.team.clone() };
    let answer = client.send(Method::POST, &["v1", "teams"], &body).await?;
    if args.json {
        return Ok(answer.pretty::<TeamInfo>()?);
    }
    let t: TeamInfo = answer.parse()?;
    Ok(output(format!(
        "team {} created, with you as its owner; add members with `maestro teams add {} USER --role member`, and secrets with `maestro secrets add {}/NAME ...`\n",
        t.name, t.name, t.name
    )))
}

async fn show(client: &Client, args: TeamArgs) -> anyhow::Result<Output> {
    check_team(&args.team)?;
    let answer = client.get(&["v1", "teams", &args.team]).await?;
    if args.json {
        return Ok(answer.pretty::<TeamInfo>()?);
    }
    Ok(output(render_team(&answer.parse()?)))
}

/// What a membership change did, in one or two lines.
fn changed_text(c: &MemberChanged) -> String {
    let mut text = match (c.before, c.role) {
        (None, Some(role)) => format!("{} added to team {} as {}\n", c.user, c.team, role.as_str()),
        (Some(before), Some(role)) if before == role => {
            format!("{} is already {} in team {}; nothing changed\n", c.user, role.as_str(), c.team)
        }
        (Some(before), Some(role)) => format!(
            "{}'s role in team {} changed from {} to {}\n",
            c.user,
            c.team,
            before.as_str(),
            role.as_str()
        ),
        (_, None) => format!("{} removed from team {}\n", c.user, c.team),
    };
    if !c.deactivated.is_empty() {
        let mut sessions: Vec<&str> = c.deactivated.iter().map(|a| a.session.as_str()).collect();
        sessions.dedup();
        text.push_str(&format!(
            "deactivated {} team secret activation(s) in their session(s) {}\n",
            c.deactivated.len(),
            sessions.join(", ")
        ));
    }
    text
}

async fn add(client: &Client, args: AddArgs) -> anyhow::Result<Output> {
    check_team(&args.team)?;
    check_user(&args.user)?;
    let role = parse_role(&args.role)?;
    let answer = client
        .send(Method::PUT, &["v1", "teams", &args.team, "members", &args.user], &SetMember { role })
        .await?;
    if args.json {
        return Ok(answer.pretty::<MemberChanged>()?);
    }
    Ok(output(changed_text(&answer.parse()?)))
}

async fn remove(client: &Client, args: RmArgs) -> anyhow::Result<Output> {
    check_team(&args.team)?;
    check_user(&args.user)?;
    let answer = client.delete(&["v1", "teams", &args.team, "members", &args.user]).await?;
    if args.json {
        return Ok(answer.pretty::<MemberChanged>()?);
    }
    Ok(output(changed_text(&answer.parse()?)))
}

async fn delete(client: &Client, args: TeamArgs) -> anyhow::Result<Output> {
    check_team(&args.team)?;
    client.delete(&["v1", "teams", &args.team]).await?;
    if args.json {
        return Ok(output("{}\n".to_owned()));
    }
    Ok(output(format!("team {} deleted\n", args.team)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roles_are_checked_before_the_broker_is_asked() {
        assert!(check_team("infra").is_ok());
        let e = check_team("Infra/x").unwrap_err().to_string();
        assert!(e.starts_with("invalid team name 'Infra/x'"), "{e}");
        assert_eq!(parse_role("admin").unwrap(), Role::Admin);
        assert_eq!(
            parse_role("root").unwrap_err().to_string(),
            "invalid --role 'root': use owner, admin, member or viewer"
        );
        assert!(check_user("").is_err());
    }

    #[test]
    fn a_removal_says_what_it_deactivated() {
        let c = MemberChanged {
            team: "infra".into(),
            user: "bob".into(),
            role: None,
            before: Some(Role::Member),
            deactivated: vec![maestro_wire::api::ActivationInfo {
                secret: "DB".into(),
                session: "s1".into(),
                session_label: None,
                activated_at: "2026-12-06T00:00:00Z".into(),
                expires_at: None,
            }],
        };
        assert_eq!(
            changed_text(&c),
            "bob removed from team infra\ndeactivated 1 team secret activation(s) in their session(s) s1\n"
        );
    }
}
