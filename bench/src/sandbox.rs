//! The sandbox most measurements share: a broker, [`SECRETS`] generic secrets, one session and
//! its agent. Secret `i` is `BENCH_S{i:03}`, with one variable `BENCH_VAR_{i:03}` whose file is
//! `<mount>/BENCH_VAR_{i:03}`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::fixture::{AgentProc, Bins, BrokerProc, UserApi, dummy_value, work_dir, write_bundle};

/// How many secrets the sandbox registers (the largest count the rows use).
pub const SECRETS: usize = 100;

pub fn secret_name(i: usize) -> String {
    format!("BENCH_S{i:03}")
}

pub fn variable_name(i: usize) -> String {
    format!("BENCH_VAR_{i:03}")
}

/// A broker, its secrets, and one session with its agent. Fields drop in order: the agent
/// before the broker, the directory last.
pub struct Sandbox {
    pub agent: AgentProc,
    pub session_id: String,
    pub api: UserApi,
    pub broker: BrokerProc,
    pub bins: Bins,
    dir: tempfile::TempDir,
    /// How many of the secrets (the first ones) are active now.
    active: usize,
}

impl Sandbox {
    pub async fn new(bins: &Bins) -> anyhow::Result<Sandbox> {
        let dir = work_dir("maestro-bench-")?;
        let broker = BrokerProc::start(bins, dir.path(), &[])?;
        let api = broker.api()?;
        for i in 1..=SECRETS {
            api.add_generic(&secret_name(i), &variable_name(i), dummy_value(i)).await?;
        }
        let created = api.new_session("bench").await?;
        let bundle = dir.path().join("bench.bundle.json");
        write_bundle(&bundle, &broker.url, &created)?;
        let agent_dir = dir.path().join("agent");
        std::fs::create_dir(&agent_dir).context("cannot create the agent's directory")?;
        let agent = AgentProc::start(bins, &bundle, &agent_dir)?;
        Ok(Sandbox {
            agent,
            session_id: created.session.id,
            api,
            broker,
            bins: bins.clone(),
            dir,
            active: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new directory under the sandbox's.
    pub fn subdir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir().join(name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(path)
    }

    /// Makes the first `count` secrets active (never fewer than now) and waits until the agent
    /// serves them.
    pub async fn activate_first(&mut self, count: usize) -> anyhow::Result<()> {
        if count > self.active {
            let names: Vec<String> = (self.active + 1..=count).map(secret_name).collect();
            self.api.activate(&self.session_id, &names).await?;
            self.active = count;
        }
        self.agent.wait_listed(self.active, Duration::from_secs(10))
    }

    /// The file of secret `i` under the agent's mount.
    pub fn file(&self, i: usize) -> PathBuf {
        self.agent.mount.join(variable_name(i))
    }
}
