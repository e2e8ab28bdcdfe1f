//! Usage reports (file reads, injections, denials) on their way to the broker's audit trail.
//!
//! The FUSE thread and the socket push into a bounded queue and never wait: when the queue is
//! full (the broker is away for long) the oldest reports are dropped and counted, and the count
//! is logged as a warning. A task posts batches at most once a second, or sooner once 100 are
//! waiting; a report that arrives after a quiet second goes out at once, so the audit trail is
//! current when someone looks right after using a secret.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use maestro_fs::{Access, AccessObserver};
use maestro_wire::agent_api::{UsageAction, UsageBatch, UsageReport};
use maestro_wire::limits::MAX_USAGE_BATCH;
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::identity::rfc3339_now;

/// Reports waiting at most; beyond this the oldest are dropped.
pub const QUEUE_CAPACITY: usize = 10_000;
/// A batch is sent as soon as this many reports wait: a whole batch (the broker takes at most
/// `MAX_USAGE_BATCH`), because every batch costs the broker a request and a transaction, and a
/// hot reader of a secret file makes tens of thousands of reports a second.
pub const BATCH_TRIGGER: usize = MAX_USAGE_BATCH;
/// Otherwise, reports wait at most this long.
pub const BATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The bounded queue of reports.
pub struct UsageQueue {
    reports: Mutex<VecDeque<UsageReport>>,
    capacity: usize,
    dropped: AtomicU64,
    /// Told when the queue stops being empty.
    nonempty: Notify,
    /// Told when a full batch is waiting.
    full: Notify,
}

impl UsageQueue {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(UsageQueue {
            reports: Mutex::new(VecDeque::new()),
            capacity,
            dropped: AtomicU64::new(0),
            nonempty: Notify::new(),
            full: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<UsageReport>> {
        self.reports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a report; drops the oldest when full. Holds a lock for a push, nothing more.
    pub fn push(&self, report: UsageReport) {
        let len = {
            let mut q = self.lock();
            if q.len() >= self.capacity {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(report);
            q.len()
        };
        // notify_one keeps a permit when nobody waits yet, so a push that races with the poster
        // going to sleep is not missed.
        if len == 1 {
            self.nonempty.notify_one();
        }
        if len >= BATCH_TRIGGER {
            self.full.notify_one();
        }
    }

    /// Takes up to `max` of the oldest reports.
    pub fn take(&self, max: usize) -> Vec<UsageReport> {
        let mut q = self.lock();
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Puts back reports that could not be sent, ahead of newer ones, within the capacity.
    pub fn put_back(&self, reports: Vec<UsageReport>) {
        let mut q = self.lock();
        for r in reports.into_iter().rev() {
            if q.len() >= self.capacity {
                // The queue is full of newer reports: the returned one is the oldest.
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            q.push_front(r);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many reports were dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Waits until a full batch is waiting or `interval` passed.
    pub async fn due(&self, interval: Duration) {
        if self.len() >= BATCH_TRIGGER {
            return;
        }
        let _ = tokio::time::timeout(interval, self.full.notified()).await;
    }

    /// Waits until there is a report.
    pub async fn nonempty(&self) {
        while self.is_empty() {
            self.nonempty.notified().await;
        }
    }
}

/// Truncates text from a process (a command name) for the audit trail.
pub fn clean_command(text: &str) -> String {
    text.trim().chars().filter(|c| !c.is_control()).take(64).collect()
}

/// The filesystem's observer: every open becomes a report.
pub struct FsObserver(pub Arc<UsageQueue>);

impl AccessObserver for FsObserver {
    fn record(&self, access: Access) {
        let (action, detail) = if access.allowed {
            (UsageAction::FileRead, access.path)
        } else {
            let why = access.reason.unwrap_or_else(|| "refused".to_owned());
            (UsageAction::Denied, format!("{}: {why}", access.path))
        };
        self.0.push(UsageReport {
            secret: if access.secret.is_empty() { None } else { Some(access.secret) },
            action,
            at: rfc3339_now(),
            pid: Some(access.pid),
            uid: Some(access.uid),
            command: access.command.as_deref().map(clean_command),
            detail: Some(detail),
        });
    }
}

/// Sends everything queued, in batches; stops at the first failure (reports are kept).
pub async fn flush(queue: &UsageQueue, broker: &Broker) -> Result<(), crate::broker::BrokerError> {
    let dropped = queue.take_dropped();
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "usage reports dropped: the queue was full while the broker was away"
        );
    }
    loop {
        let reports = queue.take(MAX_USAGE_BATCH);
        if reports.is_empty() {
            return Ok(());
        }
        let batch = UsageBatch { reports };
        if let Err(e) = broker.post_usage(&batch).await {
            queue.put_back(batch.reports);
            return Err(e);
        }
        tracing::debug!(reports = batch.reports.len(), "usage reported");
    }
}

/// Posts batches until the task is dropped: as soon as there is something to post, then at
/// most once per interval unless a full batch waits.
pub async fn run_poster(queue: Arc<UsageQueue>, broker: Arc<Broker>) {
    loop {
        queue.nonempty().await;
        if let Err(e) = flush(&queue, &broker).await {
            tracing::warn!("usage reports kept for later: {e}");
            // Do not hammer an absent broker: the next try is a full interval away.
            tokio::time::sleep(BATCH_INTERVAL).await;
            continue;
        }
        queue.due(BATCH_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: u32) -> UsageReport {
        UsageReport {
            secret: Some(format!("S{n}")),
            action: UsageAction::FileRead,
            at: "t".into(),
            pid: Some(n),
            uid: None,
            command: None,
            detail: None,
        }
    }

    #[test]
    fn drops_oldest_when_full_and_counts() {
        let q = UsageQueue::new(3);
        for n in 0..5 {
            q.push(report(n));
        }
        assert_eq!(q.take_dropped(), 2);
        assert_eq!(q.take_dropped(), 0);
        let pids: Vec<u32> = q.take(10).iter().filter_map(|r| r.pid).collect();
        assert_eq!(pids, [2, 3, 4]);
    }

    #[test]
    fn put_back_goes_first_and_respects_capacity() {
        let q = UsageQueue::new(3);
        q.push(report(1));
        q.push(report(2));
        let taken = q.take(2);
        q.push(report(3));
        q.push(report(4));
        q.put_back(taken);
        // Room for one of the two returned: the newer (2) stays, the oldest (1) is dropped.
        let pids: Vec<u32> = q.take(10).iter().filter_map(|r| r.pid).collect();
        assert_eq!(pids, [2, 3, 4]);
        assert_eq!(q.take_dropped(), 1);
    }

    #[test]
    fn observer_turns_accesses_into_reports() {
        let q = UsageQueue::new(10);
        let obs = FsObserver(q.clone());
        obs.record(Access {
            secret: "AWS".into(),
            path: "aws/credentials".into(),
            pid: 7,
            uid: 1000,
            command: Some("cat\n".into()),
            allowed: true,
            reason: None,
        });
        obs.record(Access {
            secret: String::new(),
            path: "X".into(),
            pid: 8,
            uid: 1001,
            command: None,
            allowed: false,
            reason: Some("uid 1001 is not the sandbox user".into()),
        });
        let r = q.take(10);
        assert_eq!(r[0].action, UsageAction::FileRead);
        assert_eq!(r[0].command.as_deref(), Some("cat"));
        assert_eq!(r[0].detail.as_deref(), Some("aws/credentials"));
        assert_eq!(r[1].action, UsageAction::Denied);
        assert_eq!(r[1].secret, None);
        assert_eq!(r[1].detail.as_deref(), Some("X: uid 1001 is not the sandbox user"));
    }

    #[tokio::test]
    async fn the_first_report_after_a_quiet_time_wakes_the_poster() {
        let q = UsageQueue::new(1000);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.nonempty().await })
        };
        tokio::task::yield_now().await;
        q.push(report(1));
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn due_wakes_early_when_a_batch_is_full() {
        let q = UsageQueue::new(1000);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.due(Duration::from_secs(30)).await })
        };
        for n in 0..BATCH_TRIGGER as u32 {
            q.push(report(n));
        }
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
