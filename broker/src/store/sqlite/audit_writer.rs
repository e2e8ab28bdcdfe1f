//! Group commit of the audit records that are appended on their own (`append_audit`: fetches,
//! usage reports, denials).
//!
//! With `synchronous=FULL`, every transaction waits for an fsync (about half a millisecond on
//! a virtual disk), so one transaction per secret fetch capped fetches at about 1,200 a second,
//! whatever the CPU could do. Here the callers that arrive while a transaction is being written
//! share the next one: each caller still returns only once its records are durable, so nothing
//! is acknowledged before it is on disk, but many fetches cost one fsync. If a shared
//! transaction fails, each caller's records are written again in a transaction of their own,
//! so one caller's failure is never another's. A transaction of a few records (fetches) is one
//! statement ([`super::insert_audit_batch`]).

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::insert_audit_batch;
use super::statements::{commit, insert_audit};
use crate::store::{AuditRecord, StoreError, query_failed};

/// Records written in one shared transaction at most (a usage batch holds up to 1,000).
const MAX_RECORDS_PER_COMMIT: usize = 4_000;
/// Records written by one statement at most. A statement runs on the connection's thread
/// without a pause, about 5 µs a record here. Written that way, an agent's usage batches (up to
/// 1,000 records) slowed `maestro-exec` on the same two-core machine (with 100 secrets: 0.2 ms
/// more at the median, 99th percentile from 3 to 6 ms), and in statements of 64 records still
/// measurably, so larger batches keep one statement per record, which yields the core between
/// records. Fetches come in batches of a few records.
const ROWS_PER_STATEMENT: usize = 64;

/// One caller's records and where its outcome goes.
struct Job {
    records: Vec<AuditRecord>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle callers append through. Cheap to clone; the writer task ends when the last handle
/// is dropped.
#[derive(Debug, Clone)]
pub(super) struct AuditWriter {
    jobs: mpsc::UnboundedSender<Job>,
}

impl AuditWriter {
    /// Starts the writer task on the current runtime.
    pub(super) fn start(pool: SqlitePool) -> AuditWriter {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, queue));
        AuditWriter { jobs }
    }

    /// Appends `records` and returns once they are committed.
    pub(super) async fn append(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let stopped = || StoreError::Query {
            step: "appending to the audit trail",
            source: sqlx::Error::PoolClosed,
        };
        let (done, outcome) = oneshot::channel();
        self.jobs.send(Job { records: records.to_vec(), done }).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Writes `records` in one transaction. Up to [`ROWS_PER_STATEMENT`] records (fetches) that
/// is one statement outside any transaction, which is a transaction of its own: no `BEGIN` and
/// `COMMIT`, each of which would be one more hand-off to the connection's thread. (A writing
/// statement takes the write lock when it starts, as `BEGIN IMMEDIATE` would.) More records
/// (usage batches) are written one statement each within one transaction.
async fn write<'a>(
    pool: &SqlitePool,
    records: impl Iterator<Item = &'a AuditRecord>,
) -> Result<(), StoreError> {
    let records: Vec<&AuditRecord> = records.collect();
    if records.len() <= ROWS_PER_STATEMENT {
        return insert_audit_batch(pool, &records).await;
    }
    let mut tx =
        pool.begin_with("BEGIN IMMEDIATE").await.map_err(query_failed("starting a transaction"))?;
    for record in records {
        insert_audit(&mut tx, record).await?;
    }
    commit(tx).await
}

async fn run(pool: SqlitePool, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut count = first.records.len();
        let mut jobs = vec![first];
        while count < MAX_RECORDS_PER_COMMIT {
            let Ok(job) = queue.try_recv() else { break };
            count += job.records.len();
            jobs.push(job);
        }
        let shared = write(&pool, jobs.iter().flat_map(|j| j.records.iter())).await;
        match shared {
            Ok(()) => {
                for job in jobs {
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(error) if jobs.len() == 1 => {
                if let Some(job) = jobs.pop() {
                    let _ = job.done.send(Err(error));
                }
            }
            Err(_) => {
                for job in jobs {
                    let outcome = write(&pool, job.records.iter()).await;
                    let _ = job.done.send(outcome);
                }
            }
        }
    }
}
