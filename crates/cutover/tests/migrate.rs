//! golang-migrate compatible migrations against a real PostgreSQL 15 (started by `support`).

mod support;

use cutover::migrate::{self, Direction, MigrateError, Migrations, Options, Progress};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::Postgres;

const PASSWORD: &str = "Migr4te-s3cret";

fn options() -> Options {
    Options::new(Duration::from_secs(5))
}

fn write(dir: &Path, name: &str, sql: &str) {
    fs::write(dir.join(name), sql).unwrap();
}

/// Three migrations: a table, a column, an index.
fn three(dir: &Path) {
    write(
        dir,
        "000001_create_users.up.sql",
        "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);\n",
    );
    write(dir, "000001_create_users.down.sql", "DROP TABLE users;\n");
    write(
        dir,
        "000002_add_email.up.sql",
        "ALTER TABLE users ADD COLUMN email text;\n",
    );
    write(
        dir,
        "000002_add_email.down.sql",
        "ALTER TABLE users DROP COLUMN email;\n",
    );
    write(
        dir,
        "000003_index_email.up.sql",
        "-- two statements, one batch\nCREATE INDEX users_email ON users (email);\nCOMMENT ON INDEX users_email IS 'lookup';\n",
    );
    write(
        dir,
        "000003_index_email.down.sql",
        "DROP INDEX users_email;\n",
    );
}

async fn app(pg: &Postgres) -> String {
    pg.create_app("app", PASSWORD, "app").await
}

/// Rows of schema_migrations, as golang-migrate would read them.
async fn version_rows(pg: &Postgres) -> Vec<(i64, bool)> {
    let admin = pg.admin("app").await;
    admin
        .query("SELECT version, dirty FROM schema_migrations", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn checksum_rows(pg: &Postgres) -> Vec<(i64, String, String)> {
    let admin = pg.admin("app").await;
    admin
        .query(
            "SELECT version, name, sha256 FROM cutover_migration_checksums ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn table_exists(pg: &Postgres, name: &str) -> bool {
    let admin = pg.admin("app").await;
    let row = admin
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap();
    row.get(0)
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn up_down_force_and_status() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = app(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    write(dir.path(), "README.md", "not a migration");
    let migrations = Migrations::scan(dir.path()).unwrap();
    assert_eq!(migrations.len(), 3);
    assert_eq!(migrations.latest(), Some(3));

    let status = migrate::status(&url, &migrations, &options())
        .await
        .unwrap();
    assert_eq!((status.version, status.dirty), (None, false));
    assert_eq!(status.pending.len(), 3);
    assert!(status.applied.is_empty() && status.changed.is_empty());
    // status is read-only: it created nothing.
    assert!(!table_exists(&pg, "schema_migrations").await);

    let steps = migrate::up(&url, &migrations, Some(1), &options())
        .await
        .unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(
        (steps[0].version, steps[0].direction, steps[0].now_at),
        (1, Direction::Up, Some(1))
    );
    assert_eq!(steps[0].file.as_deref(), Some("000001_create_users.up.sql"));
    assert_eq!(version_rows(&pg).await, vec![(1, false)]);

    let events = Arc::new(Mutex::new(Vec::new()));
    let mut opts = options();
    let seen = events.clone();
    opts.progress = Some(Arc::new(move |p: &Progress| {
        seen.lock().unwrap().push(p.clone())
    }));
    let steps = migrate::up(&url, &migrations, None, &opts).await.unwrap();
    assert_eq!(
        steps.iter().map(|s| s.version).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let events = events.lock().unwrap().clone();
    assert!(matches!(events[0], Progress::LockAcquired), "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Progress::Done(_)))
            .count(),
        2
    );

    assert_eq!(version_rows(&pg).await, vec![(3, false)]);
    let checksums = checksum_rows(&pg).await;
    assert_eq!(checksums.len(), 3);
    assert_eq!(checksums[1].1, "000002_add_email.up.sql");
    assert_eq!(
        checksums[1].2,
        sha256_hex("ALTER TABLE users ADD COLUMN email text;\n")
    );

    let status = migrate::status(&url, &migrations, &options())
        .await
        .unwrap();
    assert_eq!(
        (status.version, status.dirty, status.unknown_version),
        (Some(3), false, false)
    );
    assert_eq!(status.applied.len(), 3);
    assert!(status.applied.iter().all(|a| a.recorded_sha256.is_some()));
    assert!(status.pending.is_empty());

    // Nothing left to do.
    assert!(migrate::up(&url, &migrations, None, &options())
        .await
        .unwrap()
        .is_empty());

    let steps = migrate::down(&url, &migrations, 2, &options())
        .await
        .unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.version, s.now_at))
            .collect::<Vec<_>>(),
        vec![(3, Some(2)), (2, Some(1))]
    );
    assert_eq!(version_rows(&pg).await, vec![(1, false)]);
    assert_eq!(checksum_rows(&pg).await.len(), 1);
    let admin = pg.admin("app").await;
    let email = admin
        .query("SELECT 1 FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email'", &[])
        .await
        .unwrap();
    assert!(email.is_empty(), "the down file dropped the column");

    // All the way down: golang-migrate leaves the table empty.
    let steps = migrate::down(&url, &migrations, 10, &options())
        .await
        .unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].now_at, None);
    assert_eq!(version_rows(&pg).await, vec![]);
    assert!(!table_exists(&pg, "users").await);

    // force sets the version and runs nothing.
    migrate::force(&url, Some(3), &options()).await.unwrap();
    assert_eq!(version_rows(&pg).await, vec![(3, false)]);
    assert!(!table_exists(&pg, "users").await);
    migrate::force(&url, None, &options()).await.unwrap();
    assert_eq!(version_rows(&pg).await, vec![]);
}

#[tokio::test]
async fn a_failing_migration_names_file_position_and_message_and_leaves_the_database_dirty() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = app(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "1_first.up.sql",
        "CREATE TABLE first (id int);\n",
    );
    write(dir.path(), "1_first.down.sql", "DROP TABLE first;\n");
    let bad = "CREATE TABLE second (id int);\n-- the next statement fails\nINSERT INTO nope VALUES (1);\n";
    write(dir.path(), "2_second.up.sql", bad);
    write(dir.path(), "2_second.down.sql", "DROP TABLE second;\n");
    let migrations = Migrations::scan(dir.path()).unwrap();

    let err = migrate::up(&url, &migrations, None, &options())
        .await
        .unwrap_err();
    let text = err.to_string();
    match &err {
        MigrateError::Failed {
            file,
            version,
            direction,
            line_column,
            message,
            sqlstate,
            dirty_at,
        } => {
            assert!(file.ends_with("2_second.up.sql"), "{text}");
            assert_eq!((*version, *direction), (2, Direction::Up));
            assert_eq!(*line_column, Some((3, 13)), "{text}");
            assert!(
                message.contains("relation \"nope\" does not exist"),
                "{text}"
            );
            assert_eq!(sqlstate.as_deref(), Some("42P01"));
            assert_eq!(*dirty_at, Some(2));
        }
        other => panic!("expected Failed, got {other}"),
    }
    assert!(
        text.contains("2_second.up.sql at line 3, column 13"),
        "{text}"
    );
    assert!(text.contains("dirty at version 2"), "{text}");

    // Left dirty at the failed version, as golang-migrate does; the file's batch was one
    // implicit transaction, so its first statement did not stick.
    assert_eq!(version_rows(&pg).await, vec![(2, true)]);
    assert!(table_exists(&pg, "first").await);
    assert!(!table_exists(&pg, "second").await);
    let status = migrate::status(&url, &migrations, &options())
        .await
        .unwrap();
    assert_eq!((status.version, status.dirty), (Some(2), true));

    // Every migration is refused until force.
    for result in [
        migrate::up(&url, &migrations, None, &options()).await,
        migrate::down(&url, &migrations, 1, &options()).await,
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, MigrateError::Dirty { version: Some(2) }),
            "{err}"
        );
        assert!(err.to_string().contains("migrate force"), "{err}");
    }
    assert_eq!(version_rows(&pg).await, vec![(2, true)]);

    // The manual fix: the file is corrected, the state forced back to 1, up again.
    write(
        dir.path(),
        "2_second.up.sql",
        "CREATE TABLE second (id int);\n",
    );
    let migrations = Migrations::scan(dir.path()).unwrap();
    migrate::force(&url, Some(1), &options()).await.unwrap();
    let steps = migrate::up(&url, &migrations, None, &options())
        .await
        .unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(version_rows(&pg).await, vec![(2, false)]);
    assert!(table_exists(&pg, "second").await);
}

#[tokio::test]
async fn a_changed_applied_file_is_refused() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = app(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    fs::remove_file(dir.path().join("000003_index_email.up.sql")).unwrap();
    fs::remove_file(dir.path().join("000003_index_email.down.sql")).unwrap();
    let migrations = Migrations::scan(dir.path()).unwrap();
    migrate::up(&url, &migrations, None, &options())
        .await
        .unwrap();

    let original = "ALTER TABLE users ADD COLUMN email text;\n";
    let edited = "ALTER TABLE users ADD COLUMN email varchar(200);\n";
    write(dir.path(), "000002_add_email.up.sql", edited);
    three_only_third(dir.path());
    let migrations = Migrations::scan(dir.path()).unwrap();

    let status = migrate::status(&url, &migrations, &options())
        .await
        .unwrap();
    assert_eq!(status.changed.len(), 1);
    assert_eq!(status.changed[0].file, "000002_add_email.up.sql");
    assert_eq!(status.pending.len(), 1);

    let err = migrate::up(&url, &migrations, None, &options())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MigrateError::Changed { .. }), "{text}");
    assert!(text.contains("000002_add_email.up.sql"), "{text}");
    assert!(text.contains(&sha256_hex(original)), "{text}");
    assert!(text.contains(&sha256_hex(edited)), "{text}");
    // Refused before anything ran.
    assert_eq!(version_rows(&pg).await, vec![(2, false)]);

    // Explicitly allowed: runs, and the new content becomes the recorded one.
    let mut allow = options();
    allow.allow_changed = true;
    assert_eq!(
        migrate::up(&url, &migrations, None, &allow)
            .await
            .unwrap()
            .len(),
        1
    );
    let checksums = checksum_rows(&pg).await;
    assert_eq!(checksums[1].2, sha256_hex(edited));
    assert!(migrate::status(&url, &migrations, &options())
        .await
        .unwrap()
        .changed
        .is_empty());
}

fn three_only_third(dir: &Path) {
    write(
        dir,
        "000003_index_email.up.sql",
        "CREATE INDEX users_email ON users (email);\n",
    );
    write(
        dir,
        "000003_index_email.down.sql",
        "DROP INDEX users_email;\n",
    );
}

/// Polls until some session of `app` holds an advisory lock.
/// Waits until a migrator holds every one of the migration lock's keys: they are taken one
/// after another, so seeing one granted is not yet seeing the lock held.
async fn wait_for_advisory_lock(pg: &Postgres) {
    let keys = migrate::lock_keys("app", "public", "schema_migrations").len() as i64;
    let admin = pg.admin("app").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) >= keys {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the migration lock was not taken"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pid_of(pg: &Postgres, application_name: &str) -> i32 {
    let admin = pg.admin("app").await;
    admin
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            &[&application_name],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn two_concurrent_migrators_one_waits_then_times_out_naming_the_holder() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = app(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "1_slow.up.sql",
        "CREATE TABLE slow (id int);\nSELECT pg_sleep(2);\n",
    );
    let migrations = Arc::new(Migrations::scan(dir.path()).unwrap());

    let url_a = format!("{url}&application_name=migrator-a");
    let first = {
        let migrations = migrations.clone();
        tokio::spawn(async move {
            migrate::up(
                &url_a,
                &migrations,
                None,
                &Options::new(Duration::from_secs(5)),
            )
            .await
        })
    };
    wait_for_advisory_lock(&pg).await;
    let holder = pid_of(&pg, "migrator-a").await;

    // A second migrator with a short lock_timeout gives up, naming the holder.
    let started = Instant::now();
    let err = migrate::up(
        &url,
        &migrations,
        None,
        &Options::new(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    let waited = started.elapsed();
    let text = err.to_string();
    match &err {
        MigrateError::LockTimeout { holders, .. } => {
            assert!(holders.iter().any(|h| h.pid == holder), "{text}");
        }
        other => panic!("expected LockTimeout, got {other}"),
    }
    assert!(text.contains(&format!("pid {holder}")), "{text}");
    assert!(text.contains("migrator-a"), "{text}");
    assert!(waited >= Duration::from_millis(450), "it waited {waited:?}");

    // A third, patient one waits for the first and then finds nothing left to do.
    let waits = Arc::new(Mutex::new(Vec::new()));
    let mut patient = Options::new(Duration::from_secs(20));
    let seen = waits.clone();
    patient.progress = Some(Arc::new(move |p: &Progress| {
        if let Progress::WaitingForLock { holders } = p {
            seen.lock().unwrap().push(holders.clone());
        }
    }));
    let steps = migrate::up(&url, &migrations, None, &patient)
        .await
        .unwrap();
    assert!(steps.is_empty(), "the first migrator applied it: {steps:?}");
    let waits = waits.lock().unwrap().clone();
    assert_eq!(waits.len(), 1, "it reported waiting once");
    assert!(waits[0].iter().any(|h| h.pid == holder));

    let applied = first.await.unwrap().unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(version_rows(&pg).await, vec![(1, false)]);
}

/// golang-migrate (started with a URL, the usual way) locks
/// `GenerateAdvisoryLockId("/app", "public", "schema_migrations")`: cutover waits for it, and it
/// would wait for cutover.
#[tokio::test]
async fn golang_migrate_and_cutover_exclude_each_other() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = app(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "1_slow.up.sql", "SELECT pg_sleep(1.5);\n");
    let migrations = Arc::new(Migrations::scan(dir.path()).unwrap());
    let golang_key = migrate::advisory_lock_id("/app", &["public", "schema_migrations"]);
    let instance_key = migrate::advisory_lock_id("app", &["public", "schema_migrations"]);
    let legacy_key = migrate::advisory_lock_id("/app", &["public"]);

    // golang-migrate holds its lock: cutover times out, naming that session.
    let other = pg.admin("app").await;
    other
        .batch_execute("SET application_name = 'golang-migrate'")
        .await
        .unwrap();
    other
        .query_one("SELECT pg_advisory_lock($1)", &[&golang_key])
        .await
        .unwrap();
    let other_pid: i32 = other
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let err = migrate::up(
        &url,
        &migrations,
        None,
        &Options::new(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains(&format!("pid {other_pid}")),
        "{err}"
    );
    assert!(err.to_string().contains("golang-migrate"), "{err}");
    other
        .query_one("SELECT pg_advisory_unlock($1)", &[&golang_key])
        .await
        .unwrap();

    // cutover holds the lock: every key golang-migrate could try is taken.
    let running = {
        let migrations = migrations.clone();
        let url = url.clone();
        tokio::spawn(async move { migrate::up(&url, &migrations, None, &options()).await })
    };
    wait_for_advisory_lock(&pg).await;
    for key in [golang_key, instance_key, legacy_key] {
        let got: bool = other
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .unwrap()
            .get(0);
        assert!(
            !got,
            "golang-migrate's key {key} was free while cutover migrated"
        );
    }
    running.await.unwrap().unwrap();
    // And released at the end.
    let got: bool = other
        .query_one("SELECT pg_try_advisory_lock($1)", &[&golang_key])
        .await
        .unwrap()
        .get(0);
    assert!(got, "cutover released the lock");
}

/// A database golang-migrate managed: its table, written by hand as its postgres driver does.
#[tokio::test]
async fn a_database_migrated_by_golang_migrate_is_taken_over() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = app(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    let migrations = Migrations::scan(dir.path()).unwrap();

    let owner = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(owner.1);
    let db = owner.0;
    // What golang-migrate left after `migrate up 2`: its schema changes and its table.
    db.batch_execute(&migrations.get(1).unwrap().up.as_ref().unwrap().sql)
        .await
        .unwrap();
    db.batch_execute(&migrations.get(2).unwrap().up.as_ref().unwrap().sql)
        .await
        .unwrap();
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS \"public\".\"schema_migrations\" (version bigint not null primary key, dirty boolean not null)",
    )
    .await
    .unwrap();
    db.batch_execute("BEGIN; TRUNCATE \"public\".\"schema_migrations\"; COMMIT;")
        .await
        .unwrap();
    db.execute(
        "INSERT INTO \"public\".\"schema_migrations\" (version, dirty) VALUES ($1, $2)",
        &[&2i64, &false],
    )
    .await
    .unwrap();

    let status = migrate::status(&url, &migrations, &options())
        .await
        .unwrap();
    assert_eq!((status.version, status.dirty), (Some(2), false));
    assert_eq!(status.applied.len(), 2);
    assert!(
        status.applied.iter().all(|a| a.recorded_sha256.is_none()),
        "no checksums before cutover"
    );
    assert_eq!(
        status.pending.iter().map(|p| p.version).collect::<Vec<_>>(),
        vec![3]
    );

    let steps = migrate::up(&url, &migrations, None, &options())
        .await
        .unwrap();
    assert_eq!(steps.iter().map(|s| s.version).collect::<Vec<_>>(), vec![3]);
    assert_eq!(version_rows(&pg).await, vec![(3, false)]);
    // The applied files were adopted: from now on a change to them is noticed.
    assert_eq!(checksum_rows(&pg).await.len(), 3);

    // The table is still exactly golang-migrate's, so it can take the database back.
    let columns: Vec<(String, String, String)> = db
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns \
             WHERE table_name = 'schema_migrations' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        columns,
        vec![
            (
                "version".to_string(),
                "bigint".to_string(),
                "NO".to_string()
            ),
            ("dirty".to_string(), "boolean".to_string(), "NO".to_string()),
        ]
    );

    // golang-migrate's failed-first-down state: version -1, dirty.
    db.batch_execute(
        "TRUNCATE schema_migrations; INSERT INTO schema_migrations VALUES (-1, true);",
    )
    .await
    .unwrap();
    let status = migrate::status(&url, &migrations, &options())
        .await
        .unwrap();
    assert_eq!((status.version, status.dirty), (None, true));
    let err = migrate::up(&url, &migrations, None, &options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrateError::Dirty { version: None }),
        "{err}"
    );
}

#[tokio::test]
async fn a_fresh_table_is_created_exactly_like_golang_migrate() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = app(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    let migrations = Migrations::scan(dir.path()).unwrap();
    migrate::up(&url, &migrations, Some(1), &options())
        .await
        .unwrap();
    let admin = pg.admin("app").await;
    let row = admin
        .query_one(
            "SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || \
                    CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY a.attnum), \
                    (SELECT count(*) FROM pg_index i WHERE i.indrelid = 'schema_migrations'::regclass AND i.indisprimary) \
             FROM pg_attribute a WHERE a.attrelid = 'schema_migrations'::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            &[],
        )
        .await
        .unwrap();
    let (columns, primary): (String, i64) = (row.get(0), row.get(1));
    assert_eq!(columns, "version bigint not null, dirty boolean not null");
    assert_eq!(primary, 1);
}

#[tokio::test]
async fn down_needs_files_for_the_current_version() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = app(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    let migrations = Migrations::scan(dir.path()).unwrap();
    migrate::up(&url, &migrations, None, &options())
        .await
        .unwrap();

    // An older release's files (a rollback): the database is ahead of them. up does nothing,
    // status says so, down refuses.
    let older = tempfile::tempdir().unwrap();
    three(older.path());
    fs::remove_file(older.path().join("000003_index_email.up.sql")).unwrap();
    fs::remove_file(older.path().join("000003_index_email.down.sql")).unwrap();
    let older = Migrations::scan(older.path()).unwrap();
    assert!(migrate::up(&url, &older, None, &options())
        .await
        .unwrap()
        .is_empty());
    let status = migrate::status(&url, &older, &options()).await.unwrap();
    assert!(status.unknown_version && status.ahead_of_files());
    assert_eq!((status.version, status.latest), (Some(3), Some(2)));
    let err = migrate::down(&url, &older, 1, &options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrateError::UnknownVersion { version: 3, .. }),
        "{err}"
    );

    // A version without a down file.
    fs::remove_file(dir.path().join("000003_index_email.down.sql")).unwrap();
    let migrations = Migrations::scan(dir.path()).unwrap();
    let err = migrate::down(&url, &migrations, 1, &options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrateError::NoDownFile { version: 3, .. }),
        "{err}"
    );
    assert_eq!(version_rows(&pg).await, vec![(3, false)]);
}

#[tokio::test]
async fn connection_failures_are_clear_and_keep_the_password_secret() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    app(&pg).await;
    let migrations = Migrations::empty(Path::new("migrations"));
    let wrong = "Wr0ng-pw-value";
    let err = migrate::status(&pg.url("app", wrong, "app"), &migrations, &options())
        .await
        .unwrap_err();
    match &err {
        MigrateError::Connect {
            target, sqlstate, ..
        } => {
            assert_eq!(sqlstate.as_deref(), Some("28P01"));
            assert!(target.contains("app:****@"), "{target}");
        }
        other => panic!("expected Connect, got {other}"),
    }
    assert!(!format!("{err} {err:?}").contains(wrong), "{err:?}");

    let err = migrate::up(
        &pg.url("app", PASSWORD, "nope"),
        &migrations,
        None,
        &options(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!format!("{err} {err:?}").contains(PASSWORD), "{err:?}");
}

#[test]
fn errors_can_cross_threads_and_reach_anyhow() {
    fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<MigrateError>();
    assert_error::<cutover::services::compose::ComposeError>();
}

// ---- files -----------------------------------------------------------------------------------

#[test]
fn duplicate_versions_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "1_a.up.sql", "");
    write(dir.path(), "01_b.up.sql", "");
    let err = Migrations::scan(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            MigrateError::Duplicate {
                version: 1,
                direction: Direction::Up,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("1_a.up.sql") && text.contains("01_b.up.sql"),
        "{text}"
    );

    // Same version, different directions: one migration.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "20240131120000_a.up.sql", "SELECT 1;");
    write(dir.path(), "20240131120000_a.down.sql", "SELECT 1;");
    let migrations = Migrations::scan(dir.path()).unwrap();
    assert_eq!(migrations.len(), 1);
    assert_eq!(migrations.latest(), Some(20240131120000));

    // A version too large for a bigint.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "99999999999999999999_a.up.sql", "");
    assert!(matches!(
        Migrations::scan(dir.path()).unwrap_err(),
        MigrateError::BadVersion { .. }
    ));
}

#[test]
fn create_writes_the_next_pair() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("migrations");
    let (up, down) = migrate::create(&folder, "create_users").unwrap();
    assert_eq!(up.file_name().unwrap(), "000001_create_users.up.sql");
    assert_eq!(down.file_name().unwrap(), "000001_create_users.down.sql");
    let (up, _) = migrate::create(&folder, "add_email").unwrap();
    assert_eq!(up.file_name().unwrap(), "000002_add_email.up.sql");
    assert_eq!(Migrations::scan(&folder).unwrap().len(), 2);
    assert!(matches!(
        migrate::create(&folder, "bad name").unwrap_err(),
        MigrateError::BadName { .. }
    ));

    // Timestamped files get a UTC timestamp.
    let stamped = dir.path().join("stamped");
    fs::create_dir(&stamped).unwrap();
    write(&stamped, "20200101000000_init.up.sql", "");
    let (up, _) = migrate::create(&stamped, "next").unwrap();
    let name = up.file_name().unwrap().to_str().unwrap().to_string();
    let version: u64 = name.split('_').next().unwrap().parse().unwrap();
    assert_eq!(version.to_string().len(), 14, "{name}");
    assert!(version > 20200101000000, "{name}");
    assert!(name.ends_with("_next.up.sql"));
}
