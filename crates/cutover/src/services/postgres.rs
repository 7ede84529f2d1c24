//! PostgreSQL health: connect (tokio-postgres, no TLS), `SELECT 1`, `SHOW server_version`.
//!
//! Failures are classified by SQLSTATE and by the type of the underlying error, never by the
//! text of a message: 28P01/28000 are authentication failures, 3D000 a missing database, 57P03 a
//! server starting up; an `io::Error` under the connect error is the network (refused, timed out).
//!
//! [`pg_config`] is also how [`crate::migrate`] connects, so both accept the same URLs.

use super::{elapsed_ms, redact_url, ServiceHealth, ServiceKind, ServiceStatus};
use std::error::Error as _;
use std::io;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls};

/// Checks the PostgreSQL server at `url` (`postgres://user:pass@host:port/db` or a libpq
/// key=value string): connects, runs `SELECT 1`, reads `server_version`. The whole check is
/// bounded by `timeout`. `latency_ms` is the time of the whole check.
pub async fn check_postgres(url: &str, timeout: Duration) -> ServiceHealth {
    let target = redact_url(url);
    let health = |status, detail: String| {
        ServiceHealth::new(ServiceKind::Postgres, target.clone(), status, detail)
    };
    let mut config = match pg_config(url) {
        Ok(config) => config,
        Err(reason) => return health(ServiceStatus::InvalidUrl, reason),
    };
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return health(
            ServiceStatus::InvalidUrl,
            "sslmode=require: TLS connections are not supported by this check".into(),
        );
    }
    config.connect_timeout(timeout);
    if config.get_application_name().is_none() {
        config.application_name("cutover check");
    }
    let started = Instant::now();
    match tokio::time::timeout(timeout, query(&config)).await {
        Ok(Ok(version)) => {
            let mut up = health(
                ServiceStatus::Up,
                format!(
                    "connected as {} to database {}",
                    quoted(user_of(&config)),
                    quoted(dbname_of(&config))
                ),
            );
            up.version = Some(version);
            up.latency_ms = Some(elapsed_ms(started));
            up
        }
        Ok(Err(error)) => {
            let (status, detail) = classify(&error, &config, timeout);
            let mut failed = health(status, detail);
            if status != ServiceStatus::Unreachable && status != ServiceStatus::TimedOut {
                failed.latency_ms = Some(elapsed_ms(started));
            }
            failed
        }
        Err(_) => health(
            ServiceStatus::TimedOut,
            format!("no answer within {}", humantime::format_duration(timeout)),
        ),
    }
}

async fn query(config: &Config) -> Result<String, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    let result = async {
        client.simple_query("SELECT 1").await?;
        let row = client.query_one("SHOW server_version", &[]).await?;
        row.try_get::<_, String>(0)
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}

/// Parses a PostgreSQL URL or libpq string into a tokio-postgres [`Config`]. golang-migrate's
/// own query parameters (`x-migrations-table`, `x-multi-statement`, ...) are dropped first, as
/// golang-migrate does, so the same `DATABASE_URL` works for both. The error never quotes the URL.
pub(crate) fn pg_config(url: &str) -> Result<Config, String> {
    let cleaned = strip_custom_params(url);
    Config::from_str(&cleaned).map_err(|e| {
        let mut reason = e.to_string();
        if let Some(source) = e.source() {
            reason = format!("{reason}: {source}");
        }
        format!(
            "cannot parse the PostgreSQL URL {}: {reason}",
            redact_url(url)
        )
    })
}

/// Removes `x-...` query parameters from a URL (golang-migrate's `FilterCustomQuery`).
pub(crate) fn strip_custom_params(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("x-"))
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The value of an `x-...` query parameter of a URL, if present.
pub(crate) fn custom_param(url: &str, name: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

pub(crate) fn user_of(config: &Config) -> &str {
    config.get_user().unwrap_or("(the OS user)")
}

pub(crate) fn dbname_of(config: &Config) -> &str {
    config
        .get_dbname()
        .or_else(|| config.get_user())
        .unwrap_or("(default)")
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// The io::Error under a tokio-postgres error, if the failure was the network.
fn io_error(error: &tokio_postgres::Error) -> Option<&io::Error> {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = e.source();
    }
    None
}

/// Maps a failed connection or query to a status and a one-line detail.
fn classify(
    error: &tokio_postgres::Error,
    config: &Config,
    timeout: Duration,
) -> (ServiceStatus, String) {
    let user = quoted(user_of(config));
    let dbname = quoted(dbname_of(config));
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        let (status, what) = if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            (
                ServiceStatus::AuthFailed,
                format!("authentication failed for user {user}"),
            )
        } else if *code == SqlState::UNDEFINED_DATABASE {
            (
                ServiceStatus::NoSuchDatabase,
                format!("database {dbname} does not exist"),
            )
        } else if *code == SqlState::CANNOT_CONNECT_NOW {
            (
                ServiceStatus::Starting,
                "the server is starting up or shutting down".to_string(),
            )
        } else {
            (ServiceStatus::ServerError, "the server refused".to_string())
        };
        // The server's own words only when they add something (pg_hba.conf rejections do).
        let detail = if db.message().contains(&what) {
            format!("{what} (SQLSTATE {})", code.code())
        } else {
            format!("{what} (SQLSTATE {}: {})", code.code(), db.message())
        };
        return (status, detail);
    }
    if let Some(io) = io_error(error) {
        let addr = address_of(config);
        return match io.kind() {
            io::ErrorKind::TimedOut => (
                ServiceStatus::TimedOut,
                format!(
                    "connecting to {addr} timed out after {}",
                    humantime::format_duration(timeout)
                ),
            ),
            _ => (
                ServiceStatus::Unreachable,
                format!("cannot connect to {addr}: {io}"),
            ),
        };
    }
    if error.is_closed() {
        return (
            ServiceStatus::ProtocolError,
            "the server closed the connection during the check".to_string(),
        );
    }
    if config.get_password().is_none() {
        // tokio-postgres fails with a configuration error ("password missing") when the server
        // asks for a password and the URL has none; it has no typed kind for it. No other
        // failure without a server error or an io error is possible here: the URL was already
        // parsed and TLS was not requested.
        return (
            ServiceStatus::AuthRequired,
            format!("the server asks for a password for user {user} and the URL has none"),
        );
    }
    let mut detail = error.to_string();
    if let Some(source) = error.source() {
        detail = format!("{detail}: {source}");
    }
    (ServiceStatus::ProtocolError, detail)
}

fn address_of(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_golang_migrate_parameters() {
        assert_eq!(
            strip_custom_params(
                "postgres://h/db?sslmode=disable&x-migrations-table=m&x-multi-statement=true"
            ),
            "postgres://h/db?sslmode=disable"
        );
        assert_eq!(
            strip_custom_params("postgres://h/db?x-no-lock=true"),
            "postgres://h/db"
        );
        assert_eq!(strip_custom_params("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            custom_param(
                "postgres://h/db?x-migrations-table=my_versions",
                "x-migrations-table"
            )
            .as_deref(),
            Some("my_versions")
        );
        assert!(pg_config("postgres://u:p@h/db?sslmode=disable&x-multi-statement=true").is_ok());
    }

    #[test]
    fn url_errors_do_not_leak_the_password() {
        let err = pg_config("postgres://app:hunter2@db/app?nonsense=1").unwrap_err();
        assert!(err.contains("postgres://app:****@db/app"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn invalid_urls_are_reported_as_such() {
        let h = check_postgres(
            "postgres://app:hunter2@db/app?bogus=1",
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(h.status, ServiceStatus::InvalidUrl);
        assert!(!format!("{h:?}").contains("hunter2"));
    }
}
