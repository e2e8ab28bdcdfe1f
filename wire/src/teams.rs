//! Teams: names, roles, scoped secret names (`team/NAME`) and the API bodies of
//! `/v1/teams`. What each role may do is decided in one place, the broker's
//! `domain::teams::can`; this module only names things.

use serde::{Deserialize, Serialize};

use crate::api::ActivationInfo;
use crate::names::is_valid_secret_name;

/// The longest team name.
pub const MAX_TEAM_NAME: usize = 32;
/// How many teams one user may be a member of.
pub const MAX_TEAMS_PER_USER: i64 = 64;

/// A member's role, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees the team's secrets' metadata and usage.
    Viewer,
    /// And activates them in their own sessions.
    Member,
    /// And adds, edits and deletes the team's secrets and OAuth providers.
    Admin,
    /// And manages members and the team itself.
    Owner,
}

impl Role {
    /// Every role, from least to most.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];

    /// The name stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// The role of a name.
    pub fn parse(name: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// Whether `name` is a valid team name: `[a-z][a-z0-9-]{0,31}`.
pub fn is_valid_team_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() => {}
        _ => return false,
    }
    name.len() <= MAX_TEAM_NAME
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A secret name as users write it: `NAME` (their own) or `team/NAME` (a team's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scoped<'a> {
    pub team: Option<&'a str>,
    pub name: &'a str,
}

impl<'a> Scoped<'a> {
    /// Splits `team/NAME`; `None` unless the team (if any) and the name are both valid.
    pub fn parse(text: &'a str) -> Option<Self> {
        let scoped = match text.split_once('/') {
            Some((team, name)) => Scoped { team: Some(team), name },
            None => Scoped { team: None, name: text },
        };
        let team_ok = scoped.team.is_none_or(is_valid_team_name);
        (team_ok && is_valid_secret_name(scoped.name)).then_some(scoped)
    }
}

/// Joins a team and a secret name as users write it.
pub fn scoped_name(team: Option<&str>, name: &str) -> String {
    match team {
        Some(team) => format!("{team}/{name}"),
        None => name.to_owned(),
    }
}

/// `POST /v1/teams`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    pub name: String,
}

/// `PUT /v1/teams/{team}/members/{user}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetMember {
    pub role: Role,
}

/// A member of a team.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TeamMember {
    pub user: String,
    pub role: Role,
    /// RFC 3339.
    pub added_at: String,
}

/// A team as one of its members sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TeamInfo {
    pub name: String,
    /// The caller's role.
    pub role: Role,
    /// RFC 3339.
    pub created_at: String,
    /// Empty in listings; every member in `GET /v1/teams/{team}`.
    #[serde(default)]
    pub members: Vec<TeamMember>,
    /// How many secrets the team owns.
    #[serde(default)]
    pub secrets: u64,
}

/// What a membership change did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberChanged {
    pub team: String,
    pub user: String,
    /// The role now; `None`: removed.
    pub role: Option<Role>,
    /// The role before; `None`: just added.
    pub before: Option<Role>,
    /// The team's secrets deactivated in the member's live sessions by this change.
    pub deactivated: Vec<ActivationInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_names_and_scoped_secret_names() {
        assert!(is_valid_team_name("infra"));
        assert!(is_valid_team_name("a-2"));
        assert!(is_valid_team_name(&"a".repeat(32)));
        assert!(!is_valid_team_name(&"a".repeat(33)));
        assert!(!is_valid_team_name("Infra"));
        assert!(!is_valid_team_name("-a"));
        assert!(!is_valid_team_name(""));
        assert!(!is_valid_team_name("a/b"));
        assert_eq!(Scoped::parse("DB"), Some(Scoped { team: None, name: "DB" }));
        assert_eq!(Scoped::parse("infra/DB"), Some(Scoped { team: Some("infra"), name: "DB" }));
        assert_eq!(Scoped::parse("infra/db"), None);
        assert_eq!(Scoped::parse("infra/"), None);
        assert_eq!(Scoped::parse("/DB"), None);
        assert_eq!(Scoped::parse("a/b/DB"), None);
        assert_eq!(Scoped::parse("../DB"), None);
        assert_eq!(scoped_name(Some("infra"), "DB"), "infra/DB");
    }

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Viewer < Role::Member && Role::Member < Role::Admin);
        assert!(Role::Admin < Role::Owner);
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
