//! A large, realistic audit trail written straight into a broker's database (SQLite file or
//! PostgreSQL), for the history benchmark (`maestro-bench history`) and the scale test
//! (tests/audit_scale.rs): the user API would take hours to make a million records.
//!
//! The spread: sessions (with about one label per ten sessions) start evenly over `days` days
//! and live two days each; each uses three of the owner's secrets; records follow time (so
//! `seq` follows `at`, as on a real broker), each from one of the sessions alive at its time,
//! with a command from a dozen, mostly `injected` and `file_read`, some coalesced (a count of
//! 2 to 50 and a last time). Everything is generated from a fixed seed: the same call makes the
//! same trail, and [`Seeded`] says what the summary of each secret must show.
//!
//! The SQL is literal text built here from generated numbers and the fixed names below (no
//! outside input), in multi-row `INSERT`s of [`ROWS_PER_INSERT`] inside one transaction.

use std::collections::BTreeMap;

use sqlx::Connection;

/// Rows per `INSERT` statement.
const ROWS_PER_INSERT: usize = 1000;
/// How long a seeded session lives.
const SESSION_SECONDS: i64 = 2 * 86_400;
/// The commands records name.
pub const COMMANDS: [&str; 12] = [
    "aws",
    "git",
    "psql",
    "curl",
    "terraform",
    "kubectl",
    "gh",
    "npm",
    "cargo",
    "python3",
    "node",
    "docker",
];

/// What to seed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The owner of every record (and of the sessions made).
    pub owner_id: i64,
    /// `(id, name)` of the owner's secrets that the records are about.
    pub secrets: Vec<(String, String)>,
    /// How many sessions to make (rows of `sessions`, ids `seed-<n>`).
    pub sessions: usize,
    pub records: usize,
    /// The trail ends at `now` and starts `days` days before.
    pub now: i64,
    pub days: i64,
}

/// What a secret's summary must show after seeding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Uses (coalesced records count their count).
    pub uses: u64,
    /// Records with a use action.
    pub records: u64,
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
    /// Uses per command.
    pub commands: BTreeMap<String, u64>,
    /// Distinct sessions with uses.
    pub sessions: usize,
}

/// What was seeded.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    /// By secret name.
    pub expected: BTreeMap<String, Expected>,
    /// The label of session `seed-<n>` (one label per ten sessions).
    pub labels: Vec<String>,
    pub records: usize,
}

/// xorshift64*: deterministic, fast, good enough for a spread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The id of seeded session `n`.
pub fn session_id(n: usize) -> String {
    format!("seed-{n:06}")
}

/// The label of seeded session `n`.
pub fn session_label(n: usize) -> String {
    format!("agent-{:04}", n / 10)
}

fn session_start(plan: &Plan, n: usize) -> i64 {
    let span = plan.days * 86_400;
    plan.now - span + (span * n as i64) / plan.sessions.max(1) as i64
}

/// Every statement that seeds `plan`, and what it makes.
pub fn statements(plan: &Plan) -> (Vec<String>, Seeded) {
    assert!(!plan.secrets.is_empty() && plan.sessions > 0 && plan.days > 0);
    let mut out = Vec::new();
    let mut seeded = Seeded { records: plan.records, ..Seeded::default() };
    // Sessions: ended ones, as most sessions of a 90-day trail are.
    let mut rows = Vec::new();
    for n in 0..plan.sessions {
        let start = session_start(plan, n);
        let label = session_label(n);
        rows.push(format!(
            "('{}', {}, '{label}', {start}, {}, {}, 'ended')",
            session_id(n),
            plan.owner_id,
            start + SESSION_SECONDS,
            start + SESSION_SECONDS,
        ));
        seeded.labels.push(label);
        if rows.len() == ROWS_PER_INSERT || n + 1 == plan.sessions {
            out.push(format!(
                "INSERT INTO sessions (id, owner_id, label, created_at, expires_at, ended_at, \
                 ended_reason) VALUES {}",
                rows.join(", ")
            ));
            rows.clear();
        }
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let span = plan.days * 86_400;
    let start = plan.now - span;
    let mut sessions_of: BTreeMap<String, std::collections::BTreeSet<usize>> = BTreeMap::new();
    for i in 0..plan.records {
        let at = start + (span * i as i64) / plan.records.max(1) as i64;
        // A session alive at `at`: started within the last two days.
        let newest = ((at - start) * plan.sessions as i64 / span).clamp(0, plan.sessions as i64 - 1)
            as usize;
        let alive = (SESSION_SECONDS * plan.sessions as i64 / span).max(1) as u64;
        let session = newest.saturating_sub(rng.below(alive) as usize);
        let (secret_id, secret_name) =
            &plan.secrets[(session * 7 + rng.below(3) as usize * 5) % plan.secrets.len()];
        let command = COMMANDS[(session + rng.below(4) as usize * 3) % COMMANDS.len()];
        let roll = rng.below(100);
        let action = match roll {
            0..60 => "injected",
            60..85 => "file_read",
            85..95 => "fetched",
            _ => "denied",
        };
        let (count, last_at) = if action != "denied" && rng.below(5) == 0 {
            let c = 2 + rng.below(49);
            (c.to_string(), (at + rng.below(30) as i64 + 1).to_string())
        } else {
            ("NULL".to_owned(), "NULL".to_owned())
        };
        let uid = if rng.below(20) == 0 { 0 } else { 1000 };
        let pid = 1000 + rng.below(60_000);
        let detail = if action == "file_read" { "'seed/credentials'" } else { "NULL" };
        rows.push(format!(
            "({}, {at}, '{action}', '{secret_id}', '{secret_name}', '{}', {pid}, {uid}, \
             '{command}', {detail}, {count}, {last_at}, '/usr/bin/{command}')",
            plan.owner_id,
            session_id(session),
        ));
        if action != "denied" {
            let e = seeded.expected.entry(secret_name.clone()).or_default();
            let uses: u64 = count.parse().unwrap_or(1);
            e.uses += uses;
            e.records += 1;
            e.first_at = Some(e.first_at.map_or(at, |f| f.min(at)));
            let last: i64 = last_at.parse().unwrap_or(at);
            e.last_at = Some(e.last_at.map_or(last, |l| l.max(last)));
            *e.commands.entry(command.to_owned()).or_default() += uses;
            sessions_of.entry(secret_name.clone()).or_default().insert(session);
        }
        if rows.len() == ROWS_PER_INSERT || i + 1 == plan.records {
            out.push(format!(
                "INSERT INTO audit (owner_id, at, action, secret_id, secret_name, session_id, \
                 pid, uid, command, detail, use_count, last_at, exe) VALUES {}",
                rows.join(", ")
            ));
            rows.clear();
        }
    }
    for (name, sessions) in sessions_of {
        if let Some(e) = seeded.expected.get_mut(&name) {
            e.sessions = sessions.len();
        }
    }
    (out, seeded)
}

/// Seeds `plan` into the broker's SQLite file `db` (the broker may be running: WAL, and a
/// busy timeout for its own writes).
pub async fn seed_sqlite(db: &std::path::Path, plan: &Plan) -> anyhow::Result<Seeded> {
    use sqlx::sqlite::SqliteConnectOptions;
    let options =
        SqliteConnectOptions::new().filename(db).busy_timeout(std::time::Duration::from_secs(60));
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    // A large page cache for this connection only: the load updates eight indexes.
    sqlx::raw_sql("PRAGMA cache_size = -524288").execute(&mut conn).await?;
    let (statements, seeded) = statements(plan);
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut conn).await?;
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
    }
    sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
    conn.close().await?;
    Ok(seeded)
}

/// Seeds `plan` into the broker's PostgreSQL database at `url`, then `ANALYZE`s the tables
/// (what autovacuum does soon after such a load).
pub async fn seed_postgres(url: &str, plan: &Plan) -> anyhow::Result<Seeded> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let (statements, seeded) = statements(plan);
    sqlx::raw_sql("BEGIN").execute(&mut conn).await?;
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
    }
    sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
    sqlx::raw_sql("ANALYZE audit; ANALYZE sessions").execute(&mut conn).await?;
    conn.close().await?;
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_deterministic_and_adds_up() {
        let plan = Plan {
            owner_id: 1,
            secrets: (0..20).map(|i| (format!("id{i}"), format!("S{i}"))).collect(),
            sessions: 200,
            records: 10_000,
            now: 1_800_000_000,
            days: 90,
        };
        let (a, seeded) = statements(&plan);
        let (b, _) = statements(&plan);
        assert_eq!(a, b);
        assert_eq!(a.len(), 1 + 10);
        let records: u64 = seeded.expected.values().map(|e| e.records).sum();
        assert!(records > 9000 && records < 10_000, "{records}");
        assert!(seeded.expected.len() >= 15, "{}", seeded.expected.len());
        for e in seeded.expected.values() {
            assert!(e.uses >= e.records);
            assert!(e.first_at.unwrap() >= plan.now - 90 * 86_400);
        }
    }
}
