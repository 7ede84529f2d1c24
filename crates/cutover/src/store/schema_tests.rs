//! The schema version: a new file, the two shapes of a database written before the schema had a
//! version, a newer database (refused, untouched) and an upgrade that fails (nothing changed).

use super::*;
use crate::store::{db_path, Store, StoreError};

/// The tables every cutover before the schema had a version created, as it wrote them (copied,
/// not taken from [`MIGRATIONS`], so these tests keep describing the files out there).
const RELEASED_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS releases (
    component   TEXT NOT NULL,
    id          TEXT NOT NULL,
    sha256      TEXT NOT NULL CHECK (length(sha256) = 64),
    size        INTEGER NOT NULL CHECK (size >= 0),
    stored_at   INTEGER NOT NULL,
    kind        TEXT NOT NULL DEFAULT 'file' CHECK (kind IN ('file', 'bundle')),
    pruned_at   INTEGER,
    PRIMARY KEY (component, id)
);
CREATE TABLE IF NOT EXISTS components (
    name        TEXT PRIMARY KEY,
    active      TEXT,
    previous    TEXT,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pipelines (
    id          INTEGER PRIMARY KEY,
    release     TEXT NOT NULL,
    components  TEXT NOT NULL,
    who         TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    outcome     TEXT CHECK (outcome IN ('succeeded', 'failed', 'rolled_back', 'interrupted')),
    reason      TEXT
);
CREATE TABLE IF NOT EXISTS deploys (
    id           INTEGER PRIMARY KEY,
    pipeline_id  INTEGER REFERENCES pipelines(id),
    component    TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    from_release TEXT,
    to_release   TEXT NOT NULL,
    who          TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    phase        TEXT NOT NULL CHECK (phase IN ('preparing', 'migrating', 'starting', 'switching', 'stabilizing',
                                                 'finalizing', 'rolling_back', 'done')),
    outcome      TEXT CHECK (outcome IN ('succeeded', 'failed', 'rolled_back', 'interrupted')),
    reason       TEXT,
    CHECK ((ended_at IS NULL) = (outcome IS NULL))
);
CREATE INDEX IF NOT EXISTS deploys_open ON deploys (component) WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS deploy_events (
    id          INTEGER PRIMARY KEY,
    deploy_id   INTEGER NOT NULL REFERENCES deploys(id),
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deploy_events_by_deploy ON deploy_events (deploy_id);
CREATE TABLE IF NOT EXISTS instances (
    id          INTEGER PRIMARY KEY,
    component   TEXT NOT NULL,
    release     TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL,
    port        INTEGER NOT NULL CHECK (port > 0 AND port < 65536),
    log_path    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('starting', 'serving', 'stopped')),
    started_at  INTEGER NOT NULL,
    stopped_at  INTEGER
);
"#;

/// What the upgrade the released cutover ran on open added.
const RELEASED_LAST_ACTIVE_AT: &str = "ALTER TABLE releases ADD COLUMN last_active_at INTEGER;";

/// A database as a cutover before the schema had a version left it: one release, active, and
/// the deploy that made it so; `upgraded` when that cutover had the `last_active_at` column.
fn released_database(dir: &Path, upgraded: bool) {
    let conn = Connection::open(db_path(dir)).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(RELEASED_TABLES).unwrap();
    if upgraded {
        conn.execute_batch(RELEASED_LAST_ACTIVE_AT).unwrap();
    }
    conn.execute(
        "INSERT INTO releases (component, id, sha256, size, stored_at) VALUES ('backend', 'v1', ?1, 1, 5)",
        [&"a".repeat(64)],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO components (name, active, updated_at) VALUES ('backend', 'v1', 6)",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO deploys (component, kind, to_release, who, started_at, ended_at, phase, outcome)
         VALUES ('backend', 'deploy', 'v1', 'tester', 5, 7, 'done', 'succeeded')",
        [],
    )
    .unwrap();
    if upgraded {
        conn.execute("UPDATE releases SET last_active_at = 42", [])
            .unwrap();
    }
}

fn raw(dir: &Path) -> Connection {
    Connection::open(db_path(dir)).unwrap()
}

/// Tables, indexes and columns, whitespace aside, as SQLite keeps them.
fn schema_of(conn: &Connection) -> Vec<(String, String)> {
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|row| {
            let (name, sql) = row.unwrap();
            (name, sql.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect()
}

fn last_active_at(store: &Store) -> Option<i64> {
    store.release_records("backend").unwrap()[0].last_active_at
}

fn bytes(dir: &Path) -> Vec<u8> {
    fs::read(db_path(dir)).unwrap()
}

#[test]
fn a_new_database_gets_the_whole_schema_and_the_current_version_without_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(store.with(|c| has_last_active_at(c)).unwrap());
    drop(store);
    // Opening it again has nothing to do.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".bak-"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn an_unversioned_database_without_last_active_at_is_upgraded_keeping_its_rows_and_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    released_database(dir.path(), false);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.active_release("backend").unwrap().as_str(), "v1");
    // Backfilled from the deploy that made it active.
    assert_eq!(last_active_at(&store), Some(7));
    assert_eq!(store.deploys(10).unwrap().len(), 1);

    // The copy is the database as it was: same rows, same (absent) version and column.
    let backup = backup_path(&db_path(dir.path()), 0);
    let copy = Connection::open(&backup).unwrap();
    assert_eq!(user_version(&copy).unwrap(), 0);
    assert!(!has_last_active_at(&copy).unwrap());
    let rows: i64 = copy
        .query_row("SELECT count(*) FROM releases", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn an_unversioned_database_with_last_active_at_runs_only_the_steps_after_v2() {
    let dir = tempfile::tempdir().unwrap();
    released_database(dir.path(), true);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    // Not backfilled again: what the released cutover recorded stays.
    assert_eq!(last_active_at(&store), Some(42));
    // Placed at v2 by its shape: the copy kept is named after that version, not v0.
    assert!(!backup_path(&db_path(dir.path()), 0).exists());
    assert_eq!(
        backup_path(&db_path(dir.path()), LAST_ACTIVE_AT_SINCE).exists(),
        SCHEMA_VERSION > LAST_ACTIVE_AT_SINCE
    );
    // The steps after v2 ran: the daemon's history table is there.
    assert!(store.daemon_events(1).unwrap().is_empty());
}

#[test]
fn a_versioned_database_runs_only_the_steps_after_its_version() {
    let dir = tempfile::tempdir().unwrap();
    released_database(dir.path(), false);
    raw(dir.path())
        .pragma_update(None, "user_version", 1)
        .unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(last_active_at(&store), Some(7));
    assert!(backup_path(&db_path(dir.path()), 1).exists());
}

#[test]
fn every_database_ends_with_the_same_schema() {
    let new = tempfile::tempdir().unwrap();
    drop(Store::open(new.path()).unwrap());
    let expected = schema_of(&raw(new.path()));
    for upgraded in [false, true] {
        let old = tempfile::tempdir().unwrap();
        released_database(old.path(), upgraded);
        drop(Store::open(old.path()).unwrap());
        assert_eq!(
            schema_of(&raw(old.path())),
            expected,
            "upgraded: {upgraded}"
        );
    }
}

#[test]
fn a_copy_left_by_an_earlier_upgrade_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    released_database(dir.path(), false);
    let backup = backup_path(&db_path(dir.path()), 0);
    fs::write(&backup, "stale").unwrap();
    fs::write(format!("{}.partial", backup.display()), "crashed").unwrap();
    drop(Store::open(dir.path()).unwrap());
    let copy = Connection::open(&backup).unwrap();
    assert!(!has_last_active_at(&copy).unwrap());
    assert!(!Path::new(&format!("{}.partial", backup.display())).exists());
}

#[test]
fn a_newer_database_is_refused_by_every_open_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    raw(dir.path())
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let before = bytes(dir.path());
    type Open = fn(&Path) -> Result<Store, StoreError>;
    let opens: [(&str, Open); 3] = [
        ("open", Store::open),
        ("open_read_only", Store::open_read_only),
        ("open_degraded", Store::open_degraded),
    ];
    for (name, open) in opens {
        let err = open(dir.path())
            .err()
            .unwrap_or_else(|| panic!("{name} opened it"));
        match &err {
            StoreError::NewerSchema {
                found, supported, ..
            } => assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION)),
            other => panic!("{name}: {other}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("written by a newer cutover")
                && message.contains(&format!("schema v{}", SCHEMA_VERSION + 1))
                && message.contains(&format!("supports up to v{SCHEMA_VERSION}"))
                && message.contains(&format!("state.db.bak-v{SCHEMA_VERSION}")),
            "{message}"
        );
        assert_eq!(bytes(dir.path()), before, "{name} changed the file");
    }
    assert!(!backup_path(&db_path(dir.path()), SCHEMA_VERSION).exists());
}

#[test]
fn an_upgrade_that_fails_halfway_leaves_the_database_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    released_database(dir.path(), false);
    let before = bytes(dir.path());
    let schema_before = schema_of(&raw(dir.path()));
    // The real steps succeed, then a third creates a table and fails.
    let failing = "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);";
    let steps = [MIGRATIONS[0], MIGRATIONS[1], failing];
    match open_migrating(dir.path(), &steps) {
        Err(StoreError::Upgrade { from, to, .. }) => assert_eq!((from, to), (0, 3)),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("the failing step passed"),
    }
    assert_eq!(bytes(dir.path()), before);
    let conn = raw(dir.path());
    assert_eq!(user_version(&conn).unwrap(), 0);
    assert_eq!(schema_of(&conn), schema_before);
    drop(conn);
    // And the real upgrade still runs on it afterwards.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(last_active_at(&store), Some(7));
}

#[test]
fn a_database_of_an_older_cutover_reads_before_and_after_its_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = Connection::open(db_path(dir.path())).unwrap();
        conn.execute_batch(RELEASED_TABLES).unwrap();
        conn.execute(
            "INSERT INTO releases (component, id, sha256, size, stored_at) VALUES ('backend', 'v1', ?1, 1, 5)",
            [&"a".repeat(64)],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO components (name, active, updated_at) VALUES ('backend', 'v1', 6)",
            [],
        )
        .unwrap();
    }
    // The CLI reads it while the daemon still runs the old version.
    let old = Store::open_read_only(dir.path()).unwrap();
    let records = old.release_records("backend").unwrap();
    assert_eq!(records[0].last_active_at, None);
    assert_eq!(old.schema_version().unwrap(), 0);
    drop(old);
    // The new daemon upgrades it: the committed active release counts as having been active.
    let store = Store::open(dir.path()).unwrap();
    assert!(store.release_records("backend").unwrap()[0]
        .last_active_at
        .is_some());
}
