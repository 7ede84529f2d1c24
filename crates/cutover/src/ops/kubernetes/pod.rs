//! The pod's one container: image, command, env, ports, probes, the preStop sleep.

use super::placeholders::{self, expand, Values};
use super::yaml::{Map, Node};
use super::{timing, ExportOptions, KubernetesError, Probe, ENDPOINT_DELAY};

pub(super) fn port_name(opts: &ExportOptions) -> &'static str {
    match (opts.h2c, opts.health.grpc) {
        (true, true) => "grpc",
        (true, false) => "h2c",
        _ => "http",
    }
}

pub(super) fn probe_of(opts: &ExportOptions) -> Probe {
    let port_name = port_name(opts).to_owned();
    match (opts.h2c, opts.health.grpc) {
        (_, true) => Probe::Grpc {
            port: opts.container_port,
        },
        (true, false) => Probe::Tcp { port_name },
        (false, false) => Probe::Http {
            path: opts.health.path.clone(),
            port_name,
        },
    }
}

/// [`ENDPOINT_DELAY`] + `drain_timeout`, in whole seconds.
pub(super) fn prestop_sleep(opts: &ExportOptions) -> timing::Seconds {
    let drain = timing::seconds("drain_timeout", opts.drain_timeout, 0);
    timing::Seconds {
        value: ENDPOINT_DELAY.as_secs() + drain.value,
        note: drain.note,
    }
}

pub(super) fn container(
    opts: &ExportOptions,
    image: &str,
    values: &Values,
    warnings: &mut Vec<String>,
) -> Result<Map, KubernetesError> {
    let mut command = Vec::new();
    let mut command_notes = vec!["cutover's `command`, its placeholders filled in.".to_owned()];
    for (i, arg) in opts.command.iter().enumerate() {
        let expanded = expand(&format!("command[{i}]"), arg, values)?;
        command_notes.extend(expanded.notes.iter().cloned());
        warnings.extend(expanded.notes);
        command.push(Node::from(expanded.value));
    }
    let port_in_config = opts.command.iter().any(|a| placeholders::uses_port(a))
        || opts.env.values().any(|v| placeholders::uses_port(v));

    let image_comments = if opts.image.is_none() {
        vec![
            "PLACEHOLDER: pass --image with the image that holds this component's release \
              (it cannot be pulled as written)."
                .into(),
        ]
    } else {
        Vec::new()
    };
    let mut container = Map::new()
        .with("name", opts.name.as_str())
        .with_comments("image", image_comments, image)
        .with_comments(
            "workingDir",
            vec![format!(
                "cutover's release directory ({{release_dir}}); {{artifact}} is {}.",
                values.artifact
            )],
            values.release_dir.as_str(),
        )
        .with_comments("command", command_notes, command);
    let (env, env_comments) = env(opts, values, port_in_config, warnings)?;
    container.push("env", env_comments, env);
    if let Some(env_file) = &opts.env_file {
        container.push(
            "envFrom",
            vec![
                format!(
                    "env_file = {env_file:?}: its variables from a Secret, which `env` \
                     overrides as in cutover. Create it with:"
                ),
                format!(
                    "$ kubectl create secret generic {} --from-env-file={env_file}",
                    secret_name(opts)
                ),
            ],
            vec![Node::from(Map::new().with(
                "secretRef",
                Map::new().with("name", secret_name(opts)),
            ))],
        );
    }
    container.push(
        "ports",
        Vec::new(),
        vec![Node::from(
            Map::new()
                .with("name", port_name(opts))
                .with("containerPort", opts.container_port)
                .with("protocol", "TCP"),
        )],
    );
    for (key, comments, probe) in
        timing::probes(&probe_of(opts), &opts.health, opts.unhealthy_threshold)
    {
        container.push(key, comments, probe);
    }
    let sleep = prestop_sleep(opts);
    let mut sleep_comments: Vec<String> = sleep.note.iter().cloned().collect();
    sleep_comments.push(format!(
        "Before SIGTERM: {}s for the endpoints controller, every kube-proxy and the ingress \
         controllers to stop sending new connections (they learn of a terminating pod a few \
         seconds late, and an app stopped at once would refuse them), then drain_timeout ({}) \
         for the requests in flight, as cutover drains an instance before it signals it.",
        ENDPOINT_DELAY.as_secs(),
        timing::human(opts.drain_timeout)
    ));
    container.push(
        "lifecycle",
        Vec::new(),
        Map::new().with_comments(
            "preStop",
            sleep_comments,
            Map::new().with("sleep", Map::new().with("seconds", sleep.value)),
        ),
    );
    container.push(
        "securityContext",
        Vec::new(),
        Map::new().with("allowPrivilegeEscalation", false).with(
            "capabilities",
            Map::new().with("drop", vec![Node::from("ALL")]),
        ),
    );
    container.push(
        "resources",
        vec!["Requests and limits are yours to set: cutover knows nothing of them.".into()],
        Map::new(),
    );
    Ok(container)
}

fn secret_name(opts: &ExportOptions) -> String {
    format!("{}-env", opts.name)
}

/// `env` with its placeholders filled in, then the `CUTOVER_*` variables cutover sets (they
/// win over `env`, as in cutover); and the comments of the list.
fn env(
    opts: &ExportOptions,
    values: &Values,
    port_in_config: bool,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Node>, Vec<String>), KubernetesError> {
    const SET_BY_CUTOVER: [&str; 3] = ["CUTOVER_COMPONENT", "CUTOVER_RELEASE", "CUTOVER_PORT"];
    let mut list = Vec::new();
    for (name, template) in &opts.env {
        if SET_BY_CUTOVER.contains(&name.as_str()) {
            continue;
        }
        check_env_name(name)?;
        let expanded = expand(&format!("env {name}"), template, values)?;
        warnings.extend(expanded.notes.iter().cloned());
        list.push(Node::from(
            Map::new().with("name", name.as_str()).with_comments(
                "value",
                expanded.notes,
                expanded.value,
            ),
        ));
    }
    let mut comments =
        vec!["cutover's `env`, then the variables cutover sets for a release.".to_owned()];
    if let Some(names) = opts.inherit_env.as_ref().filter(|n| !n.is_empty()) {
        comments.push(format!(
            "inherit_env ({}) came from the daemon's environment: here only what the image \
             sets is there.",
            names.join(", ")
        ));
    }
    let port_comment = if port_in_config {
        Vec::new()
    } else {
        vec!["The config names {port} nowhere: the app must read CUTOVER_PORT.".to_owned()]
    };
    let mut cutover = vec![
        ("CUTOVER_COMPONENT", Vec::new(), opts.component.clone()),
        ("CUTOVER_RELEASE", Vec::new(), values.release.clone()),
        ("CUTOVER_PORT", port_comment, values.port.to_string()),
    ];
    for (name, comments, value) in cutover.drain(..) {
        list.push(Node::from(
            Map::new()
                .with_comments("name", comments, name)
                .with("value", value),
        ));
    }
    Ok((list, comments))
}

/// The variable names every Kubernetes from 1.30 on takes (later ones take any printable name):
/// letters, digits, `_`, `-` and `.`, not starting with a digit.
fn check_env_name(name: &str) -> Result<(), KubernetesError> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || matches!(c, '_' | '-' | '.'))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(KubernetesError::Invalid(format!(
            "env key {name:?} is not a variable name Kubernetes {} takes: letters, digits, '_', \
             '-' and '.', not starting with a digit",
            super::MIN_KUBERNETES
        )))
    }
}
