//! Usage reports (file reads, injections, denials) on their way to the broker's audit trail.
//!
//! The audit cannot be flooded away: reports are coalesced, never dropped.
//!
//! * Coalesced: one queued record per key (secret, action, pid, uid, executable, claimed name,
//!   path or detail) with a count and the times of the first and the last use. A process that
//!   opens a file 100,000 times a second is one record per batch, not 100,000.
//! * Bounded without losing anything: a use whose key is already queued only counts up. A use
//!   with a new key takes a slot; when [`QUEUE_CAPACITY`] slots are taken (queued or being
//!   posted), the use is refused instead: the FUSE open fails with EIO, the `maestro-exec`
//!   request gets an error, each with a (rate-limited) log line. A use is either recorded or
//!   did not happen.
//! * If the broker refuses reports for good (a 4xx, not an outage), the batch is split to find
//!   the refused ones; their uses are counted, and the count becomes an audit record itself
//!   ("usage reports lost"). Reports the broker could not take because it is away are kept.
//!
//! A task posts batches at most once a second, or sooner once a whole batch is waiting; a
//! report that arrives after a quiet second goes out at once, so the audit trail is current
//! when someone looks right after using a secret.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use maestro_fs::{Access, AccessObserver, NotRecorded};
use maestro_wire::agent_api::{UsageAction, UsageBatch, UsageReport};
use maestro_wire::limits::MAX_USAGE_BATCH;
use maestro_wire::text::escape_shown;
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::identity::rfc3339_now;

/// Distinct records (keys) waiting or being posted at most. A use with a new key beyond this
/// is refused (fail closed); a use with a queued key is always counted.
pub const QUEUE_CAPACITY: usize = 10_000;
/// A batch is sent as soon as this many records wait: a whole batch (the broker takes at most
/// `MAX_USAGE_BATCH`), because every batch costs the broker a request and a transaction.
pub const BATCH_TRIGGER: usize = MAX_USAGE_BATCH;
/// Otherwise, records wait at most this long.
pub const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Refusals for a full queue are logged at most this often (with how many there were).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Longest command name or executable file name kept, in bytes once escaped (the broker takes
/// up to 256).
const MAX_COMMAND_BYTES: usize = 128;
/// Longest executable path kept, in bytes once escaped.
const MAX_EXE_BYTES: usize = 1024;
/// The detail of the record that counts uses whose reports were lost.
pub const LOST_DETAIL: &str = "usage reports lost: the broker refused them";

/// The queue is full of distinct records: the use must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// What makes two uses the same record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    secret: Option<String>,
    action: u8,
    pid: Option<u32>,
    uid: Option<u32>,
    command: Option<String>,
    exe: Option<String>,
    claimed: Option<String>,
    detail: Option<String>,
}

fn action_code(action: UsageAction) -> u8 {
    match action {
        UsageAction::Injected => 0,
        UsageAction::FileRead => 1,
        UsageAction::Denied => 2,
        UsageAction::Substituted => 3,
        UsageAction::LeakAttempt => 4,
        UsageAction::DecoyRead => 5,
        UsageAction::ScanFinding => 6,
    }
}

impl Key {
    fn of(r: &UsageReport) -> Key {
        Key {
            secret: r.secret.clone(),
            action: action_code(r.action),
            pid: r.pid,
            uid: r.uid,
            command: r.command.clone(),
            exe: r.exe.clone(),
            claimed: r.claimed_command.clone(),
            detail: r.detail.clone(),
        }
    }
}

/// One queued record: the first use's report, how many uses, and when the last was.
struct Entry {
    report: UsageReport,
    count: u64,
    last_at: String,
}

impl Entry {
    fn new(report: UsageReport) -> Entry {
        let count = report.count.unwrap_or(1).max(1);
        let last_at = report.last_at.clone().unwrap_or_else(|| report.at.clone());
        Entry { report, count, last_at }
    }

    /// Folds in a record of the same key whose uses came after this one's: callers keep that
    /// order, so times are never compared (their text does not order reliably).
    fn absorb_later(&mut self, later: Entry) {
        self.count = self.count.saturating_add(later.count);
        self.last_at = later.last_at;
    }

    /// The report to send: the count and the last time when there is more than one use.
    fn into_report(self) -> UsageReport {
        let mut r = self.report;
        if self.count > 1 {
            r.count = Some(self.count);
            r.last_at = Some(self.last_at);
        } else {
            r.count = None;
            r.last_at = None;
        }
        r
    }
}

#[derive(Default)]
struct Queue {
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were first queued (each key once).
    order: VecDeque<Key>,
    /// Records taken by the poster and not yet settled (sent, put back or lost): they still
    /// hold their slots, so putting them back never needs room.
    in_flight: usize,
}

impl Queue {
    fn insert_back(&mut self, key: Key, entry: Entry) {
        self.order.push_back(key.clone());
        self.entries.insert(key, entry);
    }
}

/// The coalescing, bounded queue of usage records.
pub struct UsageQueue {
    queue: Mutex<Queue>,
    capacity: usize,
    /// Uses refused since the last refusal log line, and when that line was written.
    refused: AtomicU64,
    refusal_logged: Mutex<Option<Instant>>,
    /// When a denial that did not fit was last logged.
    denial_logged: Mutex<Option<Instant>>,
    /// Uses whose reports the broker refused for good, in total.
    lost: AtomicU64,
    /// Told when the queue stops being empty.
    nonempty: Notify,
    /// Told when a full batch is waiting.
    full: Notify,
    /// The processes under `maestro-exec`, for the `outside_exec` field of file reads.
    pub exec_tree: crate::exec_tree::ExecTree,
    /// The sandbox user's uid, sent with every batch (the broker flags other uids).
    sandbox_uid: std::sync::OnceLock<u32>,
}

impl UsageQueue {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(UsageQueue {
            queue: Mutex::new(Queue::default()),
            capacity,
            refused: AtomicU64::new(0),
            refusal_logged: Mutex::new(None),
            denial_logged: Mutex::new(None),
            lost: AtomicU64::new(0),
            exec_tree: Default::default(),
            sandbox_uid: std::sync::OnceLock::new(),
            nonempty: Notify::new(),
            full: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one use: counted into its queued record, or queued as a new record if a slot is
    /// free; otherwise refused (the caller must refuse the use). Holds a lock for a map update,
    /// nothing more.
    pub fn push(&self, report: UsageReport) -> Result<(), QueueFull> {
        self.push_all(vec![report])
    }

    /// Records several uses, all or none (one `maestro-exec` request injects several secrets).
    pub fn push_all(&self, reports: Vec<UsageReport>) -> Result<(), QueueFull> {
        self.push_within(reports, self.capacity).inspect_err(|_| self.note_refusal())
    }

    /// Records a report that must reach the broker at once (a decoy read) like [`Self::push`],
    /// and wakes the poster to send it now rather than after the batch interval.
    pub fn push_urgent(&self, report: UsageReport) -> Result<(), QueueFull> {
        self.push(report)?;
        self.full.notify_one();
        Ok(())
    }

    /// Records a denial, best effort: new denial records may fill at most half the queue, so
    /// a foreign uid that makes many refused attempts never takes the slots allowed uses need.
    /// A denial is refused anyway; one that does not fit is only logged (rate-limited).
    pub fn push_denial(&self, report: UsageReport) {
        if self.push_within(vec![report], self.capacity / 2).is_err() {
            let mut logged = self.denial_logged.lock().unwrap_or_else(|e| e.into_inner());
            if logged.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL) {
                *logged = Some(Instant::now());
                tracing::warn!(
                    "denials not recorded: the usage queue is half full; the refusals themselves \
                     still happen"
                );
            }
        }
    }

    fn push_within(&self, reports: Vec<UsageReport>, limit: usize) -> Result<(), QueueFull> {
        let (was_empty, len) = {
            let mut q = self.lock();
            let was_empty = q.entries.is_empty();
            let keys: Vec<Key> = reports.iter().map(Key::of).collect();
            let new_keys: HashSet<&Key> =
                keys.iter().filter(|k| !q.entries.contains_key(*k)).collect();
            if !new_keys.is_empty() && q.entries.len() + q.in_flight + new_keys.len() > limit {
                return Err(QueueFull);
            }
            for (key, report) in keys.into_iter().zip(reports) {
                let entry = Entry::new(report);
                match q.entries.get_mut(&key) {
                    Some(queued) => queued.absorb_later(entry),
                    None => q.insert_back(key, entry),
                }
            }
            (was_empty, q.entries.len())
        };
        // notify_one keeps a permit when nobody waits yet, so a push that races with the poster
        // going to sleep is not missed.
        if was_empty && len > 0 {
            self.nonempty.notify_one();
        }
        if len >= BATCH_TRIGGER {
            self.full.notify_one();
        }
        Ok(())
    }

    /// Queues a record whatever the capacity: only for the count of lost reports, which is one
    /// key and so one slot at most.
    fn push_forced(&self, report: UsageReport) {
        let mut q = self.lock();
        let key = Key::of(&report);
        let entry = Entry::new(report);
        match q.entries.get_mut(&key) {
            Some(queued) => queued.absorb_later(entry),
            None => q.insert_back(key, entry),
        }
        drop(q);
        self.nonempty.notify_one();
    }

    /// Counts a refusal and logs, at most once per [`REFUSAL_LOG_INTERVAL`], how many uses were
    /// refused because the queue was full.
    fn note_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let mut logged = self.refusal_logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.is_some_and(|at| at.elapsed() < REFUSAL_LOG_INTERVAL) {
            return;
        }
        *logged = Some(Instant::now());
        let refused = self.refused.swap(0, Ordering::Relaxed);
        tracing::error!(
            refused,
            capacity = self.capacity,
            "secret uses refused: the usage queue is full of records the broker has not taken \
             yet, and a use that cannot be recorded is not allowed (file opens fail with EIO, \
             maestro-exec gets an error); check the broker"
        );
    }

    /// Takes up to `max` of the oldest records; they keep their slots until settled with
    /// [`Self::sent`], [`Self::put_back`] or [`Self::lost`].
    pub fn take(&self, max: usize) -> Vec<UsageReport> {
        let mut q = self.lock();
        let n = q.order.len().min(max);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(key) = q.order.pop_front() else { break };
            if let Some(entry) = q.entries.remove(&key) {
                out.push(entry.into_report());
            }
        }
        q.in_flight += out.len();
        out
    }

    /// Settles records the broker took.
    pub fn sent(&self, n: usize) {
        let mut q = self.lock();
        q.in_flight = q.in_flight.saturating_sub(n);
    }

    /// Puts back records that could not be sent, ahead of newer ones, merged with records of
    /// the same key queued meanwhile. Never needs room: they kept their slots.
    pub fn put_back(&self, reports: Vec<UsageReport>) {
        let mut q = self.lock();
        q.in_flight = q.in_flight.saturating_sub(reports.len());
        for report in reports.into_iter().rev() {
            let key = Key::of(&report);
            let mut entry = Entry::new(report);
            // The returned record's uses came before those queued meanwhile under its key.
            match q.entries.remove(&key) {
                Some(queued) => {
                    entry.absorb_later(queued);
                    q.entries.insert(key, entry);
                }
                None => {
                    q.order.push_front(key.clone());
                    q.entries.insert(key, entry);
                }
            }
        }
    }

    /// Settles records the broker refused for good: their uses are counted, and the count is
    /// queued as a record of its own.
    pub fn lost(&self, reports: &[UsageReport], why: &str) {
        let uses: u64 = reports.iter().map(|r| r.count.unwrap_or(1)).sum();
        {
            let mut q = self.lock();
            q.in_flight = q.in_flight.saturating_sub(reports.len());
        }
        if uses == 0 {
            return;
        }
        let total = self.lost.fetch_add(uses, Ordering::Relaxed) + uses;
        tracing::error!(uses, total, "usage reports refused by the broker: {why}");
        self.push_forced(UsageReport {
            secret: None,
            action: UsageAction::Denied,
            at: rfc3339_now(),
            pid: None,
            uid: None,
            command: None,
            detail: Some(LOST_DETAIL.to_owned()),
            count: Some(uses),
            last_at: None,
            exe: None,
            claimed_command: None,
            outside_exec: None,
        });
    }

    /// Sets the sandbox user's uid that batches carry (once; later calls are ignored).
    pub fn set_sandbox_uid(&self, uid: u32) {
        let _ = self.sandbox_uid.set(uid);
    }

    /// Records queued (not counting those being posted).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Uses whose reports the broker refused for good, since the start.
    pub fn lost_total(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Waits until a full batch is waiting or `interval` passed.
    pub async fn due(&self, interval: Duration) {
        if self.len() >= BATCH_TRIGGER {
            return;
        }
        let _ = tokio::time::timeout(interval, self.full.notified()).await;
    }

    /// Waits until there is a record.
    pub async fn nonempty(&self) {
        while self.is_empty() {
            self.nonempty.notified().await;
        }
    }
}

/// Text from a process (a command name) for the audit trail: trimmed, control and format
/// characters escaped, at most 128 bytes.
pub fn clean_command(text: &str) -> String {
    escape_shown(text.trim(), MAX_COMMAND_BYTES)
}

/// Who did something, from the kernel: the executable's path and file name, and the name the
/// process gives itself (`comm`) when that differs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Who {
    /// The record's command: the executable's file name, or `?` when the kernel did not say.
    pub command: String,
    /// The executable's full path, escaped.
    pub exe: Option<String>,
    /// The process's own name (`comm`) when it is not the executable's file name, escaped.
    pub comm: Option<String>,
}

/// What the command of a record is when the kernel does not say which executable ran.
pub const UNKNOWN_COMMAND: &str = "?";

impl Who {
    pub fn new(exe: Option<&str>, comm: Option<&str>) -> Who {
        let exe_name = exe.map(|e| {
            let e = e.strip_suffix(" (deleted)").unwrap_or(e);
            e.rsplit('/').next().unwrap_or(e).to_owned()
        });
        let command = exe_name.as_deref().map_or_else(|| UNKNOWN_COMMAND.to_owned(), clean_command);
        let comm = comm.map(clean_command).filter(|c| !c.is_empty() && *c != command);
        Who { command, exe: exe.map(|e| escape_shown(e, MAX_EXE_BYTES)), comm }
    }
}

/// The filesystem's observer: every open becomes a record, or is refused.
pub struct FsObserver(pub Arc<UsageQueue>);

impl AccessObserver for FsObserver {
    fn record(&self, access: Access) -> Result<(), NotRecorded> {
        // The egress proxy's CA files are public: reading them is no use of a secret.
        if access.allowed && access.secret == crate::state::EGRESS_FILES_OWNER {
            return Ok(());
        }
        let who = Who::new(access.exe.as_deref(), access.command.as_deref());
        if crate::decoys::is_decoy(&access.secret) {
            // Refused like any open that cannot be recorded (EIO): never an unseen decoy read.
            return self.0.push_urgent(decoy_report(access, who)).map_err(|QueueFull| NotRecorded);
        }
        let (action, detail) = if access.allowed {
            (UsageAction::FileRead, access.path)
        } else {
            let why = access.reason.unwrap_or_else(|| "refused".to_owned());
            (UsageAction::Denied, format!("{}: {why}", access.path))
        };
        let report = UsageReport {
            secret: if access.secret.is_empty() { None } else { Some(access.secret) },
            action,
            at: rfc3339_now(),
            pid: Some(access.pid),
            uid: Some(access.uid),
            command: Some(who.command),
            detail: Some(detail),
            count: None,
            last_at: None,
            exe: who.exe,
            claimed_command: who.comm,
            // A read outside every process tree started through maestro-exec is reported as
            // such; the broker decides whether that is unusual for the secret.
            outside_exec: access.allowed.then(|| !self.0.exec_tree.contains(access.pid)),
        };
        if !access.allowed {
            self.0.push_denial(report);
            return Ok(());
        }
        self.0.push(report).map_err(|QueueFull| NotRecorded)
    }
}

/// The report of an open of a decoy's file, allowed or not: no legitimate tool opens one.
fn decoy_report(access: Access, who: Who) -> UsageReport {
    let detail = match (access.allowed, access.reason) {
        (true, _) => access.path,
        (false, why) => {
            format!("{} (refused: {})", access.path, why.as_deref().unwrap_or("refused"))
        }
    };
    UsageReport {
        secret: Some(access.secret),
        action: UsageAction::DecoyRead,
        at: rfc3339_now(),
        pid: Some(access.pid),
        uid: Some(access.uid),
        command: Some(who.command),
        detail: Some(detail),
        count: None,
        last_at: None,
        exe: who.exe,
        claimed_command: who.comm,
        outside_exec: None,
    }
}

/// Sends one batch; when the broker refuses it for good, splits it to find the refused records
/// (the others are sent) and counts the refused ones as lost. Returns a transient error (the
/// broker is away) with the unsent records put back.
async fn send_batch(
    queue: &UsageQueue,
    broker: &Broker,
    reports: Vec<UsageReport>,
) -> Result<(), crate::broker::BrokerError> {
    let mut pending = vec![reports];
    while let Some(part) = pending.pop() {
        let batch =
            UsageBatch { reports: part.to_vec(), sandbox_uid: queue.sandbox_uid.get().copied() };
        match broker.post_usage(&batch).await {
            Ok(()) => {
                queue.sent(part.len());
                tracing::debug!(reports = part.len(), "usage reported");
            }
            Err(e) if e.is_transient() => {
                queue.put_back(pending.into_iter().flatten().chain(part).collect());
                return Err(e);
            }
            Err(e) if part.len() > 1 => {
                tracing::warn!(
                    reports = part.len(),
                    "the broker refused a usage batch ({e}); sending it in halves"
                );
                let mut first = part;
                let second = first.split_off(first.len() / 2);
                pending.push(second);
                pending.push(first);
            }
            Err(e) => queue.lost(&part, &e.to_string()),
        }
    }
    Ok(())
}

/// Sends everything queued, in batches; stops at the first transient failure (records kept).
pub async fn flush(queue: &UsageQueue, broker: &Broker) -> Result<(), crate::broker::BrokerError> {
    loop {
        let reports = queue.take(MAX_USAGE_BATCH);
        if reports.is_empty() {
            return Ok(());
        }
        send_batch(queue, broker, reports).await?;
    }
}

/// Sends what is queued now: whole batches while a whole batch waits, then the rest as one
/// batch. Uses that arrive meanwhile wait for the next round, which is what makes a hot
/// reader one record per round instead of one per round trip.
async fn post_round(queue: &UsageQueue, broker: &Broker) -> Result<(), crate::broker::BrokerError> {
    loop {
        let whole = queue.len() >= BATCH_TRIGGER;
        let reports = queue.take(MAX_USAGE_BATCH);
        if reports.is_empty() {
            return Ok(());
        }
        send_batch(queue, broker, reports).await?;
        if !whole {
            return Ok(());
        }
    }
}

/// Posts batches until the task is dropped: as soon as there is something to post, then at
/// most once per interval unless a full batch waits.
pub async fn run_poster(queue: Arc<UsageQueue>, broker: Arc<Broker>) {
    loop {
        queue.nonempty().await;
        if let Err(e) = post_round(&queue, &broker).await {
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
            at: format!("2026-01-01T00:00:{n:02}Z"),
            pid: Some(n),
            uid: None,
            command: None,
            detail: None,
            count: None,
            last_at: None,
            exe: None,
            claimed_command: None,
            outside_exec: None,
        }
    }

    #[test]
    fn repeated_uses_coalesce_with_a_count_and_first_and_last_times() {
        let q = UsageQueue::new(3);
        for s in [1, 5, 9] {
            q.push(UsageReport { at: format!("2026-01-01T00:00:0{s}Z"), ..report(1) }).unwrap();
        }
        q.push(report(2)).unwrap();
        let r = q.take(10);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].count, Some(3));
        assert_eq!(r[0].at, "2026-01-01T00:00:01Z");
        assert_eq!(r[0].last_at.as_deref(), Some("2026-01-01T00:00:09Z"));
        assert_eq!((r[1].count, r[1].last_at.as_deref()), (None, None));
    }

    #[test]
    fn a_full_queue_refuses_new_keys_but_counts_queued_ones_and_drops_nothing() {
        let q = UsageQueue::new(3);
        for n in 0..3 {
            q.push(report(n)).unwrap();
        }
        assert_eq!(q.push(report(3)), Err(QueueFull));
        // A key already queued is counted whatever the capacity.
        q.push(report(1)).unwrap();
        // All or none: one new key among known ones is refused as a whole.
        assert_eq!(q.push_all(vec![report(0), report(7)]), Err(QueueFull));
        let r = q.take(10);
        let pids: Vec<(Option<u32>, Option<u64>)> = r.iter().map(|r| (r.pid, r.count)).collect();
        assert_eq!(pids, [(Some(0), None), (Some(1), Some(2)), (Some(2), None)]);
    }

    #[test]
    fn records_being_posted_keep_their_slots_and_come_back_first_merged() {
        let q = UsageQueue::new(3);
        q.push(report(1)).unwrap();
        q.push(report(2)).unwrap();
        let taken = q.take(2);
        q.push(report(3)).unwrap();
        // Two in flight and one queued: the queue is full, also for the keys in flight.
        assert_eq!(q.push(report(4)), Err(QueueFull));
        assert_eq!(q.push(report(2)), Err(QueueFull));
        q.push(report(3)).unwrap();
        q.put_back(taken);
        // Back first, and merged with uses of the same key queued meanwhile.
        q.push(report(2)).unwrap();
        let r = q.take(10);
        let pids: Vec<(Option<u32>, Option<u64>)> = r.iter().map(|r| (r.pid, r.count)).collect();
        assert_eq!(pids, [(Some(1), None), (Some(2), Some(2)), (Some(3), Some(2))]);
        q.sent(3);
        q.push(report(4)).unwrap();
    }

    #[test]
    fn lost_reports_become_a_record_of_their_count() {
        let q = UsageQueue::new(2);
        q.push(report(1)).unwrap();
        q.push(UsageReport { count: Some(4), ..report(2) }).unwrap();
        let taken = q.take(2);
        q.lost(&taken, "HTTP 400");
        assert_eq!(q.lost_total(), 5);
        let r = q.take(10);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].detail.as_deref(), Some(LOST_DETAIL));
        assert_eq!(r[0].count, Some(5));
    }

    #[test]
    fn who_is_the_executable_not_the_name_a_process_gives_itself() {
        let who = Who::new(Some("/usr/bin/python3.11"), Some("make"));
        assert_eq!(who.command, "python3.11");
        assert_eq!(who.exe.as_deref(), Some("/usr/bin/python3.11"));
        assert_eq!(who.comm.as_deref(), Some("make"));
        let who = Who::new(Some("/usr/bin/cat"), Some("cat"));
        assert_eq!((who.command.as_str(), who.comm), ("cat", None));
        let who = Who::new(Some("/tmp/x\u{202e}txt.sh (deleted)"), None);
        assert_eq!(who.command, "x\\u{202e}txt.sh");
        assert_eq!(Who::new(None, Some("cat")).command, UNKNOWN_COMMAND);
    }

    #[test]
    fn observer_turns_accesses_into_records_and_refuses_when_full() {
        let q = UsageQueue::new(2);
        let obs = FsObserver(q.clone());
        let denied = Access {
            secret: String::new(),
            path: "X".into(),
            pid: 8,
            uid: 1001,
            exe: None,
            command: None,
            allowed: false,
            reason: Some("uid 1001 is not the sandbox user".into()),
        };
        obs.record(denied.clone()).unwrap();
        obs.record(Access {
            secret: "AWS".into(),
            path: "aws/credentials".into(),
            pid: 7,
            uid: 1000,
            exe: Some("/usr/bin/cat".into()),
            command: Some("cat\n".into()),
            allowed: true,
            reason: None,
        })
        .unwrap();
        let third = Access {
            secret: "AWS".into(),
            path: "aws/config".into(),
            pid: 9,
            uid: 1000,
            exe: Some("/usr/bin/cat".into()),
            command: None,
            allowed: true,
            reason: None,
        };
        // An allowed use that cannot be recorded is refused; a denial is refused anyway, and
        // never takes the slots allowed uses need.
        assert_eq!(obs.record(third), Err(NotRecorded));
        assert_eq!(obs.record(Access { pid: 10, ..denied }), Ok(()));
        let r = q.take(10);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].action, UsageAction::Denied);
        assert_eq!(r[0].secret, None);
        assert_eq!(r[0].detail.as_deref(), Some("X: uid 1001 is not the sandbox user"));
        assert_eq!(r[1].action, UsageAction::FileRead);
        assert_eq!(r[1].command.as_deref(), Some("cat"));
        assert_eq!(r[1].exe.as_deref(), Some("/usr/bin/cat"));
        assert_eq!(r[1].detail.as_deref(), Some("aws/credentials"));
    }

    #[tokio::test]
    async fn the_first_report_after_a_quiet_time_wakes_the_poster() {
        let q = UsageQueue::new(1000);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.nonempty().await })
        };
        tokio::task::yield_now().await;
        q.push(report(1)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn several_uses_at_once_wake_the_poster_too() {
        let q = UsageQueue::new(1000);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.nonempty().await })
        };
        tokio::task::yield_now().await;
        q.push_all(vec![report(1), report(2)]).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn due_wakes_early_when_a_batch_is_full() {
        let q = UsageQueue::new(10_000);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.due(Duration::from_secs(30)).await })
        };
        for n in 0..BATCH_TRIGGER as u32 {
            q.push(report(n)).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_decoy_open_by_anyone_is_a_decoy_read_sent_without_waiting_for_the_interval() {
        let q = UsageQueue::new(10_000);
        let obs = FsObserver(q.clone());
        // The poster sleeps in `due` after a round: a decoy read must wake it.
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.due(Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        let root_read = Access {
            secret: "aws-prod-admin".into(),
            path: "aws-prod-admin/credentials".into(),
            pid: 42,
            uid: 0,
            exe: Some("/usr/bin/cat".into()),
            command: Some("cat".into()),
            allowed: true,
            reason: None,
        };
        obs.record(root_read).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        // A refused open (a foreign uid) is reported too, as a decoy read.
        obs.record(Access {
            secret: "deploy-token".into(),
            path: "deploy-token/token".into(),
            pid: 43,
            uid: 1001,
            exe: Some("/usr/bin/python3".into()),
            command: Some("python3".into()),
            allowed: false,
            reason: Some("uid 1001 is not the sandbox user".into()),
        })
        .unwrap();
        let r = q.take(10);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.action == UsageAction::DecoyRead));
        assert_eq!(r[0].secret.as_deref(), Some("aws-prod-admin"));
        assert_eq!(r[0].detail.as_deref(), Some("aws-prod-admin/credentials"));
        assert_eq!((r[0].pid, r[0].uid, r[0].command.as_deref()), (Some(42), Some(0), Some("cat")));
        assert_eq!(
            r[1].detail.as_deref(),
            Some("deploy-token/token (refused: uid 1001 is not the sandbox user)")
        );
        // A real secret's read stays an ordinary file read.
        obs.record(Access {
            secret: "AWS_PROD".into(),
            path: "aws/credentials".into(),
            pid: 44,
            uid: 1000,
            exe: None,
            command: None,
            allowed: true,
            reason: None,
        })
        .unwrap();
        assert_eq!(q.take(10)[0].action, UsageAction::FileRead);
    }

    #[test]
    fn a_decoy_read_that_cannot_be_recorded_is_refused() {
        let q = UsageQueue::new(1);
        let obs = FsObserver(q.clone());
        q.push(report(1)).unwrap();
        let read = Access {
            secret: "deploy-token".into(),
            path: "deploy-token/token".into(),
            pid: 7,
            uid: 1000,
            exe: None,
            command: None,
            allowed: true,
            reason: None,
        };
        assert_eq!(obs.record(read), Err(NotRecorded));
    }
}
