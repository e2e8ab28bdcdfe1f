//! Teams and their members, behind their own trait so that each engine implements it beside
//! [`crate::store::Store`] (statements in `store/sql/teams.rs`, tables of migration 10).
//!
//! * A team is a principal: a row of `users` with `kind` 'team' (no token, it cannot sign
//!   in) and a row of `teams` with the same id and its name. Everything a team owns (secrets,
//!   their data keys, OAuth providers, its audit trail) hangs off that one owner id exactly as a
//!   user's does, so a team secret is stored once, whoever activates it.
//! * `team_members` gives each member one role ([`crate::domain::teams::Role`]).
//! * A membership change that takes away the right to activate (removal, or a role lowered to
//!   viewer) deletes the team's activations in the member's live sessions in the same
//!   transaction, records a `deactivated` per activation and returns them, so that the caller
//!   tells the agents at once. The last owner cannot be removed or demoted: the statement that
//!   checks it locks the team's row first, so two owners demoting each other on two brokers
//!   cannot both succeed.

use super::{ActivationRow, AuditRecord, AuditRow, StoreFuture, UsageGroup};

/// What `users.kind` says of a team's principal.
pub const KIND_TEAM: &str = "team";

/// A team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamRecord {
    /// The id of its principal (a `users` row): the owner id of everything it owns.
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

/// A member of a team, with their role's stored name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub user_id: i64,
    pub name: String,
    pub role: String,
    pub added_at: i64,
}

/// Why a change to a team was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamRefusal {
    /// The name is taken (by a team, or by the principal name of one).
    Taken,
    /// The creator is in the most teams allowed already.
    Limit,
    /// No user by that name.
    NoSuchUser,
    /// The user is not a member.
    NotMember,
    /// The change would leave the team without an owner.
    LastOwner,
    /// The team still owns secrets or OAuth providers (their names).
    NotEmpty(Vec<String>),
}

/// What a membership change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberChange {
    /// The member after the change; `None`: removed.
    pub member: Option<MemberRecord>,
    /// The role before; `None`: added.
    pub before: Option<String>,
    /// The team's activations ended in the member's live sessions.
    pub deactivated: Vec<ActivationRow>,
}

/// Teams' persistence.
pub trait TeamStore: Send + Sync {
    /// Adds a team (its principal and its row) with `creator` as its owner, and `audit` in
    /// the team's trail; [`TeamRefusal::Taken`], or [`TeamRefusal::Limit`] when the creator
    /// is a member of `max` teams already.
    fn create_team<'a>(
        &'a self,
        name: &'a str,
        creator: i64,
        now: i64,
        max: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<TeamRecord, TeamRefusal>>;
    /// A team by name.
    fn team_by_name<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<TeamRecord>>;
    /// The teams a user is a member of, by name, with their role.
    fn teams_of(&self, user_id: i64) -> StoreFuture<'_, Vec<(TeamRecord, String)>>;
    /// A user's role in a team, if a member.
    fn member_role(&self, team_id: i64, user_id: i64) -> StoreFuture<'_, Option<String>>;
    /// A team's members, by name.
    fn members(&self, team_id: i64) -> StoreFuture<'_, Vec<MemberRecord>>;
    /// Adds `user` to a team with `role`, or sets the role of a member; with a role that
    /// cannot activate (`viewer`), ends the team's activations in the user's live sessions.
    /// `deactivate_detail` goes into each `deactivated` record, `audit` into the team's
    /// trail. Refused ([`TeamRefusal::LastOwner`]) if it demotes the last owner.
    fn set_member<'a>(
        &'a self,
        team_id: i64,
        user: &'a str,
        role: &'a str,
        now: i64,
        deactivate_detail: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<MemberChange, TeamRefusal>>;
    /// Removes a member and ends the team's activations in their live sessions, as
    /// [`TeamStore::set_member`] does for a viewer. Refused for the last owner.
    fn remove_member<'a>(
        &'a self,
        team_id: i64,
        user: &'a str,
        now: i64,
        deactivate_detail: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<MemberChange, TeamRefusal>>;
    /// A page of a team secret's audit trail, whoever's trail holds each record (the team's:
    /// created, edited; a member's: activated, used), with the name of that principal: its
    /// newest `limit` records below `before`, oldest first.
    fn secret_trail<'a>(
        &'a self,
        secret_id: &'a str,
        before: Option<i64>,
        limit: i64,
    ) -> StoreFuture<'a, Vec<(AuditRow, String)>>;
    /// A team secret's uses grouped as [`super::Store::secret_usage_groups`] does, whoever's
    /// trail holds them (each member's session records its uses in the member's trail).
    fn secret_usage_all<'a>(&'a self, secret_id: &'a str) -> StoreFuture<'a, Vec<UsageGroup>>;
    /// Deletes a team that owns nothing any more (its members go with it) and records `audit`
    /// (in the trail of the owner who deleted it); refused, naming them, while it owns secrets
    /// or OAuth providers.
    fn delete_team<'a>(
        &'a self,
        team_id: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<(), TeamRefusal>>;
}
