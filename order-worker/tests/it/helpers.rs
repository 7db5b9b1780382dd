//! Test databases: SQLite in a temporary directory, and a fresh PostgreSQL
//! database per test (`CREATE DATABASE t_<unique>` on the server at
//! `DATABASE_URL`, default the local one as user postgres), dropped after.
//! Without a PostgreSQL server the test says so loudly and skips — unless
//! `FLASHSALE_REQUIRE_SERVICES=1`, where it fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A SQLite database file that lives as long as this value.
pub(crate) struct TestSqlite {
    _dir: tempfile::TempDir,
    pub(crate) url: String,
}

pub(crate) fn test_sqlite() -> TestSqlite {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("orders.db").display()
    );
    TestSqlite { _dir: dir, url }
}

/// A fresh PostgreSQL database, dropped when this value goes.
pub(crate) struct TestPostgres {
    admin_url: String,
    name: String,
    pub(crate) url: String,
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async code: a small runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh database, or `None` (loudly) when no server can be reached.
pub(crate) async fn test_postgres() -> Option<TestPostgres> {
    let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned());
    let mut admin = match PgConnection::connect(&admin_url).await {
        Ok(connection) => connection,
        Err(e) => {
            let required = std::env::var("FLASHSALE_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
            eprintln!(
                "\n*** PostgreSQL unavailable at DATABASE_URL (or the local default): {e} ***"
            );
            assert!(
                !required,
                "PostgreSQL is required (FLASHSALE_REQUIRE_SERVICES=1): {e}"
            );
            eprintln!("*** skipping the PostgreSQL half of this test ***\n");
            return None;
        }
    };
    let name = unique_name();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = admin_url.split('?').next().unwrap();
    let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
    Some(TestPostgres {
        admin_url,
        name,
        url,
    })
}
