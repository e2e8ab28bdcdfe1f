//! The team routes (bearer token): `GET`/`POST /v1/teams`, `GET`/`DELETE /v1/teams/{team}`,
//! `PUT`/`DELETE /v1/teams/{team}/members/{user}`. Reading needs `secrets:read`; creating a
//! team and changing members need `admin` (the token's scopes, [`crate::auth`]), and then the
//! caller's role in the team ([`crate::domain::teams::can`]). Team secrets themselves go
//! through the secret and activation routes, named `team/NAME`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use maestro_wire::teams::{CreateTeam, MemberChanged, SetMember, TeamInfo};

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath};
use crate::app::SharedApp;
use crate::auth::{Caller, CurrentUser};
use crate::domain::teams;

/// The team routes.
pub fn routes() -> Router<SharedApp> {
    Router::new()
        .route("/v1/teams", get(list).post(create))
        .route("/v1/teams/{team}", get(show).delete(remove))
        .route("/v1/teams/{team}/members/{user}", put(set_member).delete(remove_member))
}

/// `POST /v1/teams`: the caller becomes its owner (not a team's own token).
async fn create(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTeam>,
) -> ApiResult<(StatusCode, Json<TeamInfo>)> {
    crate::domain::tokens::refuse_team(&caller)?;
    Ok((StatusCode::CREATED, Json(teams::create(&app, &caller.user, body).await?)))
}

/// `GET /v1/teams`: the caller's teams with their role.
async fn list(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<Vec<TeamInfo>>> {
    Ok(Json(teams::list(&app, &user).await?))
}

/// `GET /v1/teams/{team}`: with its members.
async fn show(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(team): ApiPath<String>,
) -> ApiResult<Json<TeamInfo>> {
    Ok(Json(teams::show(&app, &user, &team).await?))
}

/// `DELETE /v1/teams/{team}`: only once it owns nothing.
async fn remove(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(team): ApiPath<String>,
) -> ApiResult<StatusCode> {
    teams::delete(&app, &user, &team).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/teams/{team}/members/{user}`: adds a member or sets their role.
async fn set_member(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath((team, member)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SetMember>,
) -> ApiResult<Json<MemberChanged>> {
    Ok(Json(teams::set_member(&app, &user, &team, &member, body).await?))
}

/// `DELETE /v1/teams/{team}/members/{user}`: the team's secrets leave their sessions at once.
async fn remove_member(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath((team, member)): ApiPath<(String, String)>,
) -> ApiResult<Json<MemberChanged>> {
    Ok(Json(teams::remove_member(&app, &user, &team, &member).await?))
}
