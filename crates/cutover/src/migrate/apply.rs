//! `up`, `down` and `force`: the steps that change the database, each under the migration lock.

use super::error::failed;
use super::files::{Direction, Migration, MigrationFile, Migrations};
use super::session::{ChecksumChange, Session};
use super::status::changed_files;
use super::{MigrateError, Options, Progress, Step};
use std::time::Instant;

/// Applies pending migrations, oldest first, at most `limit` of them (all when `None`).
/// Refuses a dirty database, and (unless `options.allow_changed`) a database whose applied
/// files changed. Returns the steps that ran; none when everything was applied already.
pub async fn up(
    url: &str,
    migrations: &Migrations,
    limit: Option<usize>,
    options: &Options,
) -> Result<Vec<Step>, MigrateError> {
    migrate_locked(url, options, async |session, version| {
        apply_up(session, migrations, version, limit, options).await
    })
    .await
}

async fn apply_up(
    session: &mut Session,
    migrations: &Migrations,
    version: Option<u64>,
    limit: Option<usize>,
    options: &Options,
) -> Result<Vec<Step>, MigrateError> {
    let recorded = session.checksums().await?;
    let changed = changed_files(migrations, version, &recorded);
    if !changed.is_empty() {
        if !options.allow_changed {
            return Err(MigrateError::Changed { files: changed });
        }
        for file in &changed {
            tracing::warn!(file = %file.path.display(), recorded = %file.recorded_sha256, now = %file.sha256,
                "running although an applied migration file changed; recording its new checksum");
        }
    }
    // Applied files without a checksum (taken over from golang-migrate) get one now; changed
    // files that were allowed get their new one.
    let adopt: Vec<(u64, &MigrationFile)> = migrations
        .through(version)
        .filter_map(|m| Some((m.version, m.up.as_ref()?)))
        .filter(|(v, f)| recorded.get(v).is_none_or(|r| r.sha256 != f.sha256))
        .collect();
    session.record_checksums(&adopt).await?;

    let mut steps = Vec::new();
    let pending: Vec<&Migration> = migrations
        .after(version)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    for migration in pending {
        let started = Instant::now();
        let file = migration.up.as_ref();
        options.report(Progress::Running {
            version: migration.version,
            direction: Direction::Up,
            file: file.map(|f| f.name.clone()),
        });
        session
            .set_version(Some(migration.version), true, ChecksumChange::None)
            .await?;
        if let Some(file) = file {
            tracing::info!(file = %file.name, "applying migration");
            session.run(file).await.map_err(|e| {
                failed(
                    file,
                    migration.version,
                    Direction::Up,
                    Some(migration.version),
                    &e,
                )
            })?;
        }
        session
            .set_version(
                Some(migration.version),
                false,
                ChecksumChange::Record(migration),
            )
            .await?;
        let step = Step {
            version: migration.version,
            direction: Direction::Up,
            file: file.map(|f| f.name.clone()),
            now_at: Some(migration.version),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        options.report(Progress::Done(step.clone()));
        steps.push(step);
    }
    Ok(steps)
}

/// Reverts the `n` newest applied migrations with their down files. Never run automatically.
pub async fn down(
    url: &str,
    migrations: &Migrations,
    n: usize,
    options: &Options,
) -> Result<Vec<Step>, MigrateError> {
    migrate_locked(url, options, async |session, version| {
        apply_down(session, migrations, version, n, options).await
    })
    .await
}

async fn apply_down(
    session: &mut Session,
    migrations: &Migrations,
    version: Option<u64>,
    n: usize,
    options: &Options,
) -> Result<Vec<Step>, MigrateError> {
    let mut current = version;
    let mut steps = Vec::new();
    for _ in 0..n {
        let Some(version) = current else { break };
        let migration = migrations
            .get(version)
            .ok_or_else(|| MigrateError::UnknownVersion {
                version,
                dir: migrations.dir().to_path_buf(),
            })?;
        let file = migration
            .down
            .as_ref()
            .ok_or_else(|| MigrateError::NoDownFile {
                version,
                dir: migrations.dir().to_path_buf(),
            })?;
        let target = migrations.previous(version);
        let started = Instant::now();
        options.report(Progress::Running {
            version,
            direction: Direction::Down,
            file: Some(file.name.clone()),
        });
        session
            .set_version(target, true, ChecksumChange::None)
            .await?;
        tracing::info!(file = %file.name, "reverting migration");
        session
            .run(file)
            .await
            .map_err(|e| failed(file, version, Direction::Down, target, &e))?;
        session
            .set_version(target, false, ChecksumChange::Forget(version))
            .await?;
        let step = Step {
            version,
            direction: Direction::Down,
            file: Some(file.name.clone()),
            now_at: target,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        options.report(Progress::Done(step.clone()));
        steps.push(step);
        current = target;
    }
    Ok(steps)
}

/// Sets the version and clears the dirty flag, after a person fixed the schema by hand
/// (`None`: no version). Runs no migration. Checksums of versions above it are forgotten.
pub async fn force(url: &str, version: Option<u64>, options: &Options) -> Result<(), MigrateError> {
    if let Some(v) = version {
        if i64::try_from(v).is_err() {
            return Err(MigrateError::VersionTooLarge { version: v });
        }
    }
    let mut session = Session::connect(url, options).await?;
    let result = async {
        session.lock(options).await?;
        session.ensure_tables().await?;
        session
            .set_version(version, false, ChecksumChange::ForgetAbove(version))
            .await
    }
    .await;
    session.close().await;
    result
}

/// Runs `migrate` on a session of its own that holds the migration lock, once the tables exist
/// and the database is known not to be dirty, from the version the database is at. The session
/// is closed however it ends.
async fn migrate_locked(
    url: &str,
    options: &Options,
    migrate: impl AsyncFnOnce(&mut Session, Option<u64>) -> Result<Vec<Step>, MigrateError>,
) -> Result<Vec<Step>, MigrateError> {
    let mut session = Session::connect(url, options).await?;
    let result = async {
        session.lock(options).await?;
        session.ensure_tables().await?;
        let db = session.read_version().await?;
        if db.dirty {
            return Err(MigrateError::Dirty {
                version: db.version,
            });
        }
        migrate(&mut session, db.version).await
    }
    .await;
    if result.is_err() {
        abandon_transaction(&session).await;
    }
    session.close().await;
    result
}

/// After a failed file, the session may be inside the file's own, aborted, transaction; end it
/// so the lock can be released cleanly.
async fn abandon_transaction(session: &Session) {
    let _ = session.client().batch_execute("ROLLBACK").await;
}
