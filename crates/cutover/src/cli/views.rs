//! `status`, `releases` and `history`: asked of the daemon, or, when no daemon runs or it does
//! not answer, read from the state database opened read-only. `certs`: asked of the daemon, or
//! read from `data_dir/certs` and the config's `tls` files.

use super::client::{Client, ClientError};
use super::{output, Exit};
use crate::config::Config;
use crate::protocol::{CertsResponse, HistoryResponse, ReleasesResponse, StatusResponse};
use crate::store::{Store, StoreError};
use serde::de::DeserializeOwned;
use std::path::PathBuf;

pub(super) async fn status(config: &Config, client: &Client, json: bool) -> anyhow::Result<Exit> {
    let (status, not_answering) =
        from_daemon_or_database(config, client, "/v1/status", |store| match store {
            Some(store) => Ok(crate::status::offline(config, &store)?),
            None => Ok(crate::status::offline_empty(config)),
        })
        .await?;
    let text: fn(&StatusResponse) -> String = if not_answering {
        output::status_not_answering
    } else {
        output::status
    };
    output::print(json, &status, text)?;
    Ok(Exit::Ok)
}

pub(super) async fn certs(config: &Config, client: &Client, json: bool) -> anyhow::Result<Exit> {
    let certs = match client.get::<CertsResponse>("/v1/certs").await {
        Ok(certs) => certs,
        Err(e) if e.is_unreachable() || e.is_not_answering() => {
            if e.is_not_answering() {
                eprintln!(
                    "warning: {}; showing the certificates on disk",
                    output::printable(&e.to_string())
                );
            }
            CertsResponse {
                online: false,
                certificates: crate::status::certificates_offline(config),
            }
        }
        Err(e) => return Err(e.into()),
    };
    output::print(json, &certs, output::certs)?;
    Ok(Exit::Ok)
}

pub(super) async fn releases(
    config: &Config,
    client: &Client,
    component: &str,
    json: bool,
) -> anyhow::Result<Exit> {
    let path = format!("/v1/releases/{component}");
    let (releases, _): (ReleasesResponse, _) =
        from_daemon_or_database(config, client, &path, |store| {
            Ok(crate::status::releases(
                &deployed(config, store)?,
                config,
                component,
            )?)
        })
        .await?;
    output::print(json, &releases, output::releases)?;
    Ok(Exit::Ok)
}

pub(super) async fn history(
    config: &Config,
    client: &Client,
    limit: usize,
    json: bool,
) -> anyhow::Result<Exit> {
    let path = format!("/v1/history?limit={limit}");
    let (history, _): (HistoryResponse, _) =
        from_daemon_or_database(config, client, &path, |store| {
            Ok(crate::status::history(&deployed(config, store)?, limit)?)
        })
        .await?;
    output::print(json, &history, output::history)?;
    Ok(Exit::Ok)
}

/// The daemon's answer to `GET path`; when no daemon runs there, or one runs but does not
/// answer, `read` builds the same view from the database (given None when nothing has been
/// deployed yet). The flag says that a daemon runs but did not answer.
async fn from_daemon_or_database<T: DeserializeOwned>(
    config: &Config,
    client: &Client,
    path: &str,
    read: impl FnOnce(Option<Store>) -> anyhow::Result<T>,
) -> anyhow::Result<(T, bool)> {
    match client.get::<T>(path).await {
        Ok(view) => Ok((view, false)),
        Err(e) if e.is_unreachable() || e.is_not_answering() => {
            let view = read(offline_store(config, &e)?)?;
            Ok((view, e.is_not_answering()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The database of a view that needs one: none means nothing was deployed, which is an error.
fn deployed(config: &Config, store: Option<Store>) -> Result<Store, StoreError> {
    store.ok_or_else(|| StoreError::Missing(db_path(config)))
}

fn db_path(config: &Config) -> PathBuf {
    crate::store::db_path(&config.daemon.data_dir)
}

/// The state database for the offline view of a read-only command, after `why` the daemon could
/// not answer (said on stderr when a daemon runs but does not answer). `None`: nothing has been
/// deployed yet. A database this user may not read is an error, never "nothing deployed".
fn offline_store(config: &Config, why: &ClientError) -> anyhow::Result<Option<Store>> {
    if why.is_not_answering() {
        eprintln!(
            "warning: {}; showing the last committed state from the database",
            output::printable(&why.to_string())
        );
    }
    let path = db_path(config);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "permission denied on {}: run as the cutover user or join its group",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    match Store::open_read_only(&config.daemon.data_dir) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Missing(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
