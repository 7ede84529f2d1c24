//! `cutover fleet status`: every host's own `cutover status`, side by side, and whether the
//! fleet agrees: a component serving different releases on different hosts (a run that was
//! killed, a host that failed) is said in plain words.

use super::remote::Host;
use super::ssh::Ssh;
use crate::config::FleetConfig;
use crate::protocol::StatusResponse;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct HostStatus {
    pub host: String,
    /// The host's answer; none when it could not be asked.
    pub status: Option<StatusResponse>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FleetStatus {
    pub hosts: Vec<HostStatus>,
    /// One sentence per component whose hosts disagree (or cannot all be asked).
    pub mixed: Vec<String>,
}

pub async fn status(fleet: &FleetConfig) -> anyhow::Result<FleetStatus> {
    let ssh = Ssh::new(fleet.ssh.clone())?;
    let asking = fleet.hosts.iter().map(|name| {
        let host = Host {
            name,
            ssh: &ssh,
            fleet,
        };
        async move {
            match host.status().await {
                Ok(status) => HostStatus {
                    host: name.clone(),
                    status: Some(status),
                    error: None,
                },
                Err(e) => HostStatus {
                    host: name.clone(),
                    status: None,
                    error: Some(e.to_string()),
                },
            }
        }
    });
    let hosts = futures_util::future::join_all(asking).await;
    ssh.close(&fleet.hosts).await;
    let mixed = mixed(&hosts);
    Ok(FleetStatus { hosts, mixed })
}

/// For each component: which hosts serve which release, when that is not one release on all.
pub fn mixed(hosts: &[HostStatus]) -> Vec<String> {
    let mut by_component: BTreeMap<&str, BTreeMap<String, Vec<&str>>> = BTreeMap::new();
    for host in hosts {
        let Some(status) = &host.status else { continue };
        for c in &status.components {
            // A stopped daemon serves nothing, whatever its database says is active.
            let serving = match (&status.daemon, &c.serving_release) {
                (None, _) => "nothing (daemon down)".to_owned(),
                (Some(_), Some(r)) => r.clone(),
                (Some(_), None) => "nothing".to_owned(),
            };
            let serving = match &c.deploying {
                Some(d) => format!("{serving} (deploying {})", d.release),
                None => serving,
            };
            by_component
                .entry(c.name.as_str())
                .or_default()
                .entry(serving)
                .or_default()
                .push(host.host.as_str());
        }
    }
    let unknown: Vec<&str> = hosts
        .iter()
        .filter(|h| h.status.is_none())
        .map(|h| h.host.as_str())
        .collect();
    let mut sentences = Vec::new();
    for (component, releases) in by_component {
        if releases.len() <= 1 && unknown.is_empty() {
            continue;
        }
        let mut parts: Vec<String> = releases
            .iter()
            .map(|(release, hosts)| format!("{release} on {}", hosts.join(", ")))
            .collect();
        if !unknown.is_empty() {
            parts.push(format!("unknown on {}", unknown.join(", ")));
        }
        sentences.push(format!("{component} is mixed: {}", parts.join("; ")));
    }
    sentences
}
