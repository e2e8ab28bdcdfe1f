//! Unusual usage, flagged and acted on (issue 12 parts 2 and 3): the usage route hands each
//! batch here. [`Evaluation::prepare`] gathers each secret's history (a few primary-key reads
//! per secret of the batch, from what migration 6 keeps up to date, plus one indexed count of
//! its last minute) and runs the pure rules of [`super::alert_rules`] on every record, in
//! order, so that a batch's own earlier records count as history for its later ones.
//! [`Evaluation::apply`] stores the profiles and alerts once the records are committed, then
//! takes the actions: deactivate the secret in the session, end the session, queue the
//! webhook (delivered by [`super::webhook`], never on this path).
//!
//! Nothing here can fail a usage batch: a history that cannot be read is logged and its rules
//! skipped, and the uses are recorded whatever happens to their alerts.
//!
//! Also here: the per-secret and per-user settings, and listing and acknowledging alerts.

use std::collections::{HashMap, HashSet};

use maestro_wire::SecretValue;
use maestro_wire::agent_api::{AgentEvent, UsageAction};
use maestro_wire::alerts::{
    self as wire_alerts, Alert, AlertAction, AlertConfig, AlertConfigUpdate,
    MAX_WEBHOOK_SECRET_BYTES, MIN_WEBHOOK_SECRET_BYTES,
};
use maestro_wire::api::AuditAction;
use tracing::{info, warn};

use super::alert_rules::{self, History, Use};
use super::error::{DomainError, DomainResult};
use super::sessions;
use crate::app::App;
use crate::clock;
use crate::store::alerts::{
    AlertQuery, AlertRecord, Profile, ProfileUpdate, SecretAlertSettings, WebhookState,
};
use crate::store::{AuditRecord, SessionRecord, UserRecord};

/// Most alerts one usage batch raises (a flood of odd uses must not become a flood of rows).
pub const MAX_ALERTS_PER_BATCH: usize = 32;
/// A session's alert of the same rule, secret and command is not raised again within this
/// long while the first is not acknowledged.
pub const REPEAT_WINDOW_SECS: i64 = 600;
/// The window of the `burst` rule.
pub const BURST_WINDOW_SECS: i64 = 60;
/// A secret's usual rate is taken over at least this long, so that its first busy minute is
/// not its usual rate.
pub const MIN_RATE_SPAN_SECS: i64 = 3600;
/// Uses a secret needs before `new_command` and `outside_exec` judge it: its baseline (the
/// first tools and ways a secret is used with are how it is used, not unusual).
pub const BASELINE_USES: u64 = 10;
/// How many earlier commands or labels a reason names.
const REASON_SAMPLE: usize = 6;
/// What a webhook signing secret is sealed as.
const WEBHOOK_SECRET: &str = "alerts/webhook_secret";

/// The sealing subject of a user's webhook signing secret.
pub fn webhook_subject(owner_id: i64) -> String {
    format!("alerts/webhook/{owner_id}")
}

/// The record kinds the rules look at: uses, and what the proxy, scanner and decoys report.
fn evaluated(action: AuditAction) -> bool {
    matches!(
        action,
        AuditAction::Injected
            | AuditAction::FileRead
            | AuditAction::Substituted
            | AuditAction::LeakAttempt
            | AuditAction::ScanFinding
            | AuditAction::DecoyRead
    )
}

/// The wire action of a stored record (the rules take the agent's vocabulary).
fn usage_action(action: AuditAction) -> UsageAction {
    match action {
        AuditAction::FileRead => UsageAction::FileRead,
        AuditAction::Substituted => UsageAction::Substituted,
        AuditAction::LeakAttempt => UsageAction::LeakAttempt,
        AuditAction::ScanFinding => UsageAction::ScanFinding,
        AuditAction::DecoyRead => UsageAction::DecoyRead,
        _ => UsageAction::Injected,
    }
}

/// What a batch's evaluation knows of one secret as it goes through the batch.
struct Running {
    settings: SecretAlertSettings,
    /// `None`: the history could not be read; its rules are skipped.
    profile: Option<Profile>,
    commands: HashSet<String>,
    labels: HashSet<String>,
    update: ProfileUpdate,
    /// Uses in the burst window, this batch's included.
    recent: u64,
}

/// One use as the rules see it (what [`Evaluation::prepare`] takes of a record).
pub struct Observed<'a> {
    pub record: &'a AuditRecord,
    pub outside_exec: Option<bool>,
}

/// A batch's alerts and profile updates, ready to be stored after its records.
#[derive(Default)]
pub struct Evaluation {
    alerts: Vec<AlertRecord>,
    updates: Vec<ProfileUpdate>,
}

impl Evaluation {
    /// Runs the rules on a batch of `session`'s records (in order). Never fails.
    pub async fn prepare(
        app: &App,
        session: &SessionRecord,
        batch: &[Observed<'_>],
        sandbox_uid: Option<u32>,
    ) -> Self {
        let now = clock::now();
        let user = match app.alerts.user_alert_settings(session.owner_id).await {
            Ok(u) => u,
            Err(e) => {
                warn!(error = %e, session = %session.id, "alert rules skipped: settings unreadable");
                return Self::default();
            }
        };
        let label = session.label.as_deref();
        let mut secrets: HashMap<String, Running> = HashMap::new();
        let mut out = Self::default();
        let mut raised: HashSet<(Option<String>, &'static str, Option<String>)> = HashSet::new();
        for observed in batch {
            let r = observed.record;
            if !evaluated(r.action) {
                continue;
            }
            let uses = r.count.unwrap_or(1);
            let name = r.secret_name.as_deref().unwrap_or("");
            let own_rule = match r.action {
                AuditAction::DecoyRead => Some("decoy"),
                AuditAction::LeakAttempt => Some("leak_attempt"),
                AuditAction::ScanFinding => Some("scan_finding"),
                _ => None,
            };
            if let Some(id) = &r.secret_id
                && !secrets.contains_key(id)
            {
                let running = gather(app, id, now).await;
                secrets.insert(id.clone(), running);
            }
            let flags = match (&r.secret_id, own_rule) {
                // What the proxy, the scanner and the decoys report is flagged by its own rule
                // only: it is no use of the secret by a command (and a decoy is no secret).
                (id, Some(rule)) => {
                    let u = use_of(r, name, sandbox_uid, label, observed.outside_exec);
                    let mut off: Vec<&str> =
                        wire_alerts::RULES.iter().copied().filter(|n| *n != rule).collect();
                    if let Some(s) = id.as_ref().and_then(|id| secrets.get(id)) {
                        off.extend(s.settings.rules_off.iter().map(String::as_str));
                    }
                    alert_rules::evaluate(&u, &History::default(), &off)
                }
                (Some(id), None) => {
                    let Some(s) = secrets.get_mut(id) else { continue };
                    // Taken out for the record's evaluation (and put back), not copied.
                    let profile = s.profile.take();
                    let flags = match &profile {
                        Some(profile) => {
                            let history = history_of(app, id, s, profile, r, label, now).await;
                            let u = use_of(r, name, sandbox_uid, label, observed.outside_exec);
                            let off: Vec<&str> =
                                s.settings.rules_off.iter().map(String::as_str).collect();
                            match history {
                                Some(h) => {
                                    let mut flags = alert_rules::evaluate(&u, &h, &off);
                                    // A burst is flagged when the minute crosses the limit, not
                                    // again for every use while it stays above it.
                                    let limit = alert_rules::BURST_FLOOR.max(
                                        alert_rules::BURST_FACTOR
                                            .saturating_mul(h.usual_per_minute),
                                    );
                                    if s.recent > limit {
                                        flags.retain(|f| f.rule != "burst");
                                    }
                                    flags
                                }
                                None => Vec::new(),
                            }
                        }
                        None => Vec::new(),
                    };
                    s.profile = profile;
                    s.note(r, uses, label, observed.outside_exec, now);
                    flags
                }
                (None, None) => Vec::new(),
            };
            let on_alert = match &r.secret_id {
                Some(id) => secrets.get(id).and_then(|s| s.settings.on_alert.clone()),
                None => None,
            }
            .unwrap_or_else(|| user.on_alert.clone());
            for flag in flags {
                let key = (r.secret_name.clone(), flag.rule, r.command.clone());
                if out.alerts.len() >= MAX_ALERTS_PER_BATCH || !raised.insert(key) {
                    continue;
                }
                let notify = on_alert.contains(&AlertAction::Notify) && user.webhook_url.is_some();
                let alert = AlertRecord {
                    id: 0,
                    owner_id: session.owner_id,
                    at: now,
                    rule: flag.rule.to_owned(),
                    reason: flag.reason,
                    secret_id: r.secret_id.clone(),
                    secret_name: r.secret_name.clone(),
                    session_id: Some(session.id.clone()),
                    command: r.command.clone(),
                    uid: r.uid,
                    actions: on_alert.clone(),
                    acked_at: None,
                    webhook: if notify { WebhookState::Pending } else { WebhookState::None },
                    attempts: 0,
                };
                // A repeat of an alert already raised (and not acknowledged) is not raised
                // again: a process that keeps doing the odd thing is one alert, not one a batch.
                match app.alerts.has_similar_alert(&alert, now - REPEAT_WINDOW_SECS).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "could not look for a similar alert; raising it"),
                }
                info!(session = %session.id, rule = flag.rule, "usage flagged");
                out.alerts.push(alert);
            }
        }
        out.updates = secrets.into_values().map(|s| s.update).filter(|u| u.uses > 0).collect();
        out
    }

    /// The alerts this evaluation raised (not stored yet).
    pub fn alerts(&self) -> &[AlertRecord] {
        &self.alerts
    }

    /// Stores the profiles and alerts (after the batch's records are committed) and takes
    /// the alerts' actions. Never fails: what goes wrong is logged.
    pub async fn apply(self, app: &App, session: &SessionRecord) {
        if self.updates.is_empty() && self.alerts.is_empty() {
            return;
        }
        if let Err(e) = app.alerts.record_uses(&self.updates, &self.alerts).await {
            warn!(error = %e, session = %session.id, "could not store usage profiles and alerts");
            return;
        }
        take_actions(app, session, &self.alerts).await;
    }
}

/// The rules' view of one record.
fn use_of<'a>(
    r: &'a AuditRecord,
    name: &'a str,
    sandbox_uid: Option<u32>,
    label: Option<&'a str>,
    outside_exec: Option<bool>,
) -> Use<'a> {
    Use {
        secret: name,
        action: usage_action(r.action),
        command: r.command.as_deref(),
        uid: r.uid,
        sandbox_uid,
        session_label: label.unwrap_or(""),
        outside_exec,
    }
}

/// Reads a secret's settings and profile; a failure is logged and leaves `profile` empty.
async fn gather(app: &App, secret_id: &str, now: i64) -> Running {
    let settings = match app.alerts.secret_alert_settings(secret_id).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "alert settings unreadable; the secret's rules are skipped");
            return Running::new(secret_id, SecretAlertSettings::default(), None, now);
        }
    };
    let profile = match app.alerts.profile(secret_id, now - BURST_WINDOW_SECS).await {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(error = %e, "usage history unreadable; the secret's rules are skipped");
            None
        }
    };
    Running::new(secret_id, settings, profile, now)
}

impl Running {
    fn new(
        secret_id: &str,
        settings: SecretAlertSettings,
        profile: Option<Profile>,
        now: i64,
    ) -> Self {
        let recent = profile.as_ref().map_or(0, |p| p.recent_uses);
        let (commands, labels) = match &profile {
            Some(p) => (p.commands.iter().cloned().collect(), p.labels.iter().cloned().collect()),
            None => (HashSet::new(), HashSet::new()),
        };
        Self {
            settings,
            profile,
            commands,
            labels,
            update: ProfileUpdate {
                secret_id: secret_id.to_owned(),
                first_at: now,
                ..Default::default()
            },
            recent,
        }
    }

    /// Adds a record to what the rest of the batch sees as history.
    fn note(
        &mut self,
        r: &AuditRecord,
        uses: u64,
        label: Option<&str>,
        outside_exec: Option<bool>,
        now: i64,
    ) {
        self.update.first_at = self.update.first_at.min(r.at);
        self.update.uses = self.update.uses.saturating_add(uses);
        if outside_exec == Some(true) {
            self.update.outside_exec_reads = self.update.outside_exec_reads.saturating_add(uses);
        }
        if r.at >= now - BURST_WINDOW_SECS
            || r.last_at.is_some_and(|l| l >= now - BURST_WINDOW_SECS)
        {
            self.recent = self.recent.saturating_add(uses);
        }
        if let Some(cmd) = &r.command
            && self.commands.insert(cmd.clone())
        {
            self.update.commands.push(cmd.clone());
        }
        if let Some(l) = label
            && self.labels.insert(l.to_owned())
        {
            self.update.labels.push(l.to_owned());
        }
    }
}

/// The history the rules see for record `r` of secret `id`, or `None` (logged) when part of
/// it cannot be read.
async fn history_of(
    app: &App,
    id: &str,
    s: &mut Running,
    profile: &Profile,
    r: &AuditRecord,
    label: Option<&str>,
    now: i64,
) -> Option<History> {
    let used_before = profile.uses.saturating_add(s.update.uses) >= BASELINE_USES;
    // The sample names what was seen; whether this command or label was is one more lookup.
    let lookups = async {
        let command = match profile.commands_complete {
            true => None,
            false => known(app, id, "command", r.command.as_deref(), &s.commands).await?,
        };
        let label = match profile.labels_complete {
            true => None,
            false => known(app, id, "label", label, &s.labels).await?,
        };
        Ok::<_, crate::store::StoreError>((command, label))
    };
    let (extra_command, extra_label) = match lookups.await {
        Ok(found) => found,
        Err(e) => {
            warn!(error = %e, "usage history unreadable; this record's rules are skipped");
            return None;
        }
    };
    if let Some(c) = extra_command {
        s.commands.insert(c);
    }
    if let Some(l) = extra_label {
        s.labels.insert(l);
    }
    // What the rules need: a few for the reason, and this command / label when it was seen.
    let shown = |all: &[String], current: Option<&str>, set: &HashSet<String>| {
        let mut v: Vec<String> = all.iter().take(REASON_SAMPLE).cloned().collect();
        if let Some(c) = current
            && set.contains(c)
            && !v.iter().any(|x| x == c)
        {
            v.push(c.to_owned());
        }
        v
    };
    let commands = shown(&profile.commands, r.command.as_deref(), &s.commands);
    let labels = shown(&profile.labels, label, &s.labels);
    let first = profile.first_at.unwrap_or(now).min(s.update.first_at);
    let span_minutes = u64::try_from((now - first).max(MIN_RATE_SPAN_SECS) / 60).unwrap_or(1);
    let total = profile.uses.saturating_add(s.update.uses);
    Some(History {
        commands,
        labels,
        // The rule counts this record as one use; a coalesced record stands for `count`.
        last_minute: s.recent.saturating_add(r.count.unwrap_or(1).saturating_sub(1)),
        usual_per_minute: total.div_ceil(span_minutes.max(1)),
        only_through_exec: profile.outside_exec_reads == 0 && s.update.outside_exec_reads == 0,
        used_before,
    })
}

/// `value` when it was seen as `what` with the secret before (and is not in `set` already).
async fn known(
    app: &App,
    id: &str,
    what: &str,
    value: Option<&str>,
    set: &HashSet<String>,
) -> Result<Option<String>, crate::store::StoreError> {
    match value {
        Some(v) if !set.contains(v) => {
            Ok(app.alerts.seen(id, what, v).await?.then(|| v.to_owned()))
        }
        _ => Ok(None),
    }
}

/// Takes the actions of stored alerts: each session is ended at most once, each secret
/// deactivated in it at most once; `notify` wakes the webhook task.
async fn take_actions(app: &App, session: &SessionRecord, alerts: &[AlertRecord]) {
    let mut end = None;
    let mut deactivate: Vec<(String, String, &'static str)> = Vec::new();
    let mut notify = false;
    for a in alerts {
        for action in &a.actions {
            match action {
                AlertAction::EndSession => end = end.or(Some(a.rule.clone())),
                AlertAction::Deactivate => {
                    if let (Some(id), Some(name)) = (&a.secret_id, &a.secret_name)
                        && !deactivate.iter().any(|(i, _, _)| i == id)
                    {
                        deactivate.push((id.clone(), name.clone(), "alert"));
                    }
                }
                AlertAction::Notify => notify |= a.webhook == WebhookState::Pending,
            }
        }
    }
    if notify {
        app.webhook_wake.notify_one();
    }
    if let Some(rule) = end {
        // Ending clears every activation, so nothing is left to deactivate.
        match sessions::end(app, &session.id, &format!("alert: {rule}")).await {
            Ok(_) => info!(session = %session.id, rule, "session ended by an alert"),
            Err(e) => {
                warn!(error = %e.message, session = %session.id, "could not end a session on an alert")
            }
        }
        return;
    }
    if !deactivate.is_empty()
        && let Err(e) = deactivate_in(app, session, &deactivate).await
    {
        warn!(error = %e.message, session = %session.id, "could not deactivate on an alert");
    }
}

/// Deactivates secrets in a session on an alert (those still active there).
async fn deactivate_in(
    app: &App,
    session: &SessionRecord,
    secrets: &[(String, String, &'static str)],
) -> DomainResult<()> {
    let _serialized = app.activation_lock.lock().await;
    let _across_brokers = app.store.lock_owner(session.owner_id).await?;
    let active: HashSet<String> =
        app.store.active_secrets(&session.id).await?.into_iter().map(|s| s.id).collect();
    let now = clock::now();
    let removed: Vec<&(String, String, &'static str)> =
        secrets.iter().filter(|(id, _, _)| active.contains(id)).collect();
    if removed.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = removed.iter().map(|(id, _, _)| id.clone()).collect();
    let audit: Vec<AuditRecord> = removed
        .iter()
        .map(|(id, name, why)| AuditRecord {
            secret_id: Some(id.clone()),
            secret_name: Some(name.clone()),
            session_id: Some(session.id.clone()),
            detail: Some((*why).to_owned()),
            ..AuditRecord::new(session.owner_id, now, AuditAction::Deactivated)
        })
        .collect();
    match app.store.change_activations(&session.id, &[], &ids, now, &audit).await {
        Ok(()) => {}
        Err(crate::store::StoreError::SessionEnded) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    for (_, name, _) in removed {
        app.hub.publish(&session.id, AgentEvent::Deactivated { name: name.clone() });
        info!(session = %session.id, secret = %name, "secret deactivated by an alert");
    }
    Ok(())
}

// Settings.

/// Checks a list of rule names to turn off.
pub fn check_rules_off(rules: &[String]) -> DomainResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for r in rules {
        if !wire_alerts::is_rule(r) {
            return Err(DomainError::bad_request(format!(
                "'{}' is not an alert rule; the rules are {}",
                r.chars().take(64).collect::<String>().escape_default(),
                wire_alerts::RULES.join(", ")
            )));
        }
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// A list of actions without repeats, in a stable order.
pub fn actions_set(actions: &[AlertAction]) -> Vec<AlertAction> {
    let mut out = actions.to_vec();
    out.sort();
    out.dedup();
    out
}

/// Stores a secret's alert settings from a create or edit (the fields it names).
pub async fn set_secret_settings(
    app: &App,
    secret_id: &str,
    rules_off: Option<Vec<String>>,
    on_alert: Option<Option<Vec<AlertAction>>>,
) -> DomainResult<()> {
    if rules_off.is_none() && on_alert.is_none() {
        return Ok(());
    }
    let mut settings = app.alerts.secret_alert_settings(secret_id).await?;
    if let Some(r) = rules_off {
        settings.rules_off = r;
    }
    if let Some(a) = on_alert {
        settings.on_alert = a;
    }
    app.alerts.put_secret_alert_settings(secret_id, &settings).await?;
    Ok(())
}

/// What [`crate::domain::meta`] shows of a secret's alerts: unacknowledged count, rules off,
/// own actions.
pub async fn secret_view(
    app: &App,
    owner_id: i64,
    secret_id: &str,
    name: &str,
) -> DomainResult<(u64, SecretAlertSettings)> {
    let count = app
        .alerts
        .unacked_alerts(owner_id)
        .await?
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, c)| c);
    Ok((count, app.alerts.secret_alert_settings(secret_id).await?))
}

/// The user's alert defaults as they see them (never the signing secret).
pub async fn config(app: &App, user: &UserRecord) -> DomainResult<AlertConfig> {
    let s = app.alerts.user_alert_settings(user.id).await?;
    Ok(AlertConfig {
        webhook_url: s.webhook_url,
        webhook_secret_set: s.webhook_secret.is_some(),
        on_alert: s.on_alert,
    })
}

/// Changes the user's alert defaults: everything is checked before anything is stored.
pub async fn set_config(
    app: &App,
    user: &UserRecord,
    body: AlertConfigUpdate,
) -> DomainResult<AlertConfig> {
    let mut s = app.alerts.user_alert_settings(user.id).await?;
    let url = match body.webhook_url.as_deref() {
        Some("") => Some(None),
        Some(url) => Some(Some(super::webhook::check_url(url)?)),
        None => None,
    };
    if let Some(secret) = &body.webhook_secret {
        check_signing_secret(secret)?;
    }
    let mut new_key = None;
    match url {
        Some(None) => {
            if body.webhook_secret.is_some() {
                return Err(DomainError::bad_request(
                    "a signing secret needs a webhook URL; give --webhook too",
                ));
            }
            s.webhook_url = None;
            s.data_key_id = None;
            s.wrapped_key = None;
            s.webhook_secret = None;
        }
        Some(Some(url)) => {
            if body.webhook_secret.is_none() && s.webhook_secret.is_none() {
                return Err(DomainError::bad_request(
                    "a webhook needs a signing secret; give one with --webhook-secret-stdin",
                ));
            }
            s.webhook_url = Some(url);
        }
        None => {
            if body.webhook_secret.is_some() && s.webhook_url.is_none() {
                return Err(DomainError::bad_request(
                    "a signing secret needs a webhook URL; give --webhook too",
                ));
            }
        }
    }
    if let Some(secret) = &body.webhook_secret {
        let internal =
            |e: &dyn std::fmt::Display| DomainError::internal("sealing a signing secret", e);
        let subject = webhook_subject(user.id);
        let (key_id, key, wrapped) = crate::oauth::sealing::new_key(&app.master, user.id, &subject)
            .map_err(|e| internal(&e))?;
        s.generation = s.generation.saturating_add(1);
        let sealed = crate::oauth::sealing::seal(
            &key,
            user.id,
            &subject,
            s.generation,
            WEBHOOK_SECRET,
            secret,
        )
        .map_err(|e| internal(&e))?;
        s.data_key_id = Some(key_id.clone());
        s.webhook_secret = Some(sealed);
        new_key = Some((key_id, wrapped));
    }
    if let Some(actions) = &body.on_alert {
        s.on_alert = actions_set(actions);
    }
    let key = new_key.as_ref().map(|(id, w)| (id.as_str(), w.as_slice()));
    app.alerts.put_user_alert_settings(&s, key).await?;
    info!(user = %user.name, "alert settings changed");
    config(app, user).await
}

fn check_signing_secret(secret: &SecretValue) -> DomainResult<()> {
    let len = secret.expose().len();
    if !(MIN_WEBHOOK_SECRET_BYTES..=MAX_WEBHOOK_SECRET_BYTES).contains(&len) {
        return Err(DomainError::bad_request(format!(
            "a webhook signing secret is {MIN_WEBHOOK_SECRET_BYTES} to {MAX_WEBHOOK_SECRET_BYTES} bytes; this one is {len}"
        )));
    }
    Ok(())
}

/// The signing secret of `owner_id`'s webhook, opened.
pub fn open_signing_secret(
    app: &App,
    s: &crate::store::alerts::UserAlertSettings,
) -> Result<Option<SecretValue>, String> {
    let (Some(key_id), Some(wrapped), Some(blob)) =
        (&s.data_key_id, &s.wrapped_key, &s.webhook_secret)
    else {
        return Ok(None);
    };
    let subject = webhook_subject(s.owner_id);
    let key = crate::oauth::sealing::open_key(&app.master, key_id, s.owner_id, &subject, wrapped)
        .map_err(|e| e.to_string())?;
    crate::oauth::sealing::open(&key, s.owner_id, &subject, s.generation, WEBHOOK_SECRET, blob)
        .map(Some)
        .map_err(|e| e.to_string())
}

// Listing.

/// An alert as its owner sees it.
pub fn to_alert(a: &AlertRecord, labels: &HashMap<String, Option<String>>) -> Alert {
    Alert {
        id: a.id,
        at: clock::rfc3339(a.at),
        rule: a.rule.clone(),
        reason: a.reason.clone(),
        secret: a.secret_name.clone(),
        session_id: a.session_id.clone(),
        session_label: a.session_id.as_ref().and_then(|s| labels.get(s).cloned().flatten()),
        command: a.command.clone(),
        uid: a.uid,
        actions: a.actions.clone(),
        webhook: a.webhook.as_str().to_owned(),
        acked_at: a.acked_at.map(clock::rfc3339),
    }
}

/// `GET /v1/alerts`'s filters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub secret: Option<String>,
    /// A session id, unique id prefix or label.
    pub session: Option<String>,
    /// `1`/`true`: only alerts not acknowledged.
    pub unacked: Option<bool>,
    pub before: Option<i64>,
    pub limit: Option<u32>,
}

/// A user's alerts, newest first.
pub async fn list(app: &App, user: &UserRecord, q: ListQuery) -> DomainResult<Vec<Alert>> {
    let sessions = app.store.list_sessions(user.id).await?;
    let session_ids = match q.session.as_deref() {
        Some(wanted) => Some(super::history::resolve_session(&sessions, wanted)?),
        None => None,
    };
    if let Some(name) = &q.secret {
        super::validate::check_name(name)?;
    }
    let limit = i64::from(q.limit.unwrap_or(100).clamp(1, wire_alerts::MAX_ALERTS_PAGE));
    let labels: HashMap<String, Option<String>> =
        sessions.iter().map(|s| (s.id.clone(), s.label.clone())).collect();
    let mut out = Vec::new();
    let ids: Vec<Option<String>> = match session_ids {
        Some(ids) => ids.into_iter().map(Some).collect(),
        None => vec![None],
    };
    for session_id in ids {
        let query = AlertQuery {
            owner_id: user.id,
            secret_name: q.secret.clone(),
            session_id,
            unacked_only: q.unacked.unwrap_or(false),
            before: q.before,
            limit,
        };
        out.extend(app.alerts.alerts(&query).await?.iter().map(|a| to_alert(a, &labels)));
    }
    out.sort_by_key(|a| std::cmp::Reverse(a.id));
    out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(out)
}

/// Acknowledges alerts of `user`'s: those not acknowledged yet; the ids of other users'
/// alerts are skipped (answered like missing ones).
pub async fn ack(app: &App, user: &UserRecord, ids: &[i64]) -> DomainResult<Vec<i64>> {
    if ids.is_empty() || ids.len() > wire_alerts::MAX_ALERTS_PAGE as usize {
        return Err(DomainError::bad_request(format!(
            "acknowledge 1 to {} alerts at once",
            wire_alerts::MAX_ALERTS_PAGE
        )));
    }
    let acked = app.alerts.ack_alerts(user.id, ids, clock::now()).await?;
    if acked.is_empty() {
        return Err(DomainError::not_found(
            "no alert of yours with that id is waiting to be acknowledged; see maestro alerts ls",
        ));
    }
    info!(user = %user.name, count = acked.len(), "alerts acknowledged");
    Ok(acked)
}
