//! The store contract suite (`maestro_broker::store::testing`) on a real PostgreSQL cluster:
//! every behaviour of the store, its concurrency rules included (racing activations, edits,
//! ends and enrollments), held by the PostgreSQL engine exactly as the broker's unit tests
//! hold it on SQLite. Each contract test gets a database of its own on one temporary cluster.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use maestro_broker::store::engine::DatabaseUrl;
use maestro_broker::store::postgres::PgStore;
use maestro_broker::store::testing::{self, ContractStore};
use maestro_tests::pg::Postgres;

/// An open store and the database under it; the store closes before the database goes.
struct Opened {
    store: Arc<PgStore>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        let store = self.store.clone();
        // Close the pool's connections before the next test makes its database.
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(store.close());
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_contract_holds_on_postgres() {
    let Some(pg) = Postgres::start() else { return };
    let pg = &pg;
    let mut made = 0;
    testing::run_all(|_| {
        made += 1;
        async move {
            let db = pg.create_database(&format!("contract_{made}"));
            let url = DatabaseUrl::parse(&db.url()).unwrap();
            let store = Arc::new(PgStore::open(&url).await.unwrap());
            (Opened { store: store.clone() }, store as Arc<dyn ContractStore>)
        }
    })
    .await;
}
