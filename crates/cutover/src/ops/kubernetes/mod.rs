//! `cutover export kubernetes`: a Deployment and a Service that roll out one process component
//! the way cutover deploys it, for users who move it to a cluster.
//!
//! What maps to what (each number in the YAML has a comment saying where it came from):
//! - the deploy: `RollingUpdate` with `maxUnavailable: 0`, `maxSurge: 1`: the old pods serve
//!   until a new one is ready, as cutover keeps the old release serving until the switch;
//! - `health` → the probes ([`timing::probes`]): `startupProbe` for `start_timeout`,
//!   `readinessProbe` with `healthy_threshold`, `livenessProbe` with
//!   `stabilize_checks.unhealthy_threshold`; `httpGet` on `health.path`, a native `grpc`
//!   probe for `health.grpc`;
//! - `stabilize` → `minReadySeconds`; `progressDeadlineSeconds` = `start_timeout` +
//!   `stabilize` + [`SCHEDULE_MARGIN`] (scheduling and pulling the image);
//! - stopping → a `preStop` sleep of [`ENDPOINT_DELAY`] + `drain_timeout` (the sleep action,
//!   so the image needs no `sleep` binary), then SIGTERM, and `stop_timeout` until SIGKILL:
//!   `terminationGracePeriodSeconds` is their sum;
//! - `command` and `env` with their placeholders ([`placeholders`]), `env_file` → `envFrom` a
//!   Secret, the `CUTOVER_*` variables cutover sets;
//! - `keep_releases` → `revisionHistoryLimit` (what `kubectl rollout undo` can go back to);
//! - the Service: `ClusterIP`, the component's `listen` port to the container port.
//!
//! The image is the user's to name (cutover deploys artifacts, not images); without one the
//! manifests carry a placeholder that cannot be pulled, and say so.
//!
//! Like the other [`crate::ops`] modules this takes explicit options, not the config.

mod placeholders;
mod pod;
mod timing;
pub mod yaml;

use placeholders::Values;
use std::collections::BTreeMap;
use std::time::Duration;
use yaml::{Map, Node};

/// Kubernetes versions the manifests need: the `preStop` sleep action is on by default from
/// 1.30 (beta) on.
pub const MIN_KUBERNETES: &str = "1.30";

/// How long the preStop hook waits before the app may be told to stop, so that the endpoints
/// controller, every kube-proxy and the ingress controllers have stopped sending it new
/// connections (they learn of the terminating pod asynchronously, within a few seconds).
pub const ENDPOINT_DELAY: Duration = Duration::from_secs(5);

/// Time a rollout step gets beyond the app's own start and stabilization: scheduling the pod
/// and pulling its image.
pub const SCHEDULE_MARGIN: Duration = Duration::from_secs(60);

/// The label every object carries and the selector matches.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";

/// Everything the manifests are made of.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The Deployment's, Service's and container's name (a DNS-1035 label).
    pub name: String,
    /// The cutover component (`{component}`, `CUTOVER_COMPONENT`, the comments).
    pub component: String,
    /// The config file's name, for the header.
    pub config_file: String,
    /// `None`: a placeholder that cannot be pulled, named as such in the YAML.
    pub image: Option<String>,
    /// `{release}` and `CUTOVER_RELEASE`; `None`: the image's tag.
    pub release: Option<String>,
    pub replicas: u32,
    pub namespace: Option<String>,
    /// What `{port}` becomes and the container listens on.
    pub container_port: u16,
    /// The component's `listen` port: the Service's port (`None`: the container port).
    pub listen_port: Option<u16>,
    /// `{release_dir}` and the working directory (absolute).
    pub workdir: String,
    /// The artifact's file name in `workdir` (`{artifact}`).
    pub artifact_name: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The component's `env_file` as written: its variables come from a Secret.
    pub env_file: Option<String>,
    /// `env_clear = true`: the variables it keeps of the daemon's environment.
    pub inherit_env: Option<Vec<String>>,
    /// `upstream = "h2c"`.
    pub h2c: bool,
    pub health: Health,
    pub unhealthy_threshold: u32,
    pub stabilize: Duration,
    pub drain_timeout: Duration,
    pub stop_timeout: Duration,
    pub keep_releases: usize,
    /// What cutover does around a deploy that a Deployment does not, for the header.
    pub around: Around,
}

/// The component's `health` table.
#[derive(Debug, Clone)]
pub struct Health {
    pub path: String,
    pub grpc: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub start_timeout: Duration,
}

/// Parts of a cutover deploy these manifests leave out; the header names each one set.
#[derive(Debug, Clone, Default)]
pub struct Around {
    /// `migrations`: "dir on service".
    pub migrations: Option<String>,
    /// `requires`: services checked before a deploy.
    pub requires: Vec<String>,
    /// `stabilize_checks.max_error_rate`.
    pub max_error_rate: f64,
}

/// How the kubelet probes the container.
#[derive(Debug, Clone)]
enum Probe {
    Http { path: String, port_name: String },
    Grpc { port: u16 },
    Tcp { port_name: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KubernetesError {
    #[error("{what} {value:?} is not a valid Kubernetes name: {why}")]
    Name {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("{place} uses {placeholder}, which has no equivalent in a pod: {why}")]
    Placeholder {
        place: String,
        placeholder: String,
        why: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The manifests as YAML, and warnings for the terminal (each is also in the YAML).
#[derive(Debug, Clone)]
pub struct Manifests {
    pub yaml: String,
    pub warnings: Vec<String>,
}

/// The Deployment and the Service, as one multi-document YAML stream.
pub fn manifests(opts: &ExportOptions) -> Result<Manifests, KubernetesError> {
    check_names(opts)?;
    let mut warnings = Vec::new();
    let (image, release) = image_and_release(opts, &mut warnings)?;
    let labels = Map::new().with(NAME_LABEL, opts.name.as_str());
    let values = Values {
        port: opts.container_port,
        release,
        release_dir: opts.workdir.trim_end_matches('/').to_owned(),
        artifact: format!(
            "{}/{}",
            opts.workdir.trim_end_matches('/'),
            opts.artifact_name
        ),
        component: opts.component.clone(),
    };
    let container = pod::container(opts, &image, &values, &mut warnings)?;
    let deployment = deployment(opts, &labels, container);
    let service = service(opts, &labels);
    let yaml = yaml::documents(&header(opts), &[deployment, service]);
    Ok(Manifests { yaml, warnings })
}

fn header(opts: &ExportOptions) -> Vec<String> {
    let mut lines = vec![
        format!(
            "Generated by `cutover export kubernetes {}` from {} (component {}).",
            opts.component, opts.config_file, opts.component
        ),
        format!("Needs Kubernetes {MIN_KUBERNETES} or later (the preStop sleep action)."),
        "What a cutover deploy does and these manifests do not:".into(),
    ];
    lines.push(format!(
        "- judge the error rate while the release stabilizes (max_error_rate = {}) and roll \
         back by itself: Kubernetes watches readiness only, and a failed rollout stops at its \
         progress deadline until `kubectl rollout undo deployment/{}`; for error-rate analysis \
         see Argo Rollouts or Flagger.",
        opts.around.max_error_rate, opts.name
    ));
    if let Some(migrations) = &opts.around.migrations {
        lines.push(format!(
            "- run the migrations ({migrations}) before the new release starts: run them \
             before you apply (a Job, or `cutover migrate up` from CI)."
        ));
    }
    if !opts.around.requires.is_empty() {
        lines.push(format!(
            "- refuse the deploy while a required service is unhealthy ({}).",
            opts.around.requires.join(", ")
        ));
    }
    lines
}

fn check_names(opts: &ExportOptions) -> Result<(), KubernetesError> {
    dns_label("name", &opts.name, true)?;
    if let Some(namespace) = &opts.namespace {
        dns_label("namespace", namespace, false)?;
    }
    if !opts.workdir.starts_with('/') {
        return Err(KubernetesError::Invalid(format!(
            "workdir {:?} must be an absolute path",
            opts.workdir
        )));
    }
    if opts.command.is_empty() {
        return Err(KubernetesError::Invalid(format!(
            "component {} has no command",
            opts.component
        )));
    }
    Ok(())
}

/// RFC 1123 label (namespaces); with `letter_first`, RFC 1035 (Service names).
fn dns_label(what: &'static str, value: &str, letter_first: bool) -> Result<(), KubernetesError> {
    let why = if value.is_empty() || value.len() > 63 {
        Some("1 to 63 characters")
    } else if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("only a-z, 0-9 and '-'")
    } else if letter_first && !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("it must start with a letter")
    } else if !value.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !value.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("it must start and end with a letter or digit")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(KubernetesError::Name {
            what,
            value: value.to_owned(),
            why: if what == "name" {
                format!("{why}; pass --name NAME")
            } else {
                why.to_owned()
            },
        }),
    }
}

/// The image (or the placeholder) and the release it carries.
fn image_and_release(
    opts: &ExportOptions,
    warnings: &mut Vec<String>,
) -> Result<(String, String), KubernetesError> {
    let Some(image) = &opts.image else {
        let placeholder = format!("REGISTRY/{}:RELEASE", opts.name);
        warnings.push(format!(
            "no --image: the Deployment names the placeholder {placeholder}, which cannot be pulled"
        ));
        let release = opts.release.clone().unwrap_or_else(|| "RELEASE".into());
        return Ok((placeholder, release));
    };
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KubernetesError::Invalid(format!(
            "image {image:?} is empty or contains whitespace"
        )));
    }
    if let Some(release) = &opts.release {
        return Ok((image.clone(), release.clone()));
    }
    // The tag is after the last ':' of the last path segment (a registry's port is not).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if !image.contains('@') && !tag.is_empty() => {
            Ok((image.clone(), tag.to_owned()))
        }
        _ => Err(KubernetesError::Invalid(format!(
            "image {image:?} has no tag to take the release from: pass --release (it sets \
             CUTOVER_RELEASE and {{release}})"
        ))),
    }
}

fn deployment(opts: &ExportOptions, labels: &Map, container: Map) -> Map {
    let min_ready = timing::seconds("stabilize", opts.stabilize, 0);
    let start = timing::seconds("health.start_timeout", opts.health.start_timeout, 0);
    let deadline = min_ready.value + start.value + SCHEDULE_MARGIN.as_secs();
    let sleep = pod::prestop_sleep(opts);
    let stop = timing::seconds("stop_timeout", opts.stop_timeout, 0);
    let grace = sleep.value + stop.value;

    let mut min_ready_comments: Vec<String> = min_ready.note.iter().cloned().collect();
    min_ready_comments.push(format!(
        "stabilize = {}: a new pod must stay ready this long before it counts as available \
         and the rollout replaces the next old one.",
        timing::human(opts.stabilize)
    ));
    let pod_spec = Map::new()
        .with_comments(
            "enableServiceLinks",
            vec![
                "Only the variables below, as cutover gives a release: no <SERVICE>_PORT \
                  variables for every Service in the namespace."
                    .into(),
            ],
            false,
        )
        .with_comments(
            "terminationGracePeriodSeconds",
            vec![format!(
                "The preStop sleep ({}s) + stop_timeout ({}s): SIGKILL only after that.",
                sleep.value, stop.value
            )]
            .into_iter()
            .chain(stop.note.clone())
            .collect(),
            grace,
        )
        .with_comments(
            "securityContext",
            vec![
                "As cutover's systemd unit runs releases: not as root. An image whose USER \
                  is a name, not a number, fails this check: add runAsUser with its uid."
                    .into(),
            ],
            Map::new()
                .with("runAsNonRoot", true)
                .with("seccompProfile", Map::new().with("type", "RuntimeDefault")),
        )
        .with("containers", vec![Node::from(container)]);

    let mut metadata = Map::new().with("name", opts.name.as_str());
    if let Some(namespace) = &opts.namespace {
        metadata.push("namespace", Vec::new(), namespace.as_str());
    }
    metadata.push("labels", Vec::new(), labels.clone());

    let spec = Map::new()
        .with("replicas", opts.replicas)
        .with("selector", Map::new().with("matchLabels", labels.clone()))
        .with_comments("minReadySeconds", min_ready_comments, min_ready.value)
        .with_comments(
            "progressDeadlineSeconds",
            vec![format!(
                "health.start_timeout ({}s) + stabilize ({}s) + {}s to schedule the pod and \
                 pull the image: a rollout step that takes longer is reported failed \
                 (ProgressDeadlineExceeded).",
                start.value,
                min_ready.value,
                SCHEDULE_MARGIN.as_secs()
            )],
            deadline,
        )
        .with_comments(
            "revisionHistoryLimit",
            vec![format!(
                "keep_releases = {}: the old ReplicaSets kept besides the current one, what \
                 `kubectl rollout undo` can go back to.",
                opts.keep_releases
            )],
            u64::try_from(opts.keep_releases.saturating_sub(1)).unwrap_or(u64::MAX),
        )
        .with(
            "strategy",
            Map::new().with("type", "RollingUpdate").with_comments(
                "rollingUpdate",
                vec![
                    "As cutover deploys: the old pods serve until a new one is ready, one \
                      new pod at a time."
                        .into(),
                ],
                Map::new()
                    .with("maxUnavailable", 0u32)
                    .with("maxSurge", 1u32),
            ),
        )
        .with(
            "template",
            Map::new()
                .with("metadata", Map::new().with("labels", labels.clone()))
                .with("spec", pod_spec),
        );

    Map::new()
        .with("apiVersion", "apps/v1")
        .with("kind", "Deployment")
        .with("metadata", metadata)
        .with("spec", spec)
}

fn service(opts: &ExportOptions, labels: &Map) -> Map {
    let port = opts.listen_port.unwrap_or(opts.container_port);
    let port_comment = match opts.listen_port {
        Some(listen) => format!("The component's listen port ({listen})."),
        None => "The component has no fixed listen port of its own (with [edge] hosts, \
                 routing by host is an Ingress's job in a cluster): the container port."
            .to_owned(),
    };
    let mut port_map = Map::new()
        .with("name", pod::port_name(opts))
        .with_comments("port", vec![port_comment], port)
        .with("targetPort", pod::port_name(opts))
        .with("protocol", "TCP");
    if opts.h2c {
        port_map.push(
            "appProtocol",
            vec!["upstream = \"h2c\": HTTP/2 without TLS, for gateways and meshes.".into()],
            "kubernetes.io/h2c",
        );
    }
    let mut metadata = Map::new().with("name", opts.name.as_str());
    if let Some(namespace) = &opts.namespace {
        metadata.push("namespace", Vec::new(), namespace.as_str());
    }
    metadata.push("labels", Vec::new(), labels.clone());
    Map::new()
        .with("apiVersion", "v1")
        .with("kind", "Service")
        .with("metadata", metadata)
        .with(
            "spec",
            Map::new()
                .with("type", "ClusterIP")
                .with("selector", labels.clone())
                .with("ports", vec![Node::from(port_map)]),
        )
}

#[cfg(test)]
mod tests;
