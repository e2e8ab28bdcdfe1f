//! The agent's side of the rules: enrollment and renewal of a session's certificate, the
//! material of active secrets (each fetch recorded before the values go out), and usage
//! reports, which must name a secret once active in the session and a time within its life.
//! The session always comes from the client certificate ([`AgentSession`]), never from the
//! request; how the certificate reaches here is the HTTP layer's business.

use std::collections::HashMap;

use maestro_wire::agent_api::{
    CertIssued, EnrollRequest, MaterialSet, RenewRequest, SecretMaterial, UsageAccepted,
    UsageAction,
};
use maestro_wire::api::{AuditAction, ErrorCode};
use maestro_wire::limits::{MAX_CERT_TTL_SECS, MAX_DESCRIPTION_BYTES, MAX_USAGE_BATCH};
use tracing::{info, warn};
use x509_parser::extensions::GeneralName;

use super::alerts::{Evaluation, Observed};
use super::error::{DomainError, DomainResult};
use super::material;
use super::validate::check_name;
use crate::app::App;
use crate::ca::CaError;
use crate::clock;
use crate::store::{ActiveMaterial, AuditRecord, CertificateRecord, SessionRecord};
use crate::tokens;

/// The session whose certificate the client presented.
#[derive(Debug, Clone)]
pub struct AgentSession {
    pub session: SessionRecord,
    /// When the presented certificate expires (unix seconds).
    pub cert_not_after: i64,
    /// Whether the presented certificate is the session's newest (not one in its overlap
    /// after a renewal).
    pub cert_is_newest: bool,
}

/// What a client certificate says, before the session is looked up.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub session_id: String,
    pub not_after: i64,
    /// The serial, lower-case hex (as the CA records it).
    pub serial: String,
}

/// Reads the session id and expiry from a DER certificate.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, DomainError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| DomainError::unauthorized("the client certificate cannot be parsed"))?;
    let san = cert.subject_alternative_name().ok().flatten().ok_or_else(|| {
        DomainError::unauthorized("the client certificate names no Maestro session (no URI SAN)")
    })?;
    let mut sessions = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => uri.strip_prefix(maestro_wire::SESSION_URI_PREFIX),
        _ => None,
    });
    let session_id = match (sessions.next(), sessions.next()) {
        (Some(id), None) if !id.is_empty() => id.to_owned(),
        _ => {
            return Err(DomainError::unauthorized(
                "the client certificate must name exactly one Maestro session",
            ));
        }
    };
    Ok(PeerIdentity {
        session_id,
        not_after: cert.validity().not_after.timestamp(),
        serial: hex::encode(cert.raw_serial()),
    })
}

/// How long after its session ended an agent may still upload usage reports: the last reads
/// before teardown belong in the audit trail. Nothing else is served to an ended session.
pub const USAGE_GRACE_SECS: i64 = 60;

/// Records a refused certificate, within the session's quota of records
/// ([`crate::quota`]): a copy of an old certificate must not be a way to flood the trail.
async fn record_denial(app: &App, record: &AuditRecord) {
    let Some(session) = record.session_id.as_deref() else { return };
    if app.usage_quota.take(session, 1).is_err() {
        return;
    }
    if let Err(e) = app.store.append_audit(std::slice::from_ref(record)).await {
        warn!(error = %e, "could not record a denied request");
    }
}

/// Authenticates a client certificate (DER; already verified against our CA by the TLS
/// layer) used for `path`, and its session; `grace` seconds after the session
/// ended, it is still accepted (0: only live sessions).
pub async fn authenticate(
    app: &App,
    leaf: &[u8],
    path: &str,
    grace: i64,
) -> DomainResult<AgentSession> {
    let peer = peer_identity(leaf)?;
    let now = clock::now();
    if peer.not_after <= now {
        return Err(DomainError::unauthorized(format!(
            "the client certificate expired at {}; renew it before it expires (POST /v1/agent/renew)",
            clock::rfc3339(peer.not_after)
        )));
    }
    let session = app.store.session(&peer.session_id).await?.ok_or_else(|| {
        warn!(session = %peer.session_id, "certificate for an unknown session");
        DomainError::unauthorized("the client certificate names an unknown session")
    })?;
    let ended_at = session.ended_at.unwrap_or(session.expires_at);
    let within_grace = grace > 0 && now - ended_at <= grace;
    if !session.is_live(now) && !within_grace {
        let record = AuditRecord {
            session_id: Some(session.id.clone()),
            detail: Some(format!("ended session's certificate used for {}", path)),
            ..AuditRecord::new(session.owner_id, now, AuditAction::Denied)
        };
        record_denial(app, &record).await;
        info!(session = %session.id, "refused an ended session's certificate");
        return Err(DomainError::forbidden(format!(
            "session {} has ended; its certificate is no longer accepted",
            session.id
        )));
    }
    if !session.serials.accepts(&peer.serial, now) {
        let record = AuditRecord {
            session_id: Some(session.id.clone()),
            detail: Some(format!("retired certificate {} used for {}", peer.serial, path)),
            ..AuditRecord::new(session.owner_id, now, AuditAction::Denied)
        };
        record_denial(app, &record).await;
        info!(session = %session.id, serial = %peer.serial, "refused a retired certificate");
        return Err(DomainError::unauthorized(
            "this client certificate was replaced by a renewal and is no longer accepted; use the newest certificate of the session",
        ));
    }
    let cert_is_newest = session.serials.current.as_deref() == Some(peer.serial.as_str());
    Ok(AgentSession { session, cert_not_after: peer.not_after, cert_is_newest })
}

/// Longest command name kept from a usage report.
const MAX_COMMAND_BYTES: usize = 256;

fn ca_failure(e: CaError) -> DomainError {
    match e {
        CaError::CsrTooLarge { .. } => DomainError::new(ErrorCode::TooLarge, e.to_string()),
        CaError::BadCsr(_) => DomainError::bad_request(e.to_string()),
        CaError::NoTimeLeft => {
            DomainError::forbidden("the session expires now; create a new session")
        }
        other => DomainError::internal("signing a certificate", &other),
    }
}

/// Signs a certificate for `session` and describes it for the answer.
fn issue(
    app: &App,
    session: &SessionRecord,
    csr_pem: &str,
    now: i64,
    reason: &'static str,
) -> DomainResult<(CertIssued, CertificateRecord)> {
    let ttl = i64::try_from(app.settings.cert_ttl.as_secs()).unwrap_or(i64::MAX);
    let not_after =
        session.expires_at.min(now + MAX_CERT_TTL_SECS as i64).min(now.saturating_add(ttl));
    let issued = app.ca.sign_session(csr_pem, &session.id, now, not_after).map_err(ca_failure)?;
    let record = CertificateRecord {
        serial: issued.serial.clone(),
        session_id: session.id.clone(),
        not_before: issued.not_before,
        not_after: issued.not_after,
        issued_at: now,
        reason,
    };
    let answer = CertIssued {
        session_id: session.id.clone(),
        cert_pem: issued.cert_pem,
        ca_pem: app.ca.cert_pem().to_owned(),
        not_after: clock::rfc3339(issued.not_after),
        lease_seconds: app.settings.lease_seconds(),
    };
    Ok((answer, record))
}

fn invalid_token(message: String) -> DomainError {
    DomainError::new(ErrorCode::InvalidToken, message)
}

/// Enrollment: a one-time token and a CSR make the session's first certificate. A reused or
/// expired token is refused and recorded.
pub async fn enroll(app: &App, body: EnrollRequest) -> DomainResult<CertIssued> {
    let hash = tokens::hash(body.token.expose());
    let now = clock::now();
    let token = app.store.enrollment(&hash).await?.ok_or_else(|| {
        invalid_token(
            "the enrollment token is not valid; use the token from `maestro sessions create` (or its --bundle-out file)"
                .to_owned(),
        )
    })?;
    let session =
        app.store.session(&token.session_id).await?.ok_or_else(|| {
            DomainError::internal("enrolling", &"enrollment token without a session")
        })?;
    let deny = |detail: &str| AuditRecord {
        session_id: Some(session.id.clone()),
        detail: Some(detail.to_owned()),
        ..AuditRecord::new(session.owner_id, now, AuditAction::Denied)
    };
    if let Some(used) = token.used_at {
        app.store.append_audit(&[deny("enrollment token reused")]).await?;
        info!(session = %session.id, "refused a reused enrollment token");
        return Err(invalid_token(format!(
            "the enrollment token was already used at {}; a token enrolls one agent once: create a new session",
            clock::rfc3339(used)
        )));
    }
    if token.expires_at <= now {
        app.store.append_audit(&[deny("enrollment token expired")]).await?;
        return Err(invalid_token(format!(
            "the enrollment token expired at {} (tokens are valid for 10 minutes); create a new session",
            clock::rfc3339(token.expires_at)
        )));
    }
    if !session.is_live(now) {
        return Err(DomainError::forbidden(format!(
            "session {} has ended; it cannot enroll an agent",
            session.id
        )));
    }
    let (answer, record) = issue(app, &session, &body.csr_pem, now, "enroll")?;
    let audit = AuditRecord {
        session_id: Some(session.id.clone()),
        detail: Some(format!("certificate {} until {}", record.serial, answer.not_after)),
        ..AuditRecord::new(session.owner_id, now, AuditAction::Enrolled)
    };
    app.store.complete_enrollment(&hash, now, &record, &audit).await?;
    info!(session = %session.id, serial = %record.serial, "agent enrolled");
    Ok(answer)
}

/// Renewal: a fresh certificate for the same session, from its newest certificate only; the
/// one it replaces stays accepted for `--renew-overlap`.
pub async fn renew(
    app: &App,
    agent: &AgentSession,
    body: RenewRequest,
) -> DomainResult<CertIssued> {
    let now = clock::now();
    if !agent.cert_is_newest {
        // A certificate in its overlap was already replaced: renewing with it would let a
        // copy of an old certificate live on.
        return Err(DomainError::forbidden(
            "this certificate was already replaced by a renewal; renew with the newest certificate",
        ));
    }
    let (answer, record) = issue(app, &agent.session, &body.csr_pem, now, "renew")?;
    let audit = AuditRecord {
        session_id: Some(agent.session.id.clone()),
        detail: Some(format!("certificate {} renewed until {}", record.serial, answer.not_after)),
        ..AuditRecord::new(agent.session.owner_id, now, AuditAction::Enrolled)
    };
    let overlap = i64::try_from(app.settings.renew_overlap.as_secs()).unwrap_or(i64::MAX);
    app.store.record_certificate(&record, now.saturating_add(overlap), &audit).await?;
    info!(session = %agent.session.id, serial = %record.serial, "certificate renewed");
    Ok(answer)
}

/// Records that `session`'s agent fetched these secrets (the records the caller already holds,
/// so no lookup by name is needed). Returns once the records are committed: the values go out
/// only after that.
async fn fetched(
    app: &App,
    session: &SessionRecord,
    active: &[ActiveMaterial],
) -> DomainResult<()> {
    let now = clock::now();
    let records: Vec<AuditRecord> = active
        .iter()
        .map(|a| AuditRecord {
            secret_id: Some(a.secret.id.clone()),
            secret_name: Some(a.secret.name.clone()),
            session_id: Some(session.id.clone()),
            ..AuditRecord::new(session.owner_id, now, AuditAction::Fetched)
        })
        .collect();
    app.store.append_audit(&records).await?;
    Ok(())
}

/// The values of every secret active in the agent's session, recorded as fetched.
pub async fn all_material(app: &App, agent: &AgentSession) -> DomainResult<MaterialSet> {
    let active = app.store.active_material(&agent.session.id, None).await?;
    let mut out = Vec::with_capacity(active.len());
    for secret in &active {
        out.push(material::material(app, secret, &agent.session.id).await?);
    }
    fetched(app, &agent.session, &active).await?;
    Ok(MaterialSet { secrets: out })
}

/// The values of one secret active in the agent's session; asking for another is refused
/// and recorded.
pub async fn one_material(
    app: &App,
    agent: &AgentSession,
    name: &str,
) -> DomainResult<SecretMaterial> {
    check_name(name)?;
    let active = app.store.active_material(&agent.session.id, Some(name)).await?;
    let Some(secret) = active.first() else {
        let record = AuditRecord {
            secret_name: Some(name.to_owned()),
            session_id: Some(agent.session.id.clone()),
            detail: Some("material of a secret not active in this session".to_owned()),
            ..AuditRecord::new(agent.session.owner_id, clock::now(), AuditAction::Denied)
        };
        app.store.append_audit(std::slice::from_ref(&record)).await?;
        return Err(DomainError::not_found(format!("secret {name} is not active in this session")));
    };
    let material = material::material(app, secret, &agent.session.id).await?;
    fetched(app, &agent.session, std::slice::from_ref(secret)).await?;
    Ok(material)
}

/// Printable text of at most `max` bytes (control characters become `?`).
fn clean(text: Option<String>, what: &str, max: usize) -> DomainResult<Option<String>> {
    match text {
        Some(t) if t.len() > max => Err(DomainError::new(
            ErrorCode::TooLarge,
            format!("a usage report's {what} is {} bytes; the limit is {max}", t.len()),
        )),
        Some(t) => Ok(Some(t.chars().map(|c| if c.is_control() { '?' } else { c }).collect())),
        None => Ok(None),
    }
}

/// How far a usage report's time may be ahead of the broker's clock, or before its session
/// was created: clocks of sandbox and broker differ a little (the same allowance as the
/// backdating of certificates).
pub const USAGE_CLOCK_SKEW_SECS: i64 = crate::ca::BACKDATE_SECS;

/// Longest executable path kept from a usage report.
const MAX_EXE_BYTES: usize = 4096;
/// Most uses one coalesced report may stand for.
const MAX_USE_COUNT: u64 = 1 << 40;

/// One usage report as the broker reads it: the wire type itself, whose optional fields of a
/// coalesced report (`count`, `last_at`) and of its process (`exe`, `claimed_command`) may be
/// absent (a report without them is one use of `command`).
pub type IncomingReport = maestro_wire::agent_api::UsageReport;

/// `POST /v1/agent/usage`'s body, as the broker reads it.
pub type IncomingBatch = maestro_wire::agent_api::UsageBatch;

/// Why a usage batch is refused: the message, and what the audit trail records of it.
struct Refusal {
    code: ErrorCode,
    /// Whether it is worth an audit record: not a malformed report, but one about another
    /// secret or another time than this session's.
    suspicious: bool,
    message: String,
    detail: String,
}

/// Checks one report against its session: a secret that was activated in it (at any time:
/// a read may be in flight when it is deactivated) and a time within the session's life.
/// Returns the time to record and the secret's id.
fn check_report(
    i: usize,
    report: &IncomingReport,
    session: &SessionRecord,
    history: &HashMap<String, Option<String>>,
    now: i64,
) -> Result<Checked, Refusal> {
    let n = i + 1;
    let malformed = |what: &str| Refusal {
        code: ErrorCode::BadRequest,
        suspicious: false,
        message: format!("usage report {n} {what}"),
        detail: format!("usage report that {what}"),
    };
    let at = clock::parse_rfc3339(&report.at)
        .ok_or_else(|| malformed("has a time that is not RFC 3339"))?;
    let last_at = match &report.last_at {
        Some(text) => Some(
            clock::parse_rfc3339(text)
                .filter(|last| *last >= at)
                .ok_or_else(|| malformed("has a last_at that is not an RFC 3339 time after at"))?,
        ),
        None => None,
    };
    if report.count.is_some_and(|c| c == 0 || c > MAX_USE_COUNT) {
        return Err(malformed("has a count that is not between 1 and 2^40"));
    }
    check_time(n, at, session, now)?;
    if let Some(last) = last_at {
        check_time(n, last, session, now)?;
    }
    let secret_id = match &report.secret {
        // A decoy read of a session with decoys (the caller dropped the others): the decoy is
        // no secret of the user's.
        Some(_) if report.action == UsageAction::DecoyRead => None,
        Some(name) => match history.get(name) {
            Some(id) => id.clone(),
            None => {
                return Err(Refusal {
                    code: ErrorCode::Forbidden,
                    suspicious: true,
                    message: format!(
                        "usage report {n} names secret {name}, which was never active in session {}; an agent reports only its own session's secrets",
                        session.id
                    ),
                    detail: format!("usage report for {name}, never active in this session"),
                });
            }
        },
        None => None,
    };
    Ok(Checked { at: at.min(now), last_at: last_at.map(|l| l.min(now)), secret_id })
}

/// What [`check_report`] found good.
struct Checked {
    at: i64,
    last_at: Option<i64>,
    secret_id: Option<String>,
}

/// A report's time must fall within its session's life (with [`USAGE_CLOCK_SKEW_SECS`]).
fn check_time(n: usize, at: i64, session: &SessionRecord, now: i64) -> Result<(), Refusal> {
    if at < session.created_at - USAGE_CLOCK_SKEW_SECS {
        return Err(Refusal {
            code: ErrorCode::BadRequest,
            suspicious: true,
            message: format!(
                "usage report {n} is dated {}, before session {} was created ({}); reports must fall within the session's life",
                clock::rfc3339(at),
                session.id,
                clock::rfc3339(session.created_at)
            ),
            detail: format!("usage report dated {} before the session began", clock::rfc3339(at)),
        });
    }
    if at > now + USAGE_CLOCK_SKEW_SECS {
        return Err(Refusal {
            code: ErrorCode::BadRequest,
            suspicious: true,
            message: format!(
                "usage report {n} is dated {}, in the future (the broker's clock says {}); check the sandbox's clock",
                clock::rfc3339(at),
                clock::rfc3339(now)
            ),
            detail: format!("usage report dated {} in the future", clock::rfc3339(at)),
        });
    }
    Ok(())
}

/// Whether a decoy read is one to record: it names a decoy and the session has decoys.
/// Anything else claiming to be one is dropped and logged (an agent of a session without
/// decoys has nothing to report, and a real secret's read is not a decoy's).
fn decoy_read_accepted(session: &SessionRecord, report: &IncomingReport) -> bool {
    let name = report.secret.as_deref().unwrap_or("");
    let accepted = session.decoys && maestro_wire::decoys::decoy(name).is_some();
    if !accepted {
        warn!(
            session = %session.id,
            decoys = session.decoys,
            "ignored a decoy read report that names no decoy of this session"
        );
    }
    accepted
}

/// `POST /v1/agent/usage`: a batch of uses, recorded in one transaction (all or none). Only
/// reports about this session are accepted: secrets activated in it, times within its life;
/// a batch with any other is refused whole and the attempt recorded as denied. Each session
/// has a quota of records ([`crate::quota`]).
pub async fn usage(
    app: &App,
    agent: &AgentSession,
    batch: IncomingBatch,
) -> DomainResult<UsageAccepted> {
    if batch.reports.len() > MAX_USAGE_BATCH {
        return Err(DomainError::new(
            ErrorCode::TooMany,
            format!(
                "a usage batch holds at most {MAX_USAGE_BATCH} reports; this one has {}",
                batch.reports.len()
            ),
        ));
    }
    let session = &agent.session;
    let now = clock::now();
    let history: HashMap<String, Option<String>> =
        app.store.session_activation_history(&session.id).await?.into_iter().collect();
    let mut records = Vec::with_capacity(batch.reports.len());
    let mut outside_exec = Vec::with_capacity(batch.reports.len());
    let sandbox_uid = batch.sandbox_uid;
    for (i, report) in batch.reports.into_iter().enumerate() {
        if report.action == UsageAction::DecoyRead {
            // Decoy names are no secret names: checked against the decoy list instead.
            if !decoy_read_accepted(session, &report) {
                continue;
            }
        } else if let Some(name) = &report.secret {
            check_name(name)?;
        }
        let checked = match check_report(i, &report, session, &history, now) {
            Ok(checked) => checked,
            Err(refusal) => {
                // The attempt is recorded (within the session's quota, so that refusals
                // cannot flood the trail either).
                if refusal.suspicious && app.usage_quota.take(&session.id, 1).is_ok() {
                    let record = AuditRecord {
                        secret_name: report.secret.clone(),
                        session_id: Some(session.id.clone()),
                        detail: Some(format!("refused: {}", refusal.detail)),
                        ..AuditRecord::new(session.owner_id, now, AuditAction::Denied)
                    };
                    app.store.append_audit(std::slice::from_ref(&record)).await?;
                }
                warn!(session = %session.id, problem = %refusal.detail, "refused a usage batch");
                return Err(DomainError::new(refusal.code, refusal.message));
            }
        };
        let action = match report.action {
            UsageAction::Injected => AuditAction::Injected,
            UsageAction::FileRead => AuditAction::FileRead,
            UsageAction::Denied => AuditAction::Denied,
            UsageAction::Substituted => AuditAction::Substituted,
            UsageAction::LeakAttempt => AuditAction::LeakAttempt,
            UsageAction::DecoyRead => AuditAction::DecoyRead,
            UsageAction::ScanFinding => AuditAction::ScanFinding,
        };
        records.push(AuditRecord {
            owner_id: session.owner_id,
            at: checked.at,
            action,
            secret_id: checked.secret_id,
            secret_name: report.secret,
            session_id: Some(session.id.clone()),
            pid: report.pid,
            uid: report.uid,
            command: clean(report.command, "command", MAX_COMMAND_BYTES)?,
            detail: clean(report.detail, "detail", MAX_DESCRIPTION_BYTES)?,
            count: report.count.filter(|c| *c > 1),
            last_at: checked.last_at.filter(|l| *l != checked.at),
            exe: clean(report.exe, "exe", MAX_EXE_BYTES)?,
            claimed_command: clean(report.claimed_command, "claimed_command", MAX_COMMAND_BYTES)?,
        });
        outside_exec.push(report.outside_exec);
    }
    let count = u64::try_from(records.len()).unwrap_or(u64::MAX);
    if let Err(reached) = app.usage_quota.take(&session.id, count) {
        info!(session = %session.id, "a session reached its usage quota");
        let mut refusal = DomainError::new(
            ErrorCode::QuotaReached,
            format!(
                "session {} reached its quota of usage records ({} at once, {} a minute); retry in {} s",
                session.id,
                crate::quota::BURST,
                crate::quota::PER_MINUTE,
                reached.retry_after_secs
            ),
        );
        refusal.retry_after = Some(reached.retry_after_secs);
        return Err(refusal);
    }
    // The rules run on the batch before it is recorded (its history is the secret's past),
    // and what they raise is stored and acted on after (never failing the batch).
    let observed: Vec<Observed<'_>> = records
        .iter()
        .zip(&outside_exec)
        .map(|(record, outside)| Observed { record, outside_exec: *outside })
        .collect();
    let evaluation = Evaluation::prepare(app, session, &observed, sandbox_uid).await;
    app.store.append_audit(&records).await?;
    evaluation.apply(app, session).await;
    Ok(UsageAccepted { accepted: records.len() })
}

#[cfg(test)]
mod tests {
    use maestro_wire::agent_api::{UsageBatch, UsageReport};

    use super::*;

    #[test]
    fn every_report_the_wire_type_makes_is_read() {
        let report = UsageReport {
            secret: Some("S".into()),
            action: UsageAction::FileRead,
            at: "2026-12-01T00:00:00Z".into(),
            pid: Some(1),
            uid: Some(1000),
            command: Some("cat".into()),
            detail: Some("S_VAR".into()),
            count: None,
            last_at: None,
            exe: None,
            claimed_command: None,
            outside_exec: Some(true),
        };
        let batch = UsageBatch { reports: vec![report], sandbox_uid: Some(1000) };
        let text = serde_json::to_string(&batch).unwrap();
        let batch: IncomingBatch = serde_json::from_str(&text).unwrap();
        assert_eq!(batch.reports[0].count, None);
        assert_eq!((batch.reports[0].outside_exec, batch.sandbox_uid), (Some(true), Some(1000)));
        // A coalesced report, as the agent sends it.
        let coalesced = serde_json::json!({"reports": [{"secret": "S", "action": "injected",
            "at": "2026-12-01T00:00:00Z", "pid": 1, "uid": 1000, "command": "make",
            "detail": null, "count": 7, "last_at": "2026-12-01T00:00:05Z",
            "exe": "/usr/bin/make", "claimed_command": "terraform"}]});
        let batch: IncomingBatch = serde_json::from_value(coalesced).unwrap();
        let r = &batch.reports[0];
        assert_eq!((r.count, r.exe.as_deref()), (Some(7), Some("/usr/bin/make")));
        assert_eq!(r.claimed_command.as_deref(), Some("terraform"));
        let unknown = serde_json::json!({"reports": [{"secret": null, "action": "denied",
            "at": "2026-12-01T00:00:00Z", "pid": null, "uid": null, "command": null,
            "detail": null, "colour": "red"}]});
        assert!(serde_json::from_value::<IncomingBatch>(unknown).is_err());
    }
}
