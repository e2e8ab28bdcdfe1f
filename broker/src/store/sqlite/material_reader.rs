//! Group reads of the material that agents fetch (`active_material`).
//!
//! Each statement is handed to the connection's thread and back, and the pool then pings the
//! connection on its way back: on this kind of machine those wake-ups cost more than the read.
//! A busy broker serves many fetches at once, so the reads that arrive while one is being
//! answered share the next statement: one per batch instead of one per fetch, in one snapshot.
//! Each caller gets exactly the rows of its own session (and name), as it would alone. If a
//! shared read fails, each caller's read runs again on its own, so one caller's failure is
//! never another's.

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::statements::{add_material_row, get};
use crate::store::{ActiveMaterial, StoreError, query_failed};

/// Reads answered by one statement at most.
const MAX_READS_PER_STATEMENT: usize = 256;

/// The secrets active in each asked-for session (all, or the one named), with their data key,
/// token state and sealed fields: one row per field (one row with no field for a secret without
/// fields). The requests travel as one JSON array of `[session id, name or null]` pairs; `job`
/// is a pair's index in it.
const MATERIAL_SELECT: &str = "\
    WITH jobs (job, session_id, name) AS \
    (SELECT key, value ->> 0, value ->> 1 FROM json_each($1)) \
    SELECT j.job, s.id, s.owner_id, s.name, s.kind, s.description, s.tags, s.field_names, \
    s.version, s.data_key_id, d.wrapped, s.created_at, s.updated_at, s.exposure, s.hosts, s.compromised_at, \
    s.activation_default, s.activation_max, s.rotate_every, s.value_changed_at, \
    a.expires_at AS active_until, t.secret_id IS NOT NULL AS oauth, t.expires_at AS oauth_expires_at, \
    t.needs_reauth AS oauth_needs_reauth, f.name AS field_name, f.ciphertext AS field_blob \
    FROM jobs j JOIN activations a ON a.session_id = j.session_id \
    JOIN secrets s ON s.id = a.secret_id AND (j.name IS NULL OR s.name = j.name) \
    JOIN data_keys d ON d.id = s.data_key_id \
    LEFT JOIN oauth_tokens t ON t.secret_id = s.id \
    LEFT JOIN secret_fields f ON f.secret_id = s.id \
    ORDER BY j.job, s.name, s.id, f.name";

/// One caller's read and where its answer goes.
struct Job {
    session_id: String,
    name: Option<String>,
    done: oneshot::Sender<Result<Vec<ActiveMaterial>, StoreError>>,
}

/// The handle callers read through. Cheap to clone; the reader task ends when the last handle
/// is dropped.
#[derive(Debug, Clone)]
pub(super) struct MaterialReader {
    jobs: mpsc::UnboundedSender<Job>,
}

impl MaterialReader {
    /// Starts the reader task on the current runtime.
    pub(super) fn start(pool: SqlitePool) -> MaterialReader {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, queue));
        MaterialReader { jobs }
    }

    /// The material of the secrets active in `session_id`: all of them, or the one named.
    pub(super) async fn read(
        &self,
        session_id: &str,
        name: Option<&str>,
    ) -> Result<Vec<ActiveMaterial>, StoreError> {
        let stopped = || StoreError::Query {
            step: "reading active secrets' material",
            source: sqlx::Error::PoolClosed,
        };
        let (done, answer) = oneshot::channel();
        let job = Job { session_id: session_id.to_owned(), name: name.map(str::to_owned), done };
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(pool: SqlitePool, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_READS_PER_STATEMENT {
            let Ok(job) = queue.try_recv() else { break };
            jobs.push(job);
        }
        match read(&pool, &jobs).await {
            Ok(answers) => {
                for (job, answer) in jobs.into_iter().zip(answers) {
                    let _ = job.done.send(Ok(answer));
                }
            }
            Err(error) if jobs.len() == 1 => {
                if let Some(job) = jobs.pop() {
                    let _ = job.done.send(Err(error));
                }
            }
            Err(_) => {
                for job in jobs {
                    let alone = read(&pool, std::slice::from_ref(&job)).await;
                    let _ =
                        job.done.send(alone.map(|mut answers| answers.pop().unwrap_or_default()));
                }
            }
        }
    }
}

/// Reads the material of every job in one statement; one answer per job, in order.
async fn read(pool: &SqlitePool, jobs: &[Job]) -> Result<Vec<Vec<ActiveMaterial>>, StoreError> {
    use serde_json::Value;
    let asked = Value::Array(
        jobs.iter()
            .map(|j| Value::Array(vec![j.session_id.as_str().into(), j.name.as_deref().into()]))
            .collect(),
    );
    let rows = sqlx::query(MATERIAL_SELECT)
        .bind(asked.to_string())
        .fetch_all(pool)
        .await
        .map_err(query_failed("reading active secrets' material"))?;
    let mut answers: Vec<Vec<ActiveMaterial>> = jobs.iter().map(|_| Vec::new()).collect();
    for row in &rows {
        let job = usize::try_from(get::<i64>(row, "job")?)
            .ok()
            .and_then(|j| answers.get_mut(j))
            .ok_or(StoreError::Corrupt { what: "material read batch" })?;
        add_material_row(job, row)?;
    }
    Ok(answers)
}
