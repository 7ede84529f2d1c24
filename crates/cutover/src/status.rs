//! Read-only views of state, shared by the daemon (live) and the CLI (daemon down).

use crate::config::Config;
use crate::protocol::*;
use crate::runtime::DaemonState;
use crate::store::{ComponentState, Store, StoreError};
use std::net::SocketAddr;

pub fn online(state: &DaemonState) -> StatusResponse {
    let shared = state.shared();
    let store = &shared.store;
    let components = state
        .components()
        .iter()
        .map(|component| {
            let committed = store.component_state(component.name()).unwrap_or_default();
            let serving = component.serving();
            ComponentStatus {
                serving_release: component.serving_release(store).map(|r| r.to_string()),
                serving: serving.as_ref().map(|s| InstanceInfo {
                    release: s.instance.release.to_string(),
                    pid: s.instance.pid,
                    port: s.instance.addr.port(),
                }),
                deploying: component.deploying(),
                health: serving
                    .as_ref()
                    .and_then(|s| component.health.get(s.instance.id)),
                stats: serving.map(|s| s.upstream.stats.snapshot()).or_else(|| {
                    component
                        .site()
                        .and_then(|s| s.current())
                        .map(|site| site.stats())
                }),
                ..committed_only(component.name(), component.listen(), committed)
            }
        })
        .collect();
    StatusResponse {
        daemon: Some(DaemonInfo {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: state.started_at,
            config: Some(config_info(&shared.config)),
        }),
        components,
        certificates: certificates_online(state),
    }
}

pub fn config_info(config: &Config) -> ConfigInfo {
    ConfigInfo {
        path: config.path.clone(),
        sha256: config.sha256.clone(),
        loaded_at: config.loaded_at,
    }
}

/// What was committed as active, read straight from the database.
pub fn offline(config: &Config, store: &Store) -> Result<StatusResponse, StoreError> {
    let mut components = Vec::new();
    for component in &config.components {
        let committed = store.component_state(component.name.as_str())?;
        components.push(committed_only(
            component.name.as_str(),
            component.listen,
            committed,
        ));
    }
    Ok(StatusResponse {
        daemon: None,
        components,
        certificates: certificates_offline(config),
    })
}

pub fn releases(
    store: &Store,
    config: &Config,
    component: &str,
) -> Result<ReleasesResponse, ViewError> {
    if config.component(component).is_none() {
        let known: Vec<&str> = config.components.iter().map(|c| c.name.as_str()).collect();
        return Err(ViewError::UnknownComponent {
            name: component.to_owned(),
            known: known.join(", "),
        });
    }
    let state = store.component_state(component)?;
    let releases = store
        .release_records(component)?
        .into_iter()
        .map(|record| {
            let r = record.release;
            ReleaseEntry {
                active: state.active.as_deref() == Some(r.id.as_str()),
                previous: state.previous.as_deref() == Some(r.id.as_str()),
                id: r.id.to_string(),
                sha256: r.sha256,
                size: r.size,
                stored_at: r.stored_at,
                was_active: record.last_active_at.is_some(),
                outcome: record.last_outcome,
            }
        })
        .collect();
    Ok(ReleasesResponse {
        component: component.to_owned(),
        releases,
    })
}

/// Why a view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("unknown component {name:?}; configured: {known}")]
    UnknownComponent { name: String, known: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl ViewError {
    /// The control API's status for it: a name the caller got wrong, or the daemon's database.
    pub fn status(&self) -> http::StatusCode {
        match self {
            ViewError::UnknownComponent { .. } => http::StatusCode::NOT_FOUND,
            ViewError::Store(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

pub fn history(store: &Store, limit: usize) -> Result<HistoryResponse, StoreError> {
    let deploys: Vec<DeployHistory> = store
        .deploys(limit.saturating_mul(4))?
        .into_iter()
        .map(|deploy| {
            let events = store.events(deploy.id).unwrap_or_default();
            DeployHistory { deploy, events }
        })
        .collect();
    let pipelines = store
        .pipelines(limit)?
        .into_iter()
        .map(|pipeline| {
            let mut stages: Vec<&DeployHistory> = deploys
                .iter()
                .filter(|d| d.deploy.pipeline_id == Some(pipeline.id))
                .collect();
            stages.sort_by_key(|d| d.deploy.id);
            let mut timeline: Vec<TimelineEntry> = stages
                .iter()
                .flat_map(|d| {
                    d.events.iter().map(|e| TimelineEntry {
                        at: e.at,
                        component: d.deploy.component.clone(),
                        deploy_id: d.deploy.id,
                        kind: e.kind.clone(),
                        message: e.message.clone(),
                    })
                })
                .collect();
            timeline.sort_by_key(|e| e.at);
            PipelineHistory {
                deploys: stages.iter().map(|d| d.deploy.id).collect(),
                pipeline,
                timeline,
            }
        })
        .collect();
    let deploys = deploys.into_iter().take(limit).collect();
    let daemon = store.daemon_events(limit)?;
    Ok(HistoryResponse {
        pipelines,
        deploys,
        daemon,
    })
}

/// Status before anything was ever deployed (no state database yet).
pub fn offline_empty(config: &Config) -> StatusResponse {
    StatusResponse {
        daemon: None,
        components: config
            .components
            .iter()
            .map(|c| committed_only(c.name.as_str(), c.listen, ComponentState::default()))
            .collect(),
        certificates: certificates_offline(config),
    }
}

/// The https listener's certificates as the running daemon keeps them: ACME's as its manager
/// reports them, then each component's own `tls` file.
pub fn certificates_online(state: &DaemonState) -> Vec<CertificateInfo> {
    let config = &state.shared().config;
    let data_dir = &config.daemon.data_dir;
    let mut all: Vec<CertificateInfo> = state
        .frontends
        .certs
        .status()
        .into_iter()
        .map(|status| issued(data_dir, status))
        .collect();
    all.extend(own_certificates(config));
    all
}

/// The same, read from disk while the daemon is down: each certificate the config asks ACME
/// for, with what `data_dir/certs` holds for it, then the components' own files.
pub fn certificates_offline(config: &Config) -> Vec<CertificateInfo> {
    let wanted = crate::certs::wanted(config);
    let data_dir = &config.daemon.data_dir;
    let store = if wanted.is_empty() {
        None
    } else {
        Some(crate::acme::CertStore::load(data_dir).map_err(|e| e.to_string()))
    };
    let mut all: Vec<CertificateInfo> = wanted
        .into_iter()
        .map(|request| {
            let name = request.name();
            let mut info = CertificateInfo {
                path: cert_path(data_dir, &name),
                hosts: request.hosts.clone(),
                source: CertSource::Acme,
                challenge: Some(request.kind.to_string()),
                not_before: None,
                not_after: None,
                renew_at: None,
                next_attempt: None,
                issuing: false,
                failures: 0,
                last_error: None,
                last_attempt: None,
                name,
            };
            match store.as_ref().map(|s| s.as_ref()) {
                Some(Ok(store)) => match store.get(&info.name) {
                    Some(stored) => {
                        info.not_before = Some(millis(stored.not_before));
                        info.not_after = Some(millis(stored.not_after));
                        info.renew_at = Some(millis(crate::acme::renew_at(
                            stored.not_before,
                            stored.not_after,
                        )));
                    }
                    None => info.last_error = store.load_error(&info.name),
                },
                Some(Err(why)) => info.last_error = Some(why.clone()),
                None => {}
            }
            info
        })
        .collect();
    all.extend(own_certificates(config));
    all
}

fn issued(data_dir: &std::path::Path, status: crate::acme::CertStatus) -> CertificateInfo {
    CertificateInfo {
        path: cert_path(data_dir, &status.name),
        hosts: status.hosts,
        source: CertSource::Acme,
        challenge: Some(status.challenge.to_string()),
        not_before: status.not_before.map(millis),
        not_after: status.not_after.map(millis),
        renew_at: status.renew_at.map(millis),
        next_attempt: Some(millis(status.next_attempt)),
        issuing: status.issuing,
        failures: status.failures,
        last_error: status.last_error,
        last_attempt: status.last_attempt.map(millis),
        name: status.name,
    }
}

fn own_certificates(config: &Config) -> Vec<CertificateInfo> {
    crate::certs::own_certificates(config)
        .into_iter()
        .map(|own| {
            let (valid, last_error) = match own.leaf {
                Ok(leaf) => (Some((leaf.not_before, leaf.not_after)), None),
                Err(why) => (None, Some(why)),
            };
            CertificateInfo {
                name: own.component,
                hosts: own.hosts,
                source: CertSource::File,
                path: own.cert,
                challenge: None,
                not_before: valid.map(|(from, _)| millis(from)),
                not_after: valid.map(|(_, to)| millis(to)),
                renew_at: None,
                next_attempt: None,
                issuing: false,
                failures: 0,
                last_error,
                last_attempt: None,
            }
        })
        .collect()
}

/// Where ACME keeps the certificate named `name` (see `acme`'s module doc).
fn cert_path(data_dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    data_dir.join("certs").join(name).join("cert.pem")
}

fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A component as the database knows it: what is committed as active and previous; nothing of
/// what runs (the daemon fills that in when it is up).
fn committed_only(
    name: &str,
    listen: Option<SocketAddr>,
    committed: ComponentState,
) -> ComponentStatus {
    ComponentStatus {
        name: name.to_owned(),
        listen: listen.map(|l| l.to_string()).unwrap_or_default(),
        active: committed.active,
        previous: committed.previous,
        serving: None,
        serving_release: None,
        deploying: None,
        stats: None,
        health: None,
    }
}
