//! The set-up of the sections that measure one sealed secret served by the agent (`ssh`,
//! `postgres`, `mysql`): a broker and an agent of their own, the secret added and active in a
//! session, and the revocation row they all report the same way.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use maestro_wire::sock::{Action, Response as SockResponse};

use crate::fixture::{AgentProc, Bins, BrokerProc, UserApi, ask, work_dir, write_bundle};
use crate::report::{Figure, Row, Spread, Unit, format_seconds};
use crate::stats::Summary;

/// How long an activation may take to reach the agent.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// The figure for closing what a deactivated secret served.
pub const REVOCATION_LIMIT: f64 = 0.100;

/// A broker and an agent with one secret active. Fields drop in order: the agent (and its
/// mount) before the broker, both before their directory.
pub struct OneSecret {
    pub api: UserApi,
    pub agent: AgentProc,
    session: String,
    names: Vec<String>,
    _broker: BrokerProc,
    _dir: tempfile::TempDir,
}

impl OneSecret {
    /// Starts both, adds `secret` (the JSON of `POST /v1/secrets`, named `name`) and activates it
    /// in a session labelled `label`.
    pub async fn start(
        bins: &Bins,
        label: &str,
        name: &str,
        secret: serde_json::Value,
    ) -> anyhow::Result<Self> {
        let dir = work_dir(&format!("maestro-{label}-"))?;
        let broker = BrokerProc::start(bins, dir.path(), &[])?;
        let api = broker.api()?;
        api.post_json("/v1/secrets", &secret).await?;
        let created = api.new_session(label).await?;
        let bundle = dir.path().join(format!("{label}.bundle.json"));
        write_bundle(&bundle, &broker.url, &created)?;
        let agent_dir = dir.path().join("agent");
        std::fs::create_dir(&agent_dir).context("cannot create the agent's directory")?;
        let agent = AgentProc::start(bins, &bundle, &agent_dir)?;
        let me = OneSecret {
            api,
            agent,
            session: created.session.id.clone(),
            names: vec![name.to_owned()],
            _broker: broker,
            _dir: dir,
        };
        me.activate().await?;
        Ok(me)
    }

    /// Activates the secret and waits until the agent lists it.
    pub async fn activate(&self) -> anyhow::Result<()> {
        self.api.activate(&self.session, &self.names).await?;
        self.agent.wait_listed(1, CHANGE_TIMEOUT)
    }

    /// Deactivates the secret; returns when the broker answered.
    pub async fn deactivate(&self) -> anyhow::Result<()> {
        self.api.deactivate(&self.session, &self.names).await
    }

    /// The value the agent gives `maestro-exec` for `variable` (a socket path, not a secret).
    pub fn variable(&self, variable: &str) -> anyhow::Result<String> {
        match ask(&self.agent.socket, Action::Env { only: vec![], command: None })? {
            SockResponse::Env { vars, .. } => vars
                .iter()
                .find(|v| v.name == variable)
                .map(|v| v.value.expose().to_owned())
                .ok_or_else(|| anyhow!("the agent's environment has no {variable}")),
            other => bail!("the agent did not give its environment: {other:?}"),
        }
    }
}

/// The row of "deactivate call returned → open connection closed", `what` naming the
/// connection.
pub fn revocation_row(id: &str, section: &'static str, what: &str, closed: Summary) -> Row {
    let tries = closed.n;
    Row::new(
        id,
        section,
        Figure::new(
            format!("deactivate call returned → {what} closed ({tries} tries)"),
            Unit::Seconds,
            closed,
        ),
        Spread::P99,
        None,
    )
    .target(
        "< 100 ms",
        format!("max {}", format_seconds(closed.max)),
        closed.max < REVOCATION_LIMIT,
    )
}
