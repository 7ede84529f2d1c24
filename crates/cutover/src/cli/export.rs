//! `cutover export kubernetes COMPONENT`: the component's Deployment and Service from the
//! config (see [`crate::ops::kubernetes`] for what maps to what).

use super::{Exit, UsageError};
use crate::config::{ComponentKind, Config};
use crate::ops::kubernetes::{self, Around, ExportOptions, Health};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The flags of `cutover export kubernetes`.
#[derive(clap::Args, Debug)]
pub struct KubernetesArgs {
    /// The process component to export
    pub component: String,
    /// The image holding the component's release (cutover deploys artifacts, not images)
    /// [default: a placeholder, REGISTRY/COMPONENT:RELEASE, that cannot be pulled]
    #[arg(long)]
    pub image: Option<String>,
    /// CUTOVER_RELEASE and {release} [default: the image's tag]
    #[arg(long)]
    pub release: Option<String>,
    /// Pods; more than one keeps it serving while a node is drained
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub replicas: u32,
    /// metadata.namespace of both objects [default: none, kubectl's current namespace]
    #[arg(long)]
    pub namespace: Option<String>,
    /// The objects' name [default: the component's]
    #[arg(long)]
    pub name: Option<String>,
    /// The container port: what {port} becomes
    #[arg(long, default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Where the image holds what the release directory held ({release_dir}, the working
    /// directory; {artifact} is the artifact's file name in it)
    #[arg(long, default_value = "/app", value_name = "DIR")]
    pub workdir: String,
    /// Write the YAML to FILE instead of stdout
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn kubernetes(config: &Config, args: &KubernetesArgs) -> anyhow::Result<Exit> {
    let options = options(config, args).map_err(UsageError)?;
    let manifests = kubernetes::manifests(&options).map_err(|e| UsageError(e.to_string()))?;
    for warning in &manifests.warnings {
        eprintln!("warning: {warning}");
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, &manifests.yaml)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote {}", path.display());
        }
        None => print!("{}", manifests.yaml),
    }
    Ok(Exit::Ok)
}

/// The export's options from the component's config and the flags; refuses what has no pod.
fn options(config: &Config, args: &KubernetesArgs) -> Result<ExportOptions, String> {
    let name = &args.component;
    let Some(component) = config.component(name) else {
        let known: Vec<&str> = config.components.iter().map(|c| c.name.as_str()).collect();
        return Err(format!(
            "unknown component {name:?}; configured: {}",
            known.join(", ")
        ));
    };
    let process = match &component.kind {
        ComponentKind::Process(process) => process,
        ComponentKind::Static(_) => {
            return Err(format!(
                "component {name:?} is static: cutover serves its files itself, so there is no \
                 process to run in a pod; serve them from a web server's image or a CDN"
            ))
        }
        ComponentKind::Hook(_) => {
            return Err(format!(
                "component {name:?} is a hook: it is deployed elsewhere by its `run` command, \
                 so there is nothing to run in a pod"
            ))
        }
    };
    let artifact_name = component
        .artifact
        .as_deref()
        .and_then(|a| Path::new(a.trim_end_matches('/')).file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.clone());
    let config_file = config
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| config.path.display().to_string());
    Ok(ExportOptions {
        name: args.name.clone().unwrap_or_else(|| name.clone()),
        component: name.clone(),
        config_file,
        image: args.image.clone(),
        release: args.release.clone(),
        replicas: args.replicas,
        namespace: args.namespace.clone(),
        container_port: args.port,
        // Port 0 (any free port) is a test's listen, not a port a Service can have.
        listen_port: component.listen.map(|l| l.port()).filter(|p| *p != 0),
        workdir: args.workdir.clone(),
        artifact_name,
        command: process.command.clone(),
        env: process.env.clone(),
        env_file: process.env_file.as_ref().map(|f| relative(config, f)),
        inherit_env: process.clean_env.clone(),
        h2c: process.upstream == crate::config::UpstreamProtocol::H2c,
        health: Health {
            path: process.health.path.clone(),
            grpc: process.health.grpc,
            interval: process.health.interval.get(),
            timeout: process.health.timeout.get(),
            healthy_threshold: process.health.healthy_threshold,
            start_timeout: process.health.start_timeout.get(),
        },
        unhealthy_threshold: component.stabilize_checks.unhealthy_threshold,
        stabilize: component.stabilize.get(),
        drain_timeout: component.drain_timeout.get(),
        stop_timeout: process.stop_timeout.get(),
        keep_releases: component.keep_releases,
        around: Around {
            migrations: process
                .migrations
                .as_ref()
                .map(|m| format!("{} on {}", m.dir.display(), m.service)),
            requires: process.requires.clone(),
            max_error_rate: component.stabilize_checks.max_error_rate,
        },
    })
}

/// The env file as the user wrote it: relative to the config's directory when it is in it
/// (the config resolved it to an absolute path).
fn relative(config: &Config, path: &Path) -> String {
    config
        .path
        .parent()
        .and_then(|dir| path.strip_prefix(dir).ok())
        .unwrap_or(path)
        .display()
        .to_string()
}
