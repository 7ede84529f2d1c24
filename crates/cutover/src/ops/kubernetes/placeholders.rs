//! cutover's `{placeholders}` in `command` and `env`, as they read in a container.
//!
//! cutover expands them per instance; a pod has one fixed layout, so each becomes a constant:
//! - `{port}`: the container port (cutover: a free loopback port per instance);
//! - `{release_dir}`: the container's working directory, where the image must hold what the
//!   release bundle held; `{artifact}`: the artifact's file name inside it;
//! - `{release}`, `{component}`: the release and the component's name;
//! - `{data_dir}`: refused. It is cutover's own directory, kept across releases; a pod's files
//!   die with it, and state that must outlive a pod needs a PersistentVolume, which is not
//!   this command's to choose.
//!
//! An address on loopback with `{port}` (`127.0.0.1:{port}`, as the README suggests for
//! cutover) is rewritten to every interface: in a pod the kubelet's probes and the Service
//! connect to the pod's IP, so an app on loopback would never be ready. The YAML says so.

use super::KubernetesError;

/// What each placeholder becomes.
#[derive(Debug, Clone)]
pub(super) struct Values {
    pub port: u16,
    pub release: String,
    pub release_dir: String,
    pub artifact: String,
    pub component: String,
}

/// An expanded value and what the reader should know about how it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Expanded {
    pub value: String,
    pub notes: Vec<String>,
}

/// Loopback binds with `{port}` and what they become in a pod.
const LOOPBACK: &[(&str, &str)] = &[
    ("127.0.0.1:{port}", "0.0.0.0:{port}"),
    ("localhost:{port}", "0.0.0.0:{port}"),
    ("[::1]:{port}", "[::]:{port}"),
];

/// `template` (from `place`, e.g. "env API_ADDR") with every placeholder replaced.
pub(super) fn expand(
    place: &str,
    template: &str,
    values: &Values,
) -> Result<Expanded, KubernetesError> {
    let mut notes = Vec::new();
    let mut text = template.to_owned();
    for (loopback, every) in LOOPBACK {
        if text.contains(loopback) {
            text = text.replace(loopback, every);
            notes.push(format!(
                "{place}: {loopback} became {every}: in a pod the kubelet's probes and the \
                 Service connect to the pod's IP, not to loopback."
            ));
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            // The config refuses an unclosed placeholder; keep the text as written if one
            // reaches here anyway.
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let name = &after[..close];
        let value = match name {
            "port" => values.port.to_string(),
            "release" => values.release.clone(),
            "release_dir" => values.release_dir.clone(),
            "artifact" => values.artifact.clone(),
            "component" => values.component.clone(),
            "data_dir" => {
                return Err(KubernetesError::Placeholder {
                    place: place.to_owned(),
                    placeholder: "{data_dir}".into(),
                    why: "it is cutover's data directory, kept across releases; a pod's files \
                          are gone with the pod, and state that must outlive it needs a \
                          PersistentVolume, which this command does not choose. Use a path of \
                          the release (`{release_dir}`) or a database, or edit the manifests"
                        .into(),
                })
            }
            other => {
                return Err(KubernetesError::Placeholder {
                    place: place.to_owned(),
                    placeholder: format!("{{{other}}}"),
                    why: "it is not a cutover placeholder".into(),
                })
            }
        };
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(Expanded { value: out, notes })
}

/// Whether `template` names `{port}` (so the app learns its port from the config).
pub(super) fn uses_port(template: &str) -> bool {
    template.contains("{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        Values {
            port: 8080,
            release: "3f9c2e1".into(),
            release_dir: "/app".into(),
            artifact: "/app/api".into(),
            component: "backend".into(),
        }
    }

    #[test]
    fn every_placeholder_becomes_a_constant() {
        let e = expand(
            "command[1]",
            "--listen=:{port} --dir={release_dir} {artifact} {component}@{release}",
            &values(),
        )
        .unwrap();
        assert_eq!(
            e.value,
            "--listen=:8080 --dir=/app /app/api backend@3f9c2e1"
        );
        assert!(e.notes.is_empty());
    }

    #[test]
    fn loopback_binds_listen_on_every_interface() {
        let e = expand("env API_ADDR", "127.0.0.1:{port}", &values()).unwrap();
        assert_eq!(e.value, "0.0.0.0:8080");
        assert_eq!(e.notes.len(), 1);
        assert!(e.notes[0].starts_with("env API_ADDR: 127.0.0.1:{port} became 0.0.0.0:{port}"));
        let e = expand("env ADDR", "[::1]:{port}", &values()).unwrap();
        assert_eq!(e.value, "[::]:8080");
        // A loopback address without {port} is somebody else's (a sidecar, a database).
        let e = expand("env DB", "postgres://127.0.0.1:5432/app", &values()).unwrap();
        assert_eq!(e.value, "postgres://127.0.0.1:5432/app");
        assert!(e.notes.is_empty());
    }

    #[test]
    fn data_dir_is_refused_with_the_reason() {
        let err = expand("env CACHE", "{data_dir}/cache", &values()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("env CACHE"), "{text}");
        assert!(text.contains("{data_dir}"), "{text}");
        assert!(text.contains("PersistentVolume"), "{text}");
    }
}
