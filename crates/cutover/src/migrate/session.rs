//! One migration session: the single dedicated connection that takes the lock, reads and writes
//! `schema_migrations` exactly as golang-migrate's postgres driver does, keeps cutover's checksum
//! side table, and runs the files.

use super::files::{Migration, MigrationFile};
use super::lock;
use super::{MigrateError, Options};
use crate::services::postgres::{custom_param, pg_config};
use crate::services::redact_url;
use std::collections::BTreeMap;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// golang-migrate's default `MigrationsTable`.
pub const VERSION_TABLE: &str = "schema_migrations";
/// cutover's side table; golang-migrate never reads it.
pub const CHECKSUM_TABLE: &str = "cutover_migration_checksums";

/// What `schema_migrations` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DbVersion {
    /// `None`: no row (never migrated, or migrated all the way down), or golang-migrate's
    /// `-1` (NilVersion) row, written when a down migration of the first version failed.
    pub version: Option<u64>,
    pub dirty: bool,
}

/// A checksum recorded when a file was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub name: String,
    pub sha256: String,
}

/// The side-table change committed together with a version change.
pub(crate) enum ChecksumChange<'a> {
    None,
    /// An up file was applied.
    Record(&'a Migration),
    /// A version was migrated down.
    Forget(u64),
    /// `force`: versions above this one are no longer applied (`None`: all of them).
    ForgetAbove(Option<u64>),
}

pub(crate) struct Session {
    client: Client,
    driver: JoinHandle<()>,
    pub database: String,
    pub schema: String,
    pub table: String,
    /// Lock keys held by this session.
    locked: Vec<i64>,
}

impl Session {
    /// Opens the dedicated connection and learns the database and schema names.
    pub async fn connect(url: &str, options: &Options) -> Result<Session, MigrateError> {
        let target = redact_url(url);
        let mut config = pg_config(url).map_err(|reason| MigrateError::Url {
            target: target.clone(),
            reason,
        })?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("cutover migrate");
        }
        let connect = tokio::time::timeout(options.connect_timeout, config.connect(NoTls));
        let (client, connection) = match connect.await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                return Err(MigrateError::Connect {
                    target,
                    reason: super::describe(&e),
                    sqlstate: e.code().map(|c| c.code().to_string()),
                })
            }
            Err(_) => {
                return Err(MigrateError::Connect {
                    target,
                    reason: format!(
                        "no answer within {}",
                        humantime::format_duration(options.connect_timeout)
                    ),
                    sqlstate: None,
                })
            }
        };
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "migration connection ended");
            }
        });
        let row = client
            .query_one(
                "SELECT current_database()::text, current_schema()::text",
                &[],
            )
            .await
            .map_err(|e| MigrateError::query("reading the current database and schema", e))?;
        let database: String = row.get(0);
        let schema: Option<String> = row.get(1);
        let schema = schema.ok_or_else(|| MigrateError::NoSchema {
            target: target.clone(),
        })?;
        let table = custom_param(url, "x-migrations-table")
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| VERSION_TABLE.to_string());
        Ok(Session {
            client,
            driver,
            database,
            schema,
            table,
            locked: Vec::new(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn version_table(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    fn checksum_table(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(CHECKSUM_TABLE)
        )
    }

    /// The golang-migrate lock keys for this database, schema and table.
    pub fn lock_keys(&self) -> Vec<i64> {
        lock::lock_keys(&self.database, &self.schema, &self.table)
    }

    /// Takes the migration lock within `options.lock_timeout`.
    pub async fn lock(&mut self, options: &Options) -> Result<(), MigrateError> {
        let keys = self.lock_keys();
        lock::acquire(&self.client, &keys, options.lock_timeout, |holders| {
            options.report(super::Progress::WaitingForLock {
                holders: holders.to_vec(),
            })
        })
        .await?;
        self.locked = keys;
        options.report(super::Progress::LockAcquired);
        Ok(())
    }

    /// Releases the lock and closes the connection. Closing ends the session, which releases
    /// session locks anyway, so an unlock failure is only logged.
    pub async fn close(mut self) {
        let keys = std::mem::take(&mut self.locked);
        if !keys.is_empty() {
            if let Err(e) = lock::release(&self.client, &keys).await {
                tracing::warn!(error = %e, "releasing the migration lock failed; closing the session releases it");
            }
        }
        let Session { client, driver, .. } = self;
        drop(client);
        let _ = driver.await;
    }

    /// Creates `schema_migrations` like golang-migrate's `ensureVersionTable` (checking first, so
    /// a role without CREATE can use an existing table), and the checksum side table.
    pub async fn ensure_tables(&self) -> Result<(), MigrateError> {
        let row = self
            .client
            .query_one(
                "SELECT COUNT(1) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2 LIMIT 1",
                &[&self.schema, &self.table],
            )
            .await
            .map_err(|e| MigrateError::query("looking for the schema_migrations table", e))?;
        if row.get::<_, i64>(0) != 1 {
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {} (version bigint not null primary key, dirty boolean not null)",
                self.version_table()
            );
            self.client
                .batch_execute(&create)
                .await
                .map_err(|e| MigrateError::query("creating the schema_migrations table", e))?;
        }
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} (version bigint not null primary key, name text not null, \
             sha256 text not null, applied_at timestamptz not null default now())",
            self.checksum_table()
        );
        self.client
            .batch_execute(&create)
            .await
            .map_err(|e| MigrateError::query("creating the cutover_migration_checksums table", e))
    }

    /// golang-migrate's `Version()`: the one row of `schema_migrations`; no table or no row is
    /// no version.
    pub async fn read_version(&self) -> Result<DbVersion, MigrateError> {
        let query = format!(
            "SELECT version, dirty FROM {} LIMIT 2",
            self.version_table()
        );
        let rows = match self.client.query(&query, &[]).await {
            Ok(rows) => rows,
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                return Ok(DbVersion {
                    version: None,
                    dirty: false,
                })
            }
            Err(e) => return Err(MigrateError::query("reading schema_migrations", e)),
        };
        if rows.len() > 1 {
            return Err(MigrateError::BadVersionTable {
                reason: format!("{} holds more than one row", self.table),
            });
        }
        let Some(row) = rows.first() else {
            return Ok(DbVersion {
                version: None,
                dirty: false,
            });
        };
        let version: i64 = row.get(0);
        let dirty: bool = row.get(1);
        let version = match version {
            -1 => None,
            v => Some(u64::try_from(v).map_err(|_| MigrateError::BadVersionTable {
                reason: format!("{} holds the negative version {v}", self.table),
            })?),
        };
        Ok(DbVersion { version, dirty })
    }

    /// golang-migrate's `SetVersion(version, dirty)`: in one transaction, `TRUNCATE` then
    /// `INSERT (version, dirty)` when there is a version or the state is dirty (`-1` stands for
    /// no version). The checksum side table changes in the same transaction.
    pub async fn set_version(
        &mut self,
        version: Option<u64>,
        dirty: bool,
        checksum: ChecksumChange<'_>,
    ) -> Result<(), MigrateError> {
        let action = if dirty {
            "marking schema_migrations dirty"
        } else {
            "recording the new version in schema_migrations"
        };
        let truncate = format!("TRUNCATE {}", self.version_table());
        let insert = format!(
            "INSERT INTO {} (version, dirty) VALUES ($1, $2)",
            self.version_table()
        );
        let checksums = self.checksum_table();
        let tx = self
            .client
            .transaction()
            .await
            .map_err(|e| MigrateError::query(action, e))?;
        tx.batch_execute(&truncate)
            .await
            .map_err(|e| MigrateError::query(action, e))?;
        if version.is_some() || dirty {
            let v: i64 = match version {
                Some(v) => {
                    i64::try_from(v).map_err(|_| MigrateError::VersionTooLarge { version: v })?
                }
                None => -1,
            };
            tx.execute(&insert, &[&v, &dirty])
                .await
                .map_err(|e| MigrateError::query(action, e))?;
        }
        let result = match checksum {
            ChecksumChange::None => Ok(0),
            ChecksumChange::Record(migration) => match &migration.up {
                Some(file) => {
                    tx.execute(
                        &format!(
                            "INSERT INTO {checksums} (version, name, sha256) VALUES ($1, $2, $3) \
                             ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, \
                             sha256 = EXCLUDED.sha256, applied_at = now()"
                        ),
                        &[&(migration.version as i64), &file.name, &file.sha256],
                    )
                    .await
                }
                None => {
                    tx.execute(
                        &format!("DELETE FROM {checksums} WHERE version = $1"),
                        &[&(migration.version as i64)],
                    )
                    .await
                }
            },
            ChecksumChange::Forget(v) => {
                tx.execute(
                    &format!("DELETE FROM {checksums} WHERE version = $1"),
                    &[&(v as i64)],
                )
                .await
            }
            ChecksumChange::ForgetAbove(v) => {
                let v = v.map_or(-1, |v| v as i64);
                tx.execute(
                    &format!("DELETE FROM {checksums} WHERE version > $1"),
                    &[&v],
                )
                .await
            }
        };
        result.map_err(|e| MigrateError::query("updating cutover_migration_checksums", e))?;
        tx.commit()
            .await
            .map_err(|e| MigrateError::query(action, e))
    }

    /// The recorded checksums by version; none when the side table does not exist yet.
    pub async fn checksums(&self) -> Result<BTreeMap<u64, Recorded>, MigrateError> {
        let query = format!(
            "SELECT version, name, sha256 FROM {}",
            self.checksum_table()
        );
        let rows = match self.client.query(&query, &[]).await {
            Ok(rows) => rows,
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(BTreeMap::new()),
            Err(e) => {
                return Err(MigrateError::query(
                    "reading cutover_migration_checksums",
                    e,
                ))
            }
        };
        Ok(rows
            .iter()
            .filter_map(|row| {
                let version: i64 = row.get(0);
                Some((
                    u64::try_from(version).ok()?,
                    Recorded {
                        name: row.get(1),
                        sha256: row.get(2),
                    },
                ))
            })
            .collect())
    }

    /// Records the checksums of applied files: those that have none (a database taken over from
    /// golang-migrate, so that from now on a change to them is noticed), and changed files that
    /// were explicitly allowed to run.
    pub async fn record_checksums(
        &self,
        files: &[(u64, &MigrationFile)],
    ) -> Result<(), MigrateError> {
        let query = format!(
            "INSERT INTO {} (version, name, sha256) VALUES ($1, $2, $3) ON CONFLICT (version) \
             DO UPDATE SET name = EXCLUDED.name, sha256 = EXCLUDED.sha256, applied_at = now()",
            self.checksum_table()
        );
        for (version, file) in files {
            self.client
                .execute(&query, &[&(*version as i64), &file.name, &file.sha256])
                .await
                .map_err(|e| {
                    MigrateError::query("recording checksums of already-applied files", e)
                })?;
        }
        Ok(())
    }

    /// Runs one file as a single simple-query batch, like golang-migrate (no transaction added:
    /// PostgreSQL runs a multi-statement batch as one implicit transaction unless the file has
    /// its own BEGIN/COMMIT).
    pub async fn run(&self, file: &MigrationFile) -> Result<(), tokio_postgres::Error> {
        if file.sql.trim().is_empty() {
            return Ok(());
        }
        self.client.batch_execute(&file.sql).await
    }
}

/// A double-quoted SQL identifier (pq.QuoteIdentifier).
pub(crate) fn quote_ident(name: &str) -> String {
    let name = name.split('\0').next().unwrap_or("");
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers_like_pq() {
        assert_eq!(quote_ident("public"), "\"public\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_ident("a\0b"), "\"a\"");
    }
}
