//! `maestro secrets ...`: add, edit, rm, compromised, ls, show, history, activate, deactivate.
//!
//! Every argument is checked and every value read (with its limits) before the first request,
//! so a bad input changes nothing at the broker.

use anyhow::Context;
use maestro_wire::api::{
    Activation, ActivationInfo, AuditEvent, Compromised, CreateSecret, Deleted, EditSecret,
    SecretMeta, SessionInfo, SessionState,
};
use maestro_wire::catalog::seal::Exposure;
use maestro_wire::duration::format_secs;
use maestro_wire::limits::{MAX_ACTIVATION_SECS, MAX_ROTATION_PERIOD_SECS};
use reqwest::Method;

use super::{Output, audit, json_output, output};
use crate::args::{
    ActivationArgs, AddArgs, EditArgs, HistoryArgs, NameArgs, RmArgs, SecretsCommand, SecretsLsArgs,
};
use crate::client::Client;
use crate::table::{Table, key_values, list, opt, opt_time, secs_since, secs_until, time};
use crate::ttl::{parse_duration, parse_setting};
use crate::{fields, input};

/// The activation and rotation flags of `add` and `edit`, as seconds (`none`: 0, removed).
type LifeFlags = (Option<u64>, Option<u64>, Option<u64>);
fn life_flags(
    default: Option<&str>,
    max: Option<&str>,
    rotate_every: Option<&str>,
) -> anyhow::Result<LifeFlags> {
    let activation = |flag, text: Option<&str>| {
        text.map(|t| parse_setting(flag, t, MAX_ACTIVATION_SECS)).transpose()
    };
    Ok((
        activation("--activation-default", default)?,
        activation("--activation-max", max)?,
        rotate_every
            .map(|t| parse_setting("--rotate-every", t, MAX_ROTATION_PERIOD_SECS))
            .transpose()?,
    ))
}

pub async fn run(client: &Client, command: SecretsCommand) -> anyhow::Result<Output> {
    match command {
        SecretsCommand::Add(args) => add(client, args).await,
        SecretsCommand::Edit(args) => edit(client, args).await,
        SecretsCommand::Rm(args) => rm(client, args).await,
        SecretsCommand::Compromised(args) => compromised(client, args).await,
        SecretsCommand::Ls(args) => ls(client, args).await,
        SecretsCommand::Show(args) => show(client, args).await,
        SecretsCommand::History(args) => history(client, args).await,
        SecretsCommand::Usage(args) => super::usage::run(client, args).await,
        SecretsCommand::Activate(args) => activation(client, args, true).await,
        SecretsCommand::Deactivate(args) => activation(client, args, false).await,
    }
}

async fn add(client: &Client, args: AddArgs) -> anyhow::Result<Output> {
    input::secret_name(&args.name)?;
    if let Some(d) = &args.description {
        input::text("description", d)?;
    }
    input::tags(&args.tags)?;
    let exposure = input::exposure(args.exposure.as_deref())?;
    let (activation_default, activation_max, rotate_every) = life_flags(
        args.activation_default.as_deref(),
        args.activation_max.as_deref(),
        args.rotate_every.as_deref(),
    )?;
    let positive = |v: Option<u64>| v.filter(|s| *s > 0);
    let fields = fields::collect(args.fields, &[])?;
    let body = CreateSecret {
        name: args.name,
        kind: args.kind,
        fields,
        description: args.description,
        tags: args.tags,
        exposure,
        hosts: args.allow_hosts,
        alerts_off: args.alerts.rules_off()?,
        on_alert: args.alerts.on_alert()?.flatten(),
        activation_default_seconds: positive(activation_default),
        activation_max_seconds: positive(activation_max),
        rotate_every_seconds: positive(rotate_every),
    };
    let answer = client.send(Method::POST, &["v1", "secrets"], &body).await?;
    drop(body);
    if args.json {
        return Ok(answer.pretty::<SecretMeta>()?);
    }
    let meta: SecretMeta = answer.parse()?;
    Ok(output(format!(
        "created {} ({}, version {}{}): variables {}; files {}\n",
        meta.name,
        meta.kind,
        meta.version,
        exposure_line(&meta),
        list(&meta.variables),
        list(&meta.files)
    )))
}

async fn edit(client: &Client, args: EditArgs) -> anyhow::Result<Output> {
    input::secret_name(&args.name)?;
    if let Some(d) = &args.description {
        input::text("description", d)?;
    }
    input::tags(&args.tags)?;
    fields::check_removed(&args.remove_fields)?;
    let exposure = input::exposure(args.exposure.as_deref())?;
    let (activation_default, activation_max, rotate_every) = life_flags(
        args.activation_default.as_deref(),
        args.activation_max.as_deref(),
        args.rotate_every.as_deref(),
    )?;
    let no_field_flags = args.fields.field.is_empty()
        && args.fields.field_file.is_empty()
        && args.fields.field_stdin.is_none()
        && args.fields.owners.is_none();
    if no_field_flags
        && args.remove_fields.is_empty()
        && args.kind.is_none()
        && args.description.is_none()
        && args.tags.is_empty()
        && !args.clear_tags
        && exposure.is_none()
        && args.allow_hosts.is_empty()
        && !args.default_hosts
        && args.alerts.is_empty()
        && activation_default.is_none()
        && activation_max.is_none()
        && rotate_every.is_none()
    {
        return Err(input::InputError::NothingToEdit.into());
    }
    let alerts_off = args.alerts.rules_off()?;
    let on_alert = args.alerts.on_alert()?;
    let fields = fields::collect(args.fields, &args.remove_fields)?;
    let tags = if args.clear_tags {
        Some(Vec::new())
    } else if args.tags.is_empty() {
        None
    } else {
        Some(args.tags)
    };
    let body = EditSecret {
        kind: args.kind,
        fields,
        remove_fields: args.remove_fields,
        description: args.description,
        tags,
        exposure,
        hosts: if args.default_hosts {
            Some(Vec::new())
        } else if args.allow_hosts.is_empty() {
            None
        } else {
            Some(args.allow_hosts)
        },
        alerts_off,
        clear_on_alert: matches!(on_alert, Some(None)),
        on_alert: on_alert.flatten(),
        activation_default_seconds: activation_default,
        activation_max_seconds: activation_max,
        rotate_every_seconds: rotate_every,
    };
    let answer = client.send(Method::PATCH, &["v1", "secrets", &args.name], &body).await?;
    drop(body);
    if args.json {
        return Ok(answer.pretty::<SecretMeta>()?);
    }
    let meta: SecretMeta = answer.parse()?;
    Ok(output(format!(
        "updated {} to version {} ({}{}): variables {}; files {}\n",
        meta.name,
        meta.version,
        meta.kind,
        exposure_line(&meta),
        list(&meta.variables),
        list(&meta.files)
    )))
}

async fn rm(client: &Client, args: RmArgs) -> anyhow::Result<Output> {
    input::secret_name(&args.name)?;
    if !args.yes && crate::terminal::interactive() {
        let question = format!(
            "delete secret {} for good (it is deactivated in every session first)?",
            args.name
        );
        let yes = crate::terminal::confirm(&question)
            .context("cannot read the answer; give --yes to delete without asking")?;
        if !yes {
            anyhow::bail!("not deleted: the answer was not yes; give --yes to skip the question");
        }
    }
    let answer = client.delete(&["v1", "secrets", &args.name]).await?;
    if args.json {
        return Ok(answer.pretty::<Deleted>()?);
    }
    let deleted: Deleted = answer.parse()?;
    let mut text = format!("deleted {}\n", deleted.name);
    if !deleted.deactivated_in.is_empty() {
        text.push_str(&format!("deactivated in sessions: {}\n", list(&deleted.deactivated_in)));
    }
    if let Some(revocation) = &deleted.revocation {
        text.push_str(&format!("revocation: {}\n", crate::table::clean(revocation)));
    }
    Ok(output(text))
}

async fn compromised(client: &Client, args: NameArgs) -> anyhow::Result<Output> {
    input::secret_name(&args.name)?;
    let answer = client.post_empty(&["v1", "secrets", &args.name, "compromised"]).await?;
    if args.json {
        return Ok(answer.pretty::<Compromised>()?);
    }
    Ok(output(render_compromised(&answer.parse()?)))
}

/// What `secrets compromised` did, and the steps left to the owner.
fn render_compromised(c: &Compromised) -> String {
    let clean = crate::table::clean;
    let mut text = format!(
        "marked {} compromised at {}
",
        c.name,
        time(&c.compromised_at)
    );
    if c.deactivated_in.is_empty() {
        text.push_str(
            "it was active in no session
",
        );
    } else {
        text.push_str(&format!(
            "deactivated in sessions: {}
",
            list(&c.deactivated_in)
        ));
    }
    text.push_str(&format!(
        "revocation: {}
",
        clean(&c.revocation)
    ));
    text.push_str(&format!(
        "rotate it at the provider ({}): {}
",
        c.kind,
        clean(&c.rotation.steps)
    ));
    if let Some(link) = &c.rotation.link {
        text.push_str(&format!(
            "  docs: {}
",
            clean(link)
        ));
    }
    text.push_str(&format!(
        "then `maestro secrets edit {} --field-file FIELD=PATH` with the new value (that clears the mark), activate it again, and check `maestro alerts ls`\n",
        c.name
    ));
    text
}

/// The NAME column: a compromised secret, or one due for rotation, is marked where the eye
/// starts reading.
fn marked_name(s: &SecretMeta) -> String {
    if s.compromised_at.is_some() {
        format!("{} (COMPROMISED)", s.name)
    } else if s.rotation_due {
        format!("{} (ROTATE)", s.name)
    } else {
        s.name.clone()
    }
}

/// Where a secret is active, each session with the time left (`3f2a… 1h59m left`).
fn active_cell(s: &SecretMeta) -> String {
    if s.activations.is_empty() {
        return list(&s.active_in_sessions);
    }
    let cells: Vec<String> = s
        .activations
        .iter()
        .map(|a| match a.expires_at.as_deref().and_then(secs_until) {
            Some(left) => format!("{} ({} left)", a.session, format_secs(left)),
            None => a.session.clone(),
        })
        .collect();
    list(&cells)
}

/// A secret's age since its value last changed, with its rotation period (`12d of 90d`).
fn age_cell(s: &SecretMeta) -> String {
    let Some(age) = age_of(s) else { return "-".to_owned() };
    match s.rotate_every_seconds {
        Some(every) => format!("{} of {}", format_secs(age), format_secs(every)),
        None => format_secs(age),
    }
}

/// Seconds since a secret's value last changed (an older broker does not say).
fn age_of(s: &SecretMeta) -> Option<u64> {
    s.value_changed_at.as_deref().and_then(secs_since)
}

/// `secrets ls --active`: every secret active in a live session, with the session's label and
/// the time left.
async fn ls_active(client: &Client, json: bool) -> anyhow::Result<Output> {
    let answer = client.get(&["v1", "activations"]).await?;
    if json {
        return Ok(answer.pretty::<Vec<ActivationInfo>>()?);
    }
    let active: Vec<ActivationInfo> = answer.parse()?;
    if active.is_empty() {
        return Ok(output("no secret is active in any live session\n".to_owned()));
    }
    let mut table = Table::new(&["SECRET", "SESSION", "LABEL", "ACTIVATED", "TIME LEFT"]);
    for a in &active {
        table.row(vec![
            a.secret.clone(),
            a.session.clone(),
            opt(a.session_label.as_deref()),
            time(&a.activated_at),
            match a.expires_at.as_deref().and_then(|at| Some((secs_until(at)?, at))) {
                Some((left, at)) => format!("{} (until {})", format_secs(left), time(at)),
                None => "until the session ends".to_owned(),
            },
        ]);
    }
    Ok(output(table.render()))
}

async fn ls(client: &Client, args: SecretsLsArgs) -> anyhow::Result<Output> {
    if args.active {
        return ls_active(client, args.json).await;
    }
    let answer = client.get(&["v1", "secrets"]).await?;
    if args.json {
        return Ok(answer.pretty::<Vec<SecretMeta>>()?);
    }
    let secrets: Vec<SecretMeta> = answer.parse()?;
    if secrets.is_empty() {
        return Ok(output(
            "no secrets; add one with `maestro secrets add NAME --kind KIND --field-file F=PATH`\n"
                .to_owned(),
        ));
    }
    let mut table = Table::new(&[
        "NAME",
        "KIND",
        "EXPOSURE",
        "VERSION",
        "TAGS",
        "ACTIVE IN",
        "AGE",
        "LAST USED",
        "ALERTS",
        "DESCRIPTION",
    ]);
    for s in &secrets {
        table.row(vec![
            marked_name(s),
            s.kind.clone(),
            s.exposure.as_str().to_owned(),
            s.version.to_string(),
            list(&s.tags),
            active_cell(s),
            age_cell(s),
            opt_time(s.last_used_at.as_deref()),
            // The marker: unacknowledged alerts (`maestro alerts ls --secret NAME`).
            if s.alerts > 0 { format!("! {}", s.alerts) } else { "-".to_owned() },
            opt(s.description.as_deref()),
        ]);
    }
    Ok(output(table.render()))
}

async fn show(client: &Client, args: NameArgs) -> anyhow::Result<Output> {
    input::secret_name(&args.name)?;
    let answer = client.get(&["v1", "secrets", &args.name]).await?;
    if args.json {
        return Ok(answer.pretty::<SecretMeta>()?);
    }
    let meta: SecretMeta = answer.parse()?;
    let mut text = render_meta(&meta);
    if meta.alerts > 0 {
        let flags = super::alerts::unacked_of(client, &meta.name).await?;
        text.push_str(&super::alerts::flags_block(&flags));
    }
    Ok(output(text))
}

/// The exposure as `add` and `edit` print it after the kind: nothing for a plain secret (the
/// line stays as it was before sealing), `, sealed to HOSTS` for a sealed one.
fn exposure_line(m: &SecretMeta) -> String {
    match m.exposure {
        Exposure::Plain => String::new(),
        Exposure::Sealed => format!(", sealed to {}", list(&m.hosts)),
    }
}

/// Where a sealed secret's values may go, and whether these are the kind's defaults.
fn hosts_line(m: &SecretMeta) -> String {
    match m.exposure {
        Exposure::Plain => "- (plain: the sandbox sees the values)".to_owned(),
        Exposure::Sealed if m.hosts.is_empty() => {
            "none (the kind refuses the stored hosts; set them with --allow-host)".to_owned()
        }
        Exposure::Sealed if m.user_hosts.is_empty() => {
            format!("{} (the kind's defaults)", list(&m.hosts))
        }
        Exposure::Sealed => list(&m.hosts),
    }
}

/// The field names, with the values of the fields that are not secret (`port=5432`); secret
/// fields are names only.
fn fields_line(m: &SecretMeta) -> String {
    let shown: Vec<String> = m
        .field_names
        .iter()
        .map(|name| match m.shown_fields.get(name) {
            Some(value) => format!("{name}={}", crate::table::clean(value)),
            None => name.clone(),
        })
        .collect();
    list(&shown)
}

/// A secret's activation times (`default 1h, at most 8h`).
fn activation_line(m: &SecretMeta) -> String {
    let default = m.activation_default_seconds.map(|d| format!("default {}", format_secs(d)));
    let max = m.activation_max_seconds.map(|d| format!("at most {}", format_secs(d)));
    match (default, max) {
        (None, None) => "until the session ends (no default or maximum)".to_owned(),
        (d, m) => [d, m].into_iter().flatten().collect::<Vec<_>>().join(", "),
    }
}

/// The `secrets show` block: everything about a secret but its secret values.
fn render_meta(m: &SecretMeta) -> String {
    let mut pairs = vec![
        ("name", m.name.clone()),
        ("kind", m.kind.clone()),
        ("exposure", m.exposure.as_str().to_owned()),
        ("hosts", hosts_line(m)),
        ("description", opt(m.description.as_deref())),
        ("tags", list(&m.tags)),
        ("version", m.version.to_string()),
        ("fields", fields_line(m)),
        ("variables", list(&m.variables)),
        ("files", list(&m.files)),
        ("created", time(&m.created_at)),
        ("updated", time(&m.updated_at)),
        ("last used", m.last_used_at.as_deref().map_or_else(|| "never".to_owned(), time)),
        ("used by sessions", list(&m.used_by_sessions)),
        ("active in sessions", active_cell(m)),
        ("value changed", m.value_changed_at.as_deref().map_or_else(|| "-".to_owned(), time)),
        ("age", age_cell(m)),
        ("activation", activation_line(m)),
        ("alerts", super::alerts::count_line(m.alerts)),
        ("alert rules off", list(&m.alerts_off)),
        ("on alert", super::alerts::actions_line(m.on_alert.as_deref())),
    ];
    if m.rotation_due {
        pairs.insert(
            1,
            (
                "ROTATE",
                format!(
                    "its value is {} old, past its rotation period of {}: rotate it at the provider, then edit it with the new value",
                    age_of(m).map_or_else(|| "-".to_owned(), format_secs),
                    m.rotate_every_seconds.map_or_else(|| "-".to_owned(), format_secs)
                ),
            ),
        );
    }
    if let Some(at) = &m.compromised_at {
        pairs.insert(
            1,
            (
                "COMPROMISED",
                format!("since {}: edit it with a new value before activating it again", time(at)),
            ),
        );
    }
    if let Some(oauth) = &m.oauth {
        pairs.push(("oauth provider", oauth.provider.clone()));
        pairs.push(("oauth scopes", list(&oauth.scopes)));
        pairs.push(("token expires", opt_time(oauth.expires_at.as_deref())));
        pairs.push(("last refresh", opt_time(oauth.last_refresh_at.as_deref())));
        if oauth.needs_reauth {
            let hint = oauth
                .reauth_hint
                .clone()
                .unwrap_or_else(|| format!("run `maestro oauth reconnect {}`", m.name));
            pairs.push(("needs reauth", hint));
        }
    }
    key_values(&pairs)
}

async fn history(client: &Client, args: HistoryArgs) -> anyhow::Result<Output> {
    input::secret_name(&args.name)?;
    let path = ["v1", "secrets", args.name.as_str(), "history"];
    let events = if args.page.is_default() {
        let answer = client.get(&path).await?;
        if args.json {
            return Ok(answer.pretty::<Vec<AuditEvent>>()?);
        }
        answer.parse::<Vec<AuditEvent>>()?
    } else {
        let events = audit::fetch_pages(client, &path, &args.page).await?;
        if args.json {
            return json_output(&events);
        }
        events
    };
    if events.is_empty() {
        return Ok(output(format!("no history for {}\n", args.name)));
    }
    Ok(output(audit::render(&events, false)))
}

/// The session an activation names: `--session` as given (the broker resolves an id prefix or
/// a label), or else the only live session, said on stderr. No live session, or several, is a
/// one-line error naming them.
async fn target_session(client: &Client, given: Option<String>) -> anyhow::Result<String> {
    if let Some(session) = given {
        input::session_id(&session)?;
        return Ok(session);
    }
    let sessions: Vec<SessionInfo> = client.get(&["v1", "sessions"]).await?.parse()?;
    // The broker lists them newest first.
    let live: Vec<&SessionInfo> =
        sessions.iter().filter(|s| s.state == SessionState::Live).collect();
    let name = |s: &SessionInfo| match &s.label {
        Some(label) => format!("{} ({})", s.id, crate::table::clean(label)),
        None => s.id.clone(),
    };
    match live.as_slice() {
        [] => anyhow::bail!(
            "no live session to use; create one with `maestro sessions create`, or name one with --session"
        ),
        [one] => {
            eprintln!("maestro: using session {}, the only live one", name(one));
            Ok(one.id.clone())
        }
        many => anyhow::bail!(
            "{} live sessions: {}; name one with --session (an id, a unique id prefix or a label)",
            many.len(),
            many.iter().map(|s| name(s)).collect::<Vec<_>>().join(", ")
        ),
    }
}

async fn activation(
    client: &Client,
    args: ActivationArgs,
    activate: bool,
) -> anyhow::Result<Output> {
    input::secret_names(&args.names)?;
    let for_seconds = match (&args.for_, activate) {
        (Some(_), false) => anyhow::bail!("--for is for `activate` only; deactivate takes no time"),
        (Some(t), true) => Some(parse_duration("--for", t, MAX_ACTIVATION_SECS)?),
        (None, _) => None,
    };
    if let Some(s) = &args.session {
        input::session_id(s)?;
    }
    let session = target_session(client, args.session).await?;
    let verb = if activate { "activate" } else { "deactivate" };
    let body = Activation { names: args.names, for_seconds };
    let answer = client.send(Method::POST, &["v1", "sessions", &session, verb], &body).await?;
    if args.json {
        return Ok(answer.pretty::<SessionInfo>()?);
    }
    let session: SessionInfo = answer.parse()?;
    let done = if activate { "activated" } else { "deactivated" };
    let label = session
        .label
        .as_deref()
        .map(|l| format!(" ({})", crate::table::clean(l)))
        .unwrap_or_default();
    let mut text = format!(
        "{done} {} in session {}{label}; active now: {}\n",
        body.names.join(", "),
        session.id,
        list(&session.active)
    );
    if activate {
        for a in session.activations.iter().filter(|a| body.names.contains(&a.secret)) {
            if let Some((left, at)) =
                a.expires_at.as_deref().and_then(|at| Some((secs_until(at)?, at)))
            {
                text.push_str(&format!(
                    "{} is deactivated in {} (at {})\n",
                    a.secret,
                    format_secs(left),
                    time(at)
                ));
            }
        }
    }
    Ok(output(text))
}

#[cfg(test)]
mod tests {
    use maestro_wire::api::OAuthMeta;

    use super::*;

    fn meta() -> SecretMeta {
        SecretMeta {
            name: "GH".into(),
            kind: "github".into(),
            description: None,
            tags: vec![],
            version: 3,
            field_names: vec!["token".into()],
            variables: vec!["GITHUB_TOKEN".into()],
            files: vec!["GITHUB_TOKEN".into()],
            created_at: "2026-11-29T10:00:00Z".into(),
            updated_at: "2026-11-29T11:00:00Z".into(),
            last_used_at: None,
            used_by_sessions: vec!["s1".into(), "s2".into()],
            active_in_sessions: vec!["s2".into()],
            oauth: Some(OAuthMeta {
                provider: "github".into(),
                scopes: vec!["repo".into(), "read:org".into()],
                expires_at: None,
                needs_reauth: true,
                reauth_hint: None,
                last_refresh_at: None,
            }),
            exposure: Exposure::Sealed,
            hosts: vec!["github.com".into(), "api.github.com".into()],
            user_hosts: vec![],
            shown_fields: Default::default(),
            compromised_at: None,
            alerts: 0,
            alerts_off: vec![],
            on_alert: None,
            activation_default_seconds: None,
            activation_max_seconds: None,
            rotate_every_seconds: None,
            value_changed_at: None,
            rotation_due: false,
            activations: vec![],
            team: None,
        }
    }

    #[test]
    fn show_gives_the_values_of_fields_that_are_not_secret_only() {
        let m = SecretMeta {
            kind: "postgres".into(),
            field_names: vec!["host".into(), "password".into(), "port".into()],
            shown_fields: [("host", "db.internal"), ("port", "5432")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..meta()
        };
        let text = render_meta(&m);
        assert!(text.contains("host=db.internal, password, port=5432"), "{text}");
    }

    #[test]
    fn show_and_add_name_the_exposure_and_hosts() {
        let m = meta();
        let out = render_meta(&m);
        assert!(out.contains("sealed"), "{out}");
        assert!(out.contains("github.com, api.github.com (the kind's defaults)"), "{out}");
        assert_eq!(exposure_line(&m), ", sealed to github.com, api.github.com");
        let narrowed = SecretMeta {
            hosts: vec!["api.github.com".into()],
            user_hosts: vec!["api.github.com".into()],
            ..m.clone()
        };
        assert!(!render_meta(&narrowed).contains("defaults"));
        let plain = SecretMeta { exposure: Exposure::Plain, hosts: vec![], ..m };
        assert_eq!(exposure_line(&plain), "");
        assert!(render_meta(&plain).contains("plain: the sandbox sees the values"));
    }

    #[test]
    fn show_lists_everything_but_values() {
        let out = render_meta(&meta());
        for want in [
            "variables:",
            "GITHUB_TOKEN",
            "last used:",
            "never",
            "used by sessions:",
            "s1, s2",
            "active in sessions:",
            "oauth scopes:",
            "repo, read:org",
            "maestro oauth reconnect GH",
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
    }

    #[test]
    fn show_marks_a_compromised_secret_and_compromised_prints_the_next_steps() {
        assert!(!render_meta(&meta()).contains("COMPROMISED"));
        let m = SecretMeta { compromised_at: Some("2026-12-05T08:00:00Z".into()), ..meta() };
        let out = render_meta(&m);
        assert!(out.contains("COMPROMISED") && out.contains("edit it with a new value"), "{out}");
        let c = Compromised {
            name: "AWS_PROD".into(),
            kind: "aws".into(),
            compromised_at: "2026-12-05T08:00:00Z".into(),
            deactivated_in: vec!["s1".into(), "s2".into()],
            revocation: "not revocable by Maestro: rotate the value at the provider (steps below)"
                .into(),
            rotation: maestro_wire::api::RotationSteps {
                steps: "IAM console > Users".into(),
                link: Some("https://docs.aws.amazon.com/x".into()),
            },
        };
        let out = render_compromised(&c);
        for want in [
            "marked AWS_PROD compromised",
            "deactivated in sessions: s1, s2",
            "revocation: not revocable by Maestro",
            "rotate it at the provider (aws): IAM console > Users",
            "docs: https://docs.aws.amazon.com/x",
            "maestro secrets edit AWS_PROD",
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
    }
}
