//! The migration lock: PostgreSQL session advisory locks with golang-migrate's keys, so cutover
//! and golang-migrate exclude each other.
//!
//! golang-migrate's key (database/util.go, `GenerateAdvisoryLockId(databaseName,
//! additionalNames...)`): the additional names, then the database name, joined with NUL bytes;
//! CRC-32 (IEEE) of that; times the salt 1486364155 in 32-bit arithmetic; used as a bigint.
//! The postgres driver calls it as `(DatabaseName, schema, table)`; releases before v4.15 called
//! it as `(DatabaseName, schema)`.
//!
//! Which `DatabaseName` golang-migrate hashes depends on how it was started: through a URL (the
//! `migrate` CLI, `migrate.New`) it is the URL's path, with its leading slash (`/app`); through
//! `WithInstance` it is `current_database()` (`app`). cutover cannot know which one the other
//! side uses, so it takes every key golang-migrate could take for this database, schema and
//! table: all or none at once (try-lock, release on partial success, retry), which cannot
//! deadlock with anyone.

use super::MigrateError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// golang-migrate's `advisoryLockIDSalt`.
pub const ADVISORY_LOCK_SALT: u32 = 1_486_364_155;

/// How often a waiting migrator retries the lock.
const POLL: Duration = Duration::from_millis(100);

/// golang-migrate's `GenerateAdvisoryLockId(database_name, additional...)`.
pub fn advisory_lock_id(database_name: &str, additional: &[&str]) -> i64 {
    let mut hasher = crc32fast::Hasher::new();
    for name in additional {
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
    }
    hasher.update(database_name.as_bytes());
    i64::from(hasher.finalize().wrapping_mul(ADVISORY_LOCK_SALT))
}

/// Every key golang-migrate's postgres driver may lock for `database` (as `current_database()`
/// names it), `schema` and `table`: current and pre-v4.15 releases, URL-started and
/// instance-started. Sorted and without duplicates.
pub fn lock_keys(database: &str, schema: &str, table: &str) -> Vec<i64> {
    let url_path = format!("/{database}");
    let mut keys = Vec::new();
    for name in [url_path.as_str(), database] {
        keys.push(advisory_lock_id(name, &[schema, table]));
        keys.push(advisory_lock_id(name, &[schema]));
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// A session that holds (one of) the migration lock keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: i32,
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    pub user: Option<String>,
    /// Its state (`active`, `idle`, ...) and since when, as pg_stat_activity says.
    pub state: Option<String>,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        let mut extra = Vec::new();
        if let Some(app) = self.application_name.as_deref().filter(|a| !a.is_empty()) {
            extra.push(format!("application {app:?}"));
        }
        if let Some(user) = &self.user {
            extra.push(format!("user {user:?}"));
        }
        // Hidden (NULL) for other roles' sessions unless we may read all stats.
        if let Some(addr) = &self.client_addr {
            extra.push(format!("from {addr}"));
        }
        if let Some(state) = &self.state {
            extra.push(format!("state {state}"));
        }
        if !extra.is_empty() {
            write!(f, " ({})", extra.join(", "))?;
        }
        Ok(())
    }
}

/// Takes all of `keys` on `client`'s session within `timeout`, polling. On timeout, the error
/// names the sessions holding them. `on_wait` is called once, with the holders, when the first
/// attempt fails.
pub(crate) async fn acquire(
    client: &Client,
    keys: &[i64],
    timeout: Duration,
    mut on_wait: impl FnMut(&[LockHolder]),
) -> Result<(), MigrateError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut waited = false;
    loop {
        if try_all(client, keys).await? {
            if waited {
                tracing::info!(
                    waited_ms = started.elapsed().as_millis() as u64,
                    "migration lock acquired"
                );
            }
            return Ok(());
        }
        if !waited {
            waited = true;
            let holders = holders(client, keys).await.unwrap_or_default();
            tracing::info!(
                holders = %holders.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                "waiting for the migration lock"
            );
            on_wait(&holders);
        }
        let now = Instant::now();
        if now >= deadline {
            let holders = holders(client, keys).await?;
            return Err(MigrateError::LockTimeout {
                waited: timeout,
                holders,
            });
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

/// Tries every key; on a miss releases those it got and returns false.
async fn try_all(client: &Client, keys: &[i64]) -> Result<bool, MigrateError> {
    let mut got = Vec::new();
    for &key in keys {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(|e| MigrateError::query("taking the migration lock", e))?;
        if row.get::<_, bool>(0) {
            got.push(key);
        } else {
            release(client, &got).await?;
            return Ok(false);
        }
    }
    Ok(true)
}

/// Releases `keys` (each taken once by this session).
pub(crate) async fn release(client: &Client, keys: &[i64]) -> Result<(), MigrateError> {
    for &key in keys {
        client
            .query_one("SELECT pg_advisory_unlock($1)", &[&key])
            .await
            .map_err(|e| MigrateError::query("releasing the migration lock", e))?;
    }
    Ok(())
}

/// The sessions of this database holding any of `keys`. A bigint advisory key shows in pg_locks
/// as classid (high 32 bits) and objid (low 32 bits) with objsubid 1. Fields of other users'
/// sessions may be hidden from an unprivileged role; the pid never is.
pub(crate) async fn holders(
    client: &Client,
    keys: &[i64],
) -> Result<Vec<LockHolder>, MigrateError> {
    let rows = client
        .query(
            "SELECT DISTINCT l.pid, a.application_name, host(a.client_addr), a.usename::text, \
                    a.state || coalesce(' since ' || to_char(a.state_change, 'HH24:MI:SS'), '') \
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY($1) \
               AND l.pid <> pg_backend_pid() \
             ORDER BY l.pid",
            &[&keys],
        )
        .await
        .map_err(|e| MigrateError::query("looking up who holds the migration lock", e))?;
    Ok(rows
        .iter()
        .map(|row| LockHolder {
            pid: row.get(0),
            application_name: row.get(1),
            client_addr: row.get(2),
            user: row.get(3),
            state: row.get(4),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// golang-migrate's own test vectors (database/util_test.go), which match the formula.
    #[test]
    fn lock_ids_match_golang_migrate() {
        assert_eq!(advisory_lock_id("database_name", &[]), 1764327054);
        assert_eq!(
            advisory_lock_id("database_name", &["schema_name_1"]),
            2453313553
        );
        assert_eq!(
            advisory_lock_id("database_name", &["schema_name_2"]),
            235207038
        );
        assert_eq!(
            advisory_lock_id("database_name", &["schema_name_1", "schema_name_2"]),
            3743845847
        );
    }

    #[test]
    fn lock_ids_for_the_postgres_driver() {
        // crc32("public\0schema_migrations\0/app") * 1486364155 mod 2^32; the literals were computed
        // independently (Python's zlib.crc32).
        let current_url = advisory_lock_id("/app", &["public", "schema_migrations"]);
        let expected = crc32fast::hash(b"public\0schema_migrations\0/app").wrapping_mul(1486364155);
        assert_eq!(current_url, i64::from(expected));
        assert_eq!(current_url, 1_726_534_663);
        assert_eq!(
            advisory_lock_id("app", &["public", "schema_migrations"]),
            1_787_120_056
        );
        assert_eq!(advisory_lock_id("/app", &["public"]), 2_621_266_710);
        assert_eq!(advisory_lock_id("app", &["public"]), 2_802_248_011);
        let keys = lock_keys("app", "public", "schema_migrations");
        assert_eq!(keys.len(), 4);
        assert!(keys.contains(&current_url));
        assert!(keys.contains(&advisory_lock_id("app", &["public", "schema_migrations"])));
        assert!(keys.contains(&advisory_lock_id("/app", &["public"])));
        assert!(keys.contains(&advisory_lock_id("app", &["public"])));
        assert!(keys.iter().all(|k| (0..=i64::from(u32::MAX)).contains(k)));
    }
}
