//! Teams: who may do what with a team's secrets, decided in one place ([`can`]), and the
//! rules of creating a team and changing its members.
//!
//! A team is a principal of its own (see [`crate::store::teams`]): its secrets are stored once,
//! under the team's owner id, and every operation on a secret first resolves the name the user
//! wrote (`NAME`: their own, `team/NAME`: a team's) to an [`Owner`] with [`resolve`], which
//! checks the caller's role with [`can`]. A user who is not a member of a team is answered as if
//! the team did not exist (`not_found`), so team names cannot be probed; a member whose role
//! does not allow the action gets `forbidden`, naming the role needed.
//!
//! Removing a member, or lowering them to viewer, ends the team's activations in their live
//! sessions in the same transaction, and their agents are told at once (on PostgreSQL, the
//! event hub relays to the agents connected to other brokers).

use std::collections::HashMap;

use maestro_wire::agent_api::AgentEvent;
use maestro_wire::api::{AuditAction, ErrorCode};
use maestro_wire::teams::{
    CreateTeam, MAX_TEAMS_PER_USER, MemberChanged, Role, Scoped, SetMember, TeamInfo, TeamMember,
    is_valid_team_name,
};
use tracing::info;

use super::activation::activation_info_in;
use super::error::{DomainError, DomainResult};
use crate::app::App;
use crate::clock;
use crate::store::teams::{MemberChange, TeamRecord, TeamRefusal};
use crate::store::{AuditRecord, UserRecord};

/// Something a user may want to do with a team or its secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// See the team, its members, its secrets' metadata, history and usage.
    See,
    /// Activate (and deactivate) the team's secrets in one's own sessions.
    Activate,
    /// Add, edit, delete the team's secrets, declare them compromised.
    WriteSecrets,
    /// Add, edit, remove the team's OAuth providers.
    ManageProviders,
    /// Create and remove the team's service accounts, make and revoke their tokens.
    ManageServiceAccounts,
    /// Add and remove members, change their roles, delete the team.
    ManageMembers,
}

impl Action {
    /// What the action is called in a refusal.
    fn describe(self) -> &'static str {
        match self {
            Action::See => "seeing its secrets",
            Action::Activate => "activating its secrets",
            Action::WriteSecrets => "adding, editing or deleting its secrets",
            Action::ManageProviders => "managing its OAuth providers",
            Action::ManageServiceAccounts => "managing its service accounts and their tokens",
            Action::ManageMembers => "managing its members",
        }
    }

    /// The least role that may do it.
    pub fn least_role(self) -> Role {
        match self {
            Action::See => Role::Viewer,
            Action::Activate => Role::Member,
            // A service account's token reaches every secret of the team: as much as an admin's
            // own reach, so admins (who manage secrets and providers) manage them.
            Action::WriteSecrets | Action::ManageProviders | Action::ManageServiceAccounts => {
                Role::Admin
            }
            Action::ManageMembers => Role::Owner,
        }
    }
}

/// Whether a member with `role` may do `action`: the one place that says so.
pub fn can(role: Role, action: Action) -> bool {
    role >= action.least_role()
}

/// Who owns a secret a user named: the user, or a team they are a member of.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The principal whose owner id the secret is stored under.
    pub principal: UserRecord,
    /// The team, for a team's secret.
    pub team: Option<TeamRecord>,
    /// The caller's role in the team.
    pub role: Option<Role>,
}

impl Owner {
    /// The user themselves.
    pub fn personal(user: &UserRecord) -> Self {
        Self { principal: user.clone(), team: None, role: None }
    }

    /// A secret name as the user writes it.
    pub fn scoped(&self, name: &str) -> String {
        maestro_wire::teams::scoped_name(self.team.as_ref().map(|t| t.name.as_str()), name)
    }

    /// The team's name, if a team's.
    pub fn team_name(&self) -> Option<&str> {
        self.team.as_ref().map(|t| t.name.as_str())
    }
}

/// Checks a team name.
pub fn check_team_name(name: &str) -> DomainResult<()> {
    if is_valid_team_name(name) {
        return Ok(());
    }
    let shown: String = name.chars().take(40).collect();
    Err(DomainError::new(
        ErrorCode::InvalidName,
        format!(
            "invalid team name '{}': use 1 to 32 of a-z, 0-9 and -, starting with a letter (like infra)",
            shown.escape_default()
        ),
    )
    .at_field("name"))
}

/// Splits a secret name as users write it, refusing one that is neither `NAME` nor
/// `team/NAME`.
pub fn parse_scoped(text: &str) -> DomainResult<Scoped<'_>> {
    Scoped::parse(text).ok_or_else(|| {
        let shown: String = text.chars().take(100).collect();
        DomainError::new(
            ErrorCode::InvalidName,
            format!(
                "invalid secret name '{}': use NAME (1 to 64 of A-Z, 0-9 and _, starting with a letter) or team/NAME for a team's secret",
                shown.escape_default()
            ),
        )
        .at_field("name")
    })
}

/// The team named, with the caller's role in it, if the caller may do `action`. A team the
/// caller is not a member of is not found, whether it exists or not.
pub async fn team_for(
    app: &App,
    user: &UserRecord,
    team: &str,
    action: Action,
) -> DomainResult<(TeamRecord, Role)> {
    check_team_name(team)?;
    let not_found = || {
        DomainError::not_found(format!(
            "you are not a member of a team named {team}; `maestro teams ls` lists yours"
        ))
    };
    let record = app.teams.team_by_name(team).await?.ok_or_else(not_found)?;
    let role = app
        .teams
        .member_role(record.id, user.id)
        .await?
        .and_then(|r| Role::parse(&r))
        .ok_or_else(not_found)?;
    if !can(role, action) {
        return Err(DomainError::forbidden(format!(
            "your role in team {team} is {}; {} needs {} or above; ask an owner of the team (`maestro teams show {team}`)",
            role.as_str(),
            action.describe(),
            action.least_role().as_str()
        )));
    }
    Ok((record, role))
}

/// Resolves a secret name as the user wrote it to its owner and bare name, checking that the
/// user may do `action` with it.
pub async fn resolve<'n>(
    app: &App,
    user: &UserRecord,
    name: &'n str,
    action: Action,
) -> DomainResult<(Owner, &'n str)> {
    let scoped = parse_scoped(name)?;
    let Some(team) = scoped.team else { return Ok((Owner::personal(user), scoped.name)) };
    Ok((owner_of(app, user, team, action).await?, scoped.name))
}

/// Resolves an OAuth provider's name as the user wrote it (`NAME`, or `team/NAME` for a
/// team's provider) to its owner and bare name, checking that the user may do `action`.
pub async fn resolve_provider<'n>(
    app: &App,
    user: &UserRecord,
    name: &'n str,
    action: Action,
) -> DomainResult<(Owner, &'n str)> {
    match name.split_once('/') {
        None => Ok((Owner::personal(user), name)),
        Some((team, bare)) => {
            if !maestro_wire::oauth::is_valid_provider_name(bare) {
                return Err(DomainError::not_found(format!(
                    "no OAuth provider named {}; use NAME or team/NAME",
                    name.chars().take(80).collect::<String>().escape_default()
                )));
            }
            Ok((owner_of(app, user, team, action).await?, bare))
        }
    }
}

/// Whether the user may do `action` with things owned by principal `owner_id` (themselves, or
/// a team where their role allows it): for records that name only their owner (an OAuth
/// authorization in progress).
pub async fn may_act_for(
    app: &App,
    user: &UserRecord,
    owner_id: i64,
    action: Action,
) -> DomainResult<bool> {
    if owner_id == user.id {
        return Ok(true);
    }
    Ok(app
        .teams
        .member_role(owner_id, user.id)
        .await?
        .and_then(|r| Role::parse(&r))
        .is_some_and(|r| can(r, action)))
}

/// The owner for a team's things, if the user may do `action` with them.
pub async fn owner_of(
    app: &App,
    user: &UserRecord,
    team: &str,
    action: Action,
) -> DomainResult<Owner> {
    let (record, role) = team_for(app, user, team, action).await?;
    let principal = UserRecord { id: record.id, name: format!("team/{}", record.name) };
    Ok(Owner { principal, team: Some(record), role: Some(role) })
}

/// The names of the user's teams by id, to name their secrets `team/NAME`.
pub async fn team_names(app: &App, user_id: i64) -> DomainResult<HashMap<i64, String>> {
    Ok(app.teams.teams_of(user_id).await?.into_iter().map(|(t, _)| (t.id, t.name)).collect())
}

/// The teams the user may see secrets of, as owners.
pub async fn owners_of(app: &App, user: &UserRecord) -> DomainResult<Vec<Owner>> {
    let mut out = Vec::new();
    for (team, role) in app.teams.teams_of(user.id).await? {
        let Some(role) = Role::parse(&role) else { continue };
        if can(role, Action::See) {
            let principal = UserRecord { id: team.id, name: format!("team/{}", team.name) };
            out.push(Owner { principal, team: Some(team), role: Some(role) });
        }
    }
    Ok(out)
}

/// A refusal of the store as the user sees it.
fn refused(team: &str, user: Option<&str>, why: TeamRefusal) -> DomainError {
    let user = user.unwrap_or("");
    match why {
        TeamRefusal::Taken => DomainError::new(
            ErrorCode::AlreadyExists,
            format!("a team named {team} already exists; choose another name"),
        )
        .at_field("name"),
        TeamRefusal::Limit => DomainError::new(
            ErrorCode::TooMany,
            format!(
                "you are a member of {MAX_TEAMS_PER_USER} teams, the most allowed; leave one first"
            ),
        ),
        TeamRefusal::NoSuchUser => {
            DomainError::not_found(format!("no user named {user} on this broker; check the name"))
        }
        TeamRefusal::NotMember => DomainError::not_found(format!(
            "{user} is not a member of team {team}; `maestro teams show {team}` lists them"
        )),
        TeamRefusal::LastOwner => DomainError::new(
            ErrorCode::Conflict,
            format!(
                "{user} is the last owner of team {team}; make another member owner first (`maestro teams add {team} USER --role owner`); nothing changed"
            ),
        ),
        TeamRefusal::NotEmpty(names) => DomainError::new(
            ErrorCode::Conflict,
            format!(
                "team {team} still owns {}; delete (or end) them first; nothing changed",
                names.join(", ")
            ),
        ),
    }
}

/// A team as the caller sees it.
async fn info(
    app: &App,
    team: &TeamRecord,
    role: Role,
    with_members: bool,
) -> DomainResult<TeamInfo> {
    let members = if with_members {
        app.teams
            .members(team.id)
            .await?
            .into_iter()
            .filter_map(|m| {
                Some(TeamMember {
                    user: m.name,
                    role: Role::parse(&m.role)?,
                    added_at: clock::rfc3339(m.added_at),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let secrets = app.store.list_secrets(team.id).await?.len();
    Ok(TeamInfo {
        name: team.name.clone(),
        role,
        created_at: clock::rfc3339(team.created_at),
        members,
        secrets: u64::try_from(secrets).unwrap_or(u64::MAX),
    })
}

/// Creates a team with the caller as its owner.
pub async fn create(app: &App, user: &UserRecord, body: CreateTeam) -> DomainResult<TeamInfo> {
    check_team_name(&body.name)?;
    let now = clock::now();
    let audit = AuditRecord {
        detail: Some(format!("team {} created by {}", body.name, user.name)),
        ..AuditRecord::new(0, now, AuditAction::TeamChanged)
    };
    let team = app
        .teams
        .create_team(&body.name, user.id, now, MAX_TEAMS_PER_USER, &audit)
        .await?
        .map_err(|why| refused(&body.name, None, why))?;
    info!(user = %user.name, team = %team.name, "team created");
    info(app, &team, Role::Owner, true).await
}

/// The caller's teams.
pub async fn list(app: &App, user: &UserRecord) -> DomainResult<Vec<TeamInfo>> {
    let mut out = Vec::new();
    for (team, role) in app.teams.teams_of(user.id).await? {
        if let Some(role) = Role::parse(&role) {
            out.push(info(app, &team, role, false).await?);
        }
    }
    Ok(out)
}

/// One team with its members.
pub async fn show(app: &App, user: &UserRecord, team: &str) -> DomainResult<TeamInfo> {
    let (record, role) = team_for(app, user, team, Action::See).await?;
    info(app, &record, role, true).await
}

/// Checks a user name as sent in a path.
fn check_user_name(name: &str) -> DomainResult<()> {
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
        return Err(DomainError::bad_request(
            "a user name has 1 to 64 characters and no control characters",
        ));
    }
    Ok(())
}

/// The user id of a member, if `name` is one.
async fn member_id(app: &App, team: &TeamRecord, name: &str) -> DomainResult<Option<i64>> {
    Ok(app.teams.members(team.id).await?.into_iter().find(|m| m.name == name).map(|m| m.user_id))
}

/// Tells the agents of the member's sessions what a change deactivated, and answers.
fn changed(app: &App, team: &TeamRecord, user: &str, change: MemberChange) -> MemberChanged {
    for row in &change.deactivated {
        app.hub.publish(&row.session_id, AgentEvent::Deactivated { name: row.secret_name.clone() });
    }
    MemberChanged {
        team: team.name.clone(),
        user: user.to_owned(),
        role: change.member.as_ref().and_then(|m| Role::parse(&m.role)),
        before: change.before.as_deref().and_then(Role::parse),
        deactivated: change
            .deactivated
            .iter()
            .map(|r| activation_info_in(r, &HashMap::from([(team.id, team.name.clone())])))
            .collect(),
    }
}

/// Adds a member, or changes a member's role (owners only). Lowering a member to viewer
/// deactivates the team's secrets in their live sessions at once.
pub async fn set_member(
    app: &App,
    user: &UserRecord,
    team: &str,
    member: &str,
    body: SetMember,
) -> DomainResult<MemberChanged> {
    check_user_name(member)?;
    let (record, _) = team_for(app, user, team, Action::ManageMembers).await?;
    // Serialized with the member's activations (here and across brokers), so that an
    // activation in flight cannot outlive the change.
    let _serialized = app.activation_lock.lock().await;
    let member_lock = match member_id(app, &record, member).await? {
        Some(id) => Some(app.store.lock_owner(id).await?),
        None => None,
    };
    let now = clock::now();
    let role = body.role.as_str();
    let audit = AuditRecord {
        detail: Some(format!("{member} is {role} (by {})", user.name)),
        ..AuditRecord::new(record.id, now, AuditAction::TeamChanged)
    };
    let detail = format!("{member}'s role in team {team} lowered to {role}");
    let change = app
        .teams
        .set_member(record.id, member, role, now, &detail, &audit)
        .await?
        .map_err(|why| refused(team, Some(member), why))?;
    let answer = changed(app, &record, member, change);
    drop(member_lock);
    info!(user = %user.name, team = %team, member = %member, role = %role, deactivated = answer.deactivated.len(), "team member set");
    Ok(answer)
}

/// Removes a member (owners only; a member may also leave). The team's secrets are
/// deactivated in their live sessions at once.
pub async fn remove_member(
    app: &App,
    user: &UserRecord,
    team: &str,
    member: &str,
) -> DomainResult<MemberChanged> {
    check_user_name(member)?;
    let leaving = member == user.name;
    let action = if leaving { Action::See } else { Action::ManageMembers };
    let (record, _) = team_for(app, user, team, action).await?;
    let _serialized = app.activation_lock.lock().await;
    let member_lock = match member_id(app, &record, member).await? {
        Some(id) => Some(app.store.lock_owner(id).await?),
        None => None,
    };
    let now = clock::now();
    let audit = AuditRecord {
        detail: Some(format!("{member} removed (by {})", user.name)),
        ..AuditRecord::new(record.id, now, AuditAction::TeamChanged)
    };
    let detail = format!("{member} removed from team {team}");
    let change = app
        .teams
        .remove_member(record.id, member, now, &detail, &audit)
        .await?
        .map_err(|why| refused(team, Some(member), why))?;
    let answer = changed(app, &record, member, change);
    drop(member_lock);
    info!(user = %user.name, team = %team, member = %member, deactivated = answer.deactivated.len(), "team member removed");
    Ok(answer)
}

/// Deletes a team that owns nothing any more (owners only).
pub async fn delete(app: &App, user: &UserRecord, team: &str) -> DomainResult<()> {
    let (record, _) = team_for(app, user, team, Action::ManageMembers).await?;
    let audit = AuditRecord {
        detail: Some(format!("team {team} deleted by {}", user.name)),
        ..AuditRecord::new(user.id, clock::now(), AuditAction::TeamChanged)
    };
    app.teams.delete_team(record.id, &audit).await?.map_err(|why| refused(team, None, why))?;
    info!(user = %user.name, team = %team, "team deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole table of who may do what.
    #[test]
    fn each_role_may_do_what_it_should_and_nothing_more() {
        use Action::*;
        let table = [
            (Role::Viewer, [true, false, false, false, false, false]),
            (Role::Member, [true, true, false, false, false, false]),
            (Role::Admin, [true, true, true, true, true, false]),
            (Role::Owner, [true, true, true, true, true, true]),
        ];
        for (role, allowed) in table {
            for (action, ok) in
                [See, Activate, WriteSecrets, ManageProviders, ManageServiceAccounts, ManageMembers]
                    .into_iter()
                    .zip(allowed)
            {
                assert_eq!(can(role, action), ok, "{role:?} {action:?}");
            }
        }
    }

    #[test]
    fn scoped_names_are_checked() {
        assert!(parse_scoped("DB").is_ok());
        assert_eq!(parse_scoped("infra/DB").unwrap().team, Some("infra"));
        let e = parse_scoped("infra/db").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidName);
        assert!(e.message.contains("team/NAME"));
        assert!(check_team_name(&"a".repeat(33)).is_err());
    }
}
