//! Service health against real PostgreSQL 15 and Redis servers (started by `support`), the
//! compose argv, and the guarantee that no destructive compose verb exists in the sources.
//! Compose against a real engine is in `compose.rs`.

mod support;

use cutover::services::compose::{ComposeCli, ComposeError, Project};
use cutover::services::{
    check_postgres, check_redis, redact_url, wait_healthy, ServiceHealth, ServiceStatus,
};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Postgres, Redis};

const TIMEOUT: Duration = Duration::from_secs(5);
const PASSWORD: &str = "Sup3r-s3cret-pw";

/// Fails if `secret` appears in any rendering of `health`.
fn assert_no_secret(health: &ServiceHealth, secret: &str) {
    for text in [
        format!("{health}"),
        format!("{health:?}"),
        serde_json::to_string(health).unwrap(),
    ] {
        assert!(!text.contains(secret), "the secret leaked: {text}");
    }
}

#[tokio::test]
async fn postgres_up_reports_version_and_latency() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = pg.create_app("app", PASSWORD, "app").await;
    let health = check_postgres(&url, TIMEOUT).await.named("db");
    assert_eq!(health.status, ServiceStatus::Up, "{health}");
    assert!(health.ok);
    assert!(
        health.version.as_deref().unwrap().starts_with("15"),
        "{health:?}"
    );
    assert!(health.latency_ms.unwrap() > 0.0);
    assert_eq!(
        health.target,
        format!(
            "postgres://app:****@127.0.0.1:{}/app?sslmode=disable",
            pg.port
        )
    );
    assert!(health.detail.contains("\"app\""), "{health}");
    assert_no_secret(&health, PASSWORD);
}

#[tokio::test]
async fn postgres_wrong_password_is_an_authentication_failure_not_down() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    pg.create_app("app", PASSWORD, "app").await;
    let wrong = "Wr0ng-pw-value";
    let health = check_postgres(&pg.url("app", wrong, "app"), TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::AuthFailed, "{health}");
    assert!(!health.ok);
    assert!(
        health
            .detail
            .contains("authentication failed for user \"app\""),
        "{health}"
    );
    assert!(health.detail.contains("28P01"), "{health}");
    assert_no_secret(&health, wrong);

    // A role that does not exist: PostgreSQL does not say so (28P01 again), by design.
    let health = check_postgres(&pg.url("ghost", wrong, "app"), TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::AuthFailed, "{health}");
    assert!(
        health
            .detail
            .contains("authentication failed for user \"ghost\""),
        "{health}"
    );

    // No password at all, while the server asks for one.
    let health = check_postgres(
        &format!("postgres://app@127.0.0.1:{}/app?sslmode=disable", pg.port),
        TIMEOUT,
    )
    .await;
    assert_eq!(health.status, ServiceStatus::AuthRequired, "{health}");
}

#[tokio::test]
async fn postgres_missing_database_is_reported_as_such() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    pg.create_app("app", PASSWORD, "app").await;
    let health = check_postgres(&pg.url("app", PASSWORD, "nope"), TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::NoSuchDatabase, "{health}");
    assert!(
        health.detail.contains("database \"nope\" does not exist"),
        "{health}"
    );
    assert!(health.detail.contains("3D000"), "{health}");
    assert_no_secret(&health, PASSWORD);
}

#[tokio::test]
async fn postgres_down_is_unreachable() {
    let Some(mut pg) = Postgres::start().await else {
        return;
    };
    let url = pg.create_app("app", PASSWORD, "app").await;
    assert!(check_postgres(&url, TIMEOUT).await.ok);
    pg.stop();
    let health = check_postgres(&url, TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::Unreachable, "{health}");
    assert!(
        health.detail.contains(&format!("127.0.0.1:{}", pg.port)),
        "{health}"
    );
    assert!(health.latency_ms.is_none());
    assert_no_secret(&health, PASSWORD);
}

#[tokio::test]
async fn postgres_silent_server_times_out() {
    let (_listener, port) = support::black_hole();
    let url = format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/app?sslmode=disable");
    let started = std::time::Instant::now();
    let health = check_postgres(&url, Duration::from_millis(300)).await;
    assert_eq!(health.status, ServiceStatus::TimedOut, "{health}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_no_secret(&health, PASSWORD);
}

#[tokio::test]
async fn redis_without_auth() {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let health = check_redis(&redis.url(), TIMEOUT).await.named("cache");
    assert_eq!(health.status, ServiceStatus::Up, "{health}");
    assert!(
        health
            .version
            .as_deref()
            .unwrap()
            .starts_with(char::is_numeric),
        "{health:?}"
    );
    assert!(health.latency_ms.is_some());

    // A password the server does not expect: Redis refuses the AUTH, and so do we.
    let health = check_redis(&redis.url_with(None, PASSWORD), TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::AuthFailed, "{health}");
    assert_no_secret(&health, PASSWORD);
}

#[tokio::test]
async fn redis_with_auth() {
    let Some(redis) = Redis::start(Some(PASSWORD)) else {
        return;
    };

    let health = check_redis(&redis.url_with(None, PASSWORD), TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::Up, "{health}");
    assert_eq!(
        health.target,
        format!("redis://:****@127.0.0.1:{}", redis.port)
    );
    assert_no_secret(&health, PASSWORD);

    // AUTH with a user name (Redis 6 ACL form) works for the default user.
    let health = check_redis(&redis.url_with(Some("default"), PASSWORD), TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::Up, "{health}");

    // No password: -NOAUTH.
    let health = check_redis(&redis.url(), TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::AuthRequired, "{health}");
    assert!(health.detail.contains("NOAUTH"), "{health}");

    // Wrong password: -WRONGPASS.
    let wrong = "Wr0ng-pw-value";
    let health = check_redis(&redis.url_with(None, wrong), TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::AuthFailed, "{health}");
    assert!(health.detail.contains("WRONGPASS"), "{health}");
    assert_no_secret(&health, wrong);
}

#[tokio::test]
async fn redis_down_is_unreachable() {
    let Some(mut redis) = Redis::start(None) else {
        return;
    };
    let url = redis.url();
    redis.stop();
    let health = check_redis(&url, TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::Unreachable, "{health}");
}

#[tokio::test]
async fn redis_replies_a_real_server_cannot_easily_give() {
    let loading = support::canned_server(b"-LOADING Redis is loading the dataset in memory\r\n");
    let health = check_redis(&format!("redis://127.0.0.1:{loading}"), TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::Loading, "{health}");
    assert!(health.status.is_transient());

    // Redis before 6 answers a wrong password with a generic ERR.
    let old = support::canned_server(b"-ERR invalid password\r\n");
    let health = check_redis(&format!("redis://:{PASSWORD}@127.0.0.1:{old}"), TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::AuthFailed, "{health}");
    assert!(health.detail.contains("invalid password"), "{health}");

    // Something else on the port: a server that echoes what it got must not leak the password.
    let http = support::canned_server(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let health = check_redis(&format!("redis://:{PASSWORD}@127.0.0.1:{http}"), TIMEOUT).await;
    assert_eq!(health.status, ServiceStatus::ProtocolError, "{health}");
    let echo = support::canned_server(b"-ERR unknown command 'AUTH Sup3r-s3cret-pw'\r\n");
    let health = check_redis(&format!("redis://:{PASSWORD}@127.0.0.1:{echo}"), TIMEOUT).await;
    assert_no_secret(&health, PASSWORD);

    let (_listener, silent) = support::black_hole();
    let health = check_redis(
        &format!("redis://127.0.0.1:{silent}"),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(health.status, ServiceStatus::TimedOut, "{health}");
}

#[tokio::test]
async fn wait_healthy_sees_a_server_come_up() {
    let port = support::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    // Nothing listens yet: transient failures until the deadline.
    let result = wait_healthy(
        || check_redis(&url, TIMEOUT),
        Duration::from_millis(200),
        Duration::from_millis(50),
    )
    .await;
    assert_eq!(result.unwrap_err().status, ServiceStatus::Unreachable);

    let Some(redis) = Redis::start(None) else {
        return;
    };
    let url = redis.url();
    let health = wait_healthy(
        || check_redis(&url, TIMEOUT),
        TIMEOUT,
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    assert!(health.ok);
}

#[tokio::test]
async fn secrets_never_reach_logs() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut checked = Vec::new();
    if let Some(pg) = Postgres::start().await {
        pg.create_app("app", PASSWORD, "app").await;
        checked.push(check_postgres(&pg.url("app", PASSWORD, "app"), TIMEOUT).await);
        checked.push(check_postgres(&pg.url("app", PASSWORD, "missing"), TIMEOUT).await);
        let migrations_dir = tempfile::tempdir().unwrap();
        std::fs::write(migrations_dir.path().join("1_bad.up.sql"), "SELEC 1;").unwrap();
        let migrations = cutover::migrate::Migrations::scan(migrations_dir.path()).unwrap();
        let options = cutover::migrate::Options::new(TIMEOUT);
        let err =
            cutover::migrate::up(&pg.url("app", PASSWORD, "app"), &migrations, None, &options)
                .await
                .unwrap_err();
        let err2 = cutover::migrate::up(
            &pg.url("app", "Wr0ng-pw-value", "app"),
            &migrations,
            None,
            &options,
        )
        .await
        .unwrap_err();
        for text in [
            format!("{err}"),
            format!("{err:?}"),
            format!("{err2}"),
            format!("{err2:?}"),
        ] {
            assert!(
                !text.contains(PASSWORD) && !text.contains("Wr0ng-pw-value"),
                "{text}"
            );
        }
    }
    if let Some(redis) = Redis::start(Some(PASSWORD)) {
        checked.push(check_redis(&redis.url_with(None, PASSWORD), TIMEOUT).await);
    }
    for health in &checked {
        assert_no_secret(health, PASSWORD);
    }
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.contains(PASSWORD), "{logs}");
}

#[test]
fn redact_url_masks_passwords() {
    assert_eq!(
        redact_url("postgres://app:hunter2@db:5432/app"),
        "postgres://app:****@db:5432/app"
    );
    assert_eq!(
        redact_url("redis://:hunter2@cache:6379/0"),
        "redis://:****@cache:6379/0"
    );
    assert_eq!(redact_url("postgres://app@db/app"), "postgres://app@db/app");
}

// ---- Docker Compose -------------------------------------------------------------------------

#[test]
fn compose_argv_is_exact_for_both_clis() {
    let file = Path::new("/srv/app/docker-compose.prod.yml");
    let dir = tempfile::tempdir().unwrap();
    let file_here = dir.path().join("docker-compose.prod.yml");
    std::fs::write(&file_here, "services: {}\n").unwrap();
    let missing = Project::new(ComposeCli::plugin(), file).unwrap_err();
    assert!(matches!(missing, ComposeError::FileMissing(_)), "{missing}");

    let f = file_here.to_str().unwrap();
    let cases = [
        (ComposeCli::plugin(), vec!["docker", "compose"]),
        (ComposeCli::standalone(), vec!["docker-compose"]),
        (
            ComposeCli::configured(&["/opt/bin/compose".into(), "--ansi=never".into()]),
            vec!["/opt/bin/compose", "--ansi=never"],
        ),
    ];
    for (cli, program) in cases {
        let project = Project::new(cli, &file_here).unwrap();
        let with = |rest: &[&str]| -> Vec<OsString> {
            program
                .iter()
                .copied()
                .chain(["-f", f])
                .chain(rest.iter().copied())
                .map(OsString::from)
                .collect()
        };
        assert_eq!(
            project.up_argv(&["db".into(), "redis".into()]),
            with(&["up", "-d", "--no-recreate", "db", "redis"])
        );
        assert_eq!(project.up_argv(&[]), with(&["up", "-d", "--no-recreate"]));
        assert_eq!(
            project.recreate_argv("db"),
            with(&["up", "-d", "--force-recreate", "--no-deps", "db"])
        );
        assert_eq!(
            project.logs_argv("db", 20, true),
            with(&["logs", "--no-color", "--tail=20", "-f", "db"])
        );
    }
}

/// Verbs that stop, remove or restart a service. cutover must never run one.
const DESTRUCTIVE: &[&str] = &["down", "stop", "rm", "restart", "kill", "pause"];

/// String literals of Rust source, comments skipped (enough of the lexer for this check: line
/// and block comments, char literals, escapes, raw strings).
fn string_literals(source: &str) -> Vec<String> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if bytes[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if (bytes.get(i + 1) == Some(&b'"') || bytes.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while bytes.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if bytes.get(j) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let start = j + 1;
                let end = bytes[start..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(bytes.len(), |p| start + p);
                out.push(source[start..end].to_string());
                i = end + close.len();
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                out.push(source[start..j.min(bytes.len())].to_string());
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\'') or a lifetime ('a): skip either.
                if bytes.get(i + 1) == Some(&b'\\') {
                    i += 2;
                    while i < bytes.len() && bytes[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                } else if bytes.get(i + 2) == Some(&b'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_lexer_finds_literals_and_skips_comments() {
    let src = r####"
        // "down" in a comment
        /* "stop" in a block */
        let a = "up"; let b = r#"raw "x" rm"#; let c = '"'; let d = "esc\"aped";
        fn f<'a>(x: &'a str) {}
    "####;
    assert_eq!(
        string_literals(src),
        vec!["up", "raw \"x\" rm", "esc\\\"aped"]
    );
}

/// Issue 4: cutover never runs `down`, `stop`, `rm`, `restart` (or `kill`) on a service. In the
/// compose module no string literal may contain such a verb; anywhere else in src/, no literal
/// may put one next to "compose", and no file that passes "compose" as an argument may have one
/// as a literal.
#[test]
fn no_destructive_compose_verb_in_the_sources() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let compose_module = src.join("services").join("compose.rs");
    // Every module that drives compose or the engine: no literal there may hold such a verb.
    let strict: Vec<PathBuf> = [
        compose_module.clone(),
        src.join("services").join("engine.rs"),
        src.join("services").join("stack.rs"),
        src.join("cli").join("services.rs"),
    ]
    .into();
    for module in &strict {
        assert!(
            files.contains(module),
            "{} moved: update this test",
            module.display()
        );
    }

    let mut violations = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        let literals = string_literals(&source);
        let runs_compose = literals.iter().any(|l| l.trim() == "compose");
        for literal in &literals {
            let literal_words: Vec<String> = words(literal).collect();
            let destructive: Vec<&str> = DESTRUCTIVE
                .iter()
                .copied()
                .filter(|verb| literal_words.iter().any(|w| w == verb))
                .collect();
            if destructive.is_empty() {
                continue;
            }
            let next_to_compose = literal_words.iter().any(|w| w == "compose");
            if strict.contains(file) || runs_compose || next_to_compose {
                violations.push(format!(
                    "{}: {literal:?} ({})",
                    file.display(),
                    destructive.join(", ")
                ));
            }
        }
        if *file == compose_module {
            assert!(
                runs_compose
                    && literals.iter().any(|l| l == "up")
                    && literals.iter().any(|l| l == "--no-recreate"),
                "the scan no longer sees the compose argv"
            );
        }
    }
    assert!(
        violations.is_empty(),
        "destructive compose verbs found:\n{}",
        violations.join("\n")
    );
}
