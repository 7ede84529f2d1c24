//! `cutover export kubernetes` (issue 10): the manifests of a realistic config validate against
//! the Kubernetes schemas with `kubernetes-validate --strict`, and every value comes from the
//! config as documented (the YAML is parsed back by PyYAML, an independent parser).
//!
//! kubernetes-validate comes from PyPI (`pip install kubernetes-validate`, which brings PyYAML;
//! scripts/test installs it). Under CI=true a missing one fails these tests; elsewhere the
//! tests that need it are skipped with a note.

use cutover::ops::kubernetes::yaml::{documents, Map, Node};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const CUTOVER: &str = env!("CARGO_BIN_EXE_cutover");

/// The oldest Kubernetes the manifests claim to work with (the preStop sleep action).
const OLDEST: &str = "1.30.0";

/// A config as a user moving to a cluster would have it: an HTTP API with an env file,
/// migrations and required services; a gRPC server; and the kinds that have no pod.
const CONFIG: &str = r#"
[daemon]
data_dir = "state"
control_socket = "state/control.sock"

[components.backend]
listen = "127.0.0.1:8081"
command = ["{artifact}", "--listen", "localhost:{port}", "--name", "{component}"]
env = { API_ADDR = "127.0.0.1:{port}", RELEASE_TAG = "v-{release}", STATIC_DIR = "{release_dir}/static", WORKERS = "4", MODE = "yes" }
env_file = ".env.production"
health = { path = "/healthz", interval = "1500ms", timeout = "3s", healthy_threshold = 3, start_timeout = "45s" }
drain_timeout = "12s"
stop_timeout = "7s"
keep_releases = 3
stabilize = "20s"
stabilize_checks = { unhealthy_threshold = 4, max_error_rate = 0.02, min_requests = 20 }
requires = ["db"]
migrations = { dir = "migrations", service = "db", lock_timeout = "60s" }
artifact = "dist/api-server"

[components.greeter]
listen = "127.0.0.1:50051"
h2c = true
upstream = "h2c"
command = ["python3", "{release_dir}/server.py", "{port}"]
health = { grpc = true, interval = "2s", timeout = "1s", healthy_threshold = 1, start_timeout = "10s" }

[components.streamer]
listen = "127.0.0.1:50052"
upstream = "h2c"
command = ["{artifact}"]
env = { PORT = "{port}" }

[components.frontend]
kind = "static"
listen = "127.0.0.1:3000"

[components.docs]
kind = "hook"
run = ["true"]
verify = { url = "http://127.0.0.1:1/version", body_contains = "{release}" }

[components.cache_warmer]
listen = "127.0.0.1:8082"
command = ["{artifact}", "--port", "{port}"]

[components.indexer]
listen = "127.0.0.1:8083"
command = ["{artifact}"]
env = { INDEX_DIR = "{data_dir}/index" }

[services.db]
kind = "postgres"
url = "postgres://127.0.0.1:1/app"
"#;

/// A project directory with the config and its env file.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cutover.toml"), CONFIG).unwrap();
    std::fs::write(
        dir.path().join(".env.production"),
        "DATABASE_URL=postgres://app:s3cret@db/app\n",
    )
    .unwrap();
    dir
}

fn export(dir: &Path, args: &[&str]) -> Output {
    Command::new(CUTOVER)
        .arg("--config")
        .arg(dir.join("cutover.toml"))
        .args(["export", "kubernetes"])
        .args(args)
        .output()
        .unwrap()
}

/// The YAML of a successful export.
fn exported(dir: &Path, args: &[&str]) -> String {
    let out = export(dir, args);
    assert!(
        out.status.success(),
        "export {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// ---- the tools ----

/// Whether `python3 -m kubernetes_validate` (and so PyYAML) is there; `false` with a note where
/// a local run may skip.
fn have_kubernetes_validate() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import kubernetes_validate, yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kubernetes-validate is required under CI=true: pip install kubernetes-validate"
        );
        eprintln!(
            "note: kubernetes-validate not found (pip install kubernetes-validate); skipping"
        );
    }
    found
}

/// `kubernetes-validate --strict` of `yaml` against `version` (`None`: its newest).
fn validate(yaml: &str, version: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut command = Command::new("python3");
    command.args(["-m", "kubernetes_validate", "--strict"]);
    if let Some(version) = version {
        command.args(["-k", version]);
    }
    command.arg(&file).output().unwrap()
}

fn assert_valid(yaml: &str, version: Option<&str>) {
    let out = validate(yaml, version);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.matches("passed for resource").count() == 2,
        "kubernetes-validate --strict ({version:?}): {}\n{stdout}{}\n--- manifests ---\n{yaml}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every document of a YAML stream, as PyYAML reads it.
fn parse(yaml: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML cannot read it: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The Deployment and the Service of a stream, checked to be those two.
fn objects(yaml: &str) -> (Value, Value) {
    let docs = parse(yaml);
    assert_eq!(docs.len(), 2, "{yaml}");
    assert_eq!(docs[0]["kind"], "Deployment");
    assert_eq!(docs[1]["kind"], "Service");
    (docs[0].clone(), docs[1].clone())
}

fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e.as_object().unwrap().len(), 2, "{e}");
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

// ---- the tests ----

#[test]
fn exports_validate_against_the_kubernetes_schemas_strictly() {
    if !have_kubernetes_validate() {
        return;
    }
    let dir = project();
    let exports = [
        exported(
            dir.path(),
            &[
                "backend",
                "--image",
                "ghcr.io/acme/api:3f9c2e1",
                "--namespace",
                "prod",
            ],
        ),
        exported(
            dir.path(),
            &["greeter", "--image", "ghcr.io/acme/greeter:v2"],
        ),
        exported(
            dir.path(),
            &["streamer", "--image", "r.example/s:1", "--replicas", "1"],
        ),
        // The placeholder image is still a valid manifest (and cannot be pulled).
        exported(dir.path(), &["backend"]),
        exported(dir.path(), &["cache_warmer", "--name", "cache-warmer"]),
    ];
    for yaml in &exports {
        assert_valid(yaml, Some(OLDEST));
        assert_valid(yaml, None);
    }

    // The validator checks what we rely on: the sleep action is unknown before 1.29, and an
    // unknown field is refused under --strict.
    let old = validate(&exports[0], Some("1.28.0"));
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stdout).contains("'sleep' was unexpected"));
    let typo = exports[0].replacen("minReadySeconds:", "minReadySecond:", 1);
    assert!(!validate(&typo, None).status.success());
}

#[test]
fn every_value_comes_from_the_config() {
    if !have_kubernetes_validate() {
        return;
    }
    let dir = project();
    let yaml = exported(
        dir.path(),
        &[
            "backend",
            "--image",
            "ghcr.io/acme/api:3f9c2e1",
            "--namespace",
            "prod",
            "--replicas",
            "3",
            "--port",
            "9000",
            "--workdir",
            "/srv/app/",
        ],
    );
    let (deployment, service) = objects(&yaml);
    let spec = &deployment["spec"];
    let labels = json!({"app.kubernetes.io/name": "backend"});
    assert_eq!(deployment["metadata"]["name"], "backend");
    assert_eq!(deployment["metadata"]["namespace"], "prod");
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["selector"]["matchLabels"], labels);
    assert_eq!(spec["template"]["metadata"]["labels"], labels);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    );
    assert_eq!(spec["minReadySeconds"], 20, "stabilize");
    // start_timeout 45 + stabilize 20 + 60 to schedule and pull.
    assert_eq!(spec["progressDeadlineSeconds"], 125);
    assert_eq!(spec["revisionHistoryLimit"], 2, "keep_releases = 3");

    let pod = &spec["template"]["spec"];
    assert_eq!(pod["enableServiceLinks"], false);
    // preStop: 5 s for the endpoints + drain_timeout 12 s; then stop_timeout 7 s to SIGKILL.
    assert_eq!(pod["terminationGracePeriodSeconds"], 24);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["name"], "backend");
    assert_eq!(c["image"], "ghcr.io/acme/api:3f9c2e1");
    assert_eq!(c["workingDir"], "/srv/app");
    assert_eq!(
        c["command"],
        json!([
            "/srv/app/api-server",
            "--listen",
            "0.0.0.0:9000",
            "--name",
            "backend"
        ])
    );
    assert_eq!(
        env_of(c),
        [
            ("API_ADDR", "0.0.0.0:9000"),
            ("MODE", "yes"),
            ("RELEASE_TAG", "v-3f9c2e1"),
            ("STATIC_DIR", "/srv/app/static"),
            ("WORKERS", "4"),
            ("CUTOVER_COMPONENT", "backend"),
            ("CUTOVER_RELEASE", "3f9c2e1"),
            ("CUTOVER_PORT", "9000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    assert_eq!(
        c["envFrom"],
        json!([{"secretRef": {"name": "backend-env"}}])
    );
    assert!(yaml.contains(
        "# $ kubectl create secret generic backend-env --from-env-file=.env.production\n"
    ));
    assert!(
        !yaml.contains("s3cret"),
        "the env file's values stay out of the manifests"
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 9000, "protocol": "TCP"}])
    );

    // health: interval 1500ms -> 2 s (rounded up, and said), timeout 3 s.
    let http = json!({"path": "/healthz", "port": "http"});
    assert_eq!(
        c["startupProbe"],
        json!({"httpGet": http, "periodSeconds": 2, "timeoutSeconds": 3,
               "successThreshold": 1, "failureThreshold": 23}),
        "start_timeout 45 s at 2 s apart: 23 probes"
    );
    assert_eq!(
        c["readinessProbe"],
        json!({"httpGet": http, "periodSeconds": 2, "timeoutSeconds": 3,
               "successThreshold": 3, "failureThreshold": 4})
    );
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": http, "periodSeconds": 2, "timeoutSeconds": 3,
               "successThreshold": 1, "failureThreshold": 4})
    );
    assert!(
        yaml.contains("# health.interval = 1s 500ms rounded up to 2s"),
        "{yaml}"
    );
    assert_eq!(
        c["lifecycle"],
        json!({"preStop": {"sleep": {"seconds": 17}}})
    );
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["resources"], json!({}));

    assert_eq!(service["metadata"]["name"], "backend");
    assert_eq!(service["metadata"]["namespace"], "prod");
    assert_eq!(
        service["spec"],
        json!({"type": "ClusterIP", "selector": labels,
               "ports": [{"name": "http", "port": 8081, "targetPort": "http", "protocol": "TCP"}]})
    );

    // What cutover does besides is named, and the placeholders the app could not live with
    // were rewritten out loud.
    for said in [
        "max_error_rate = 0.02",
        "run the migrations (migrations on db)",
        "required service is unhealthy (db)",
        "command[2]: localhost:{port} became 0.0.0.0:{port}",
        "env API_ADDR: 127.0.0.1:{port} became 0.0.0.0:{port}",
    ] {
        assert!(yaml.contains(said), "{said:?} not in:\n{yaml}");
    }
    let stderr = String::from_utf8(export(dir.path(), &["backend"]).stderr).unwrap();
    assert!(stderr.contains("warning: no --image"), "{stderr}");
    assert!(
        stderr.contains("127.0.0.1:{port} became 0.0.0.0:{port}"),
        "{stderr}"
    );
}

#[test]
fn grpc_and_h2c_components_get_probes_the_kubelet_can_speak() {
    if !have_kubernetes_validate() {
        return;
    }
    let dir = project();
    let (deployment, service) = objects(&exported(
        dir.path(),
        &["greeter", "--image", "ghcr.io/acme/greeter:v2"],
    ));
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["python3", "/app/server.py", "8080"]));
    assert!(c.get("envFrom").is_none(), "no env_file, no Secret");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["grpc"], json!({"port": 8080}), "{probe}");
        assert_eq!(c[probe]["periodSeconds"], 2, "{probe}");
        assert_eq!(c[probe]["timeoutSeconds"], 1, "{probe}");
    }
    assert_eq!(
        c["startupProbe"]["failureThreshold"], 5,
        "10 s at 2 s apart"
    );
    assert_eq!(c["ports"][0]["name"], "grpc");
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["port"], 50051);
    assert_eq!(port["targetPort"], "grpc");
    assert_eq!(port["appProtocol"], "kubernetes.io/h2c");
    // Defaults: stabilize 60 s, drain 30 s + 5 s, stop_timeout 10 s.
    assert_eq!(deployment["spec"]["minReadySeconds"], 60);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        45
    );

    // h2c without the gRPC check: kubelet's httpGet is HTTP/1.1 only, so a TCP connect.
    let (deployment, _) = objects(&exported(
        dir.path(),
        &["streamer", "--image", "r.example/s:1"],
    ));
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["tcpSocket"], json!({"port": "h2c"}));
    assert!(c["readinessProbe"].get("httpGet").is_none());
}

#[test]
fn static_and_hook_components_are_refused_with_the_reason() {
    let dir = project();
    for (component, why) in [
        ("frontend", "is static: cutover serves its files itself"),
        ("docs", "is a hook: it is deployed elsewhere"),
    ] {
        let out = export(dir.path(), &[component, "--image", "x/y:1"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{component}: {stderr}");
        assert!(stderr.contains(why), "{component}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn bad_component_names_are_refused() {
    let dir = project();
    let out = export(dir.path(), &["nosuch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown component \"nosuch\"; configured: backend, cache_warmer, docs"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // A name cutover takes and Kubernetes does not ('_'): refused, naming --name.
    let out = export(dir.path(), &["cache_warmer"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"cache_warmer\" is not a valid Kubernetes name")
            && stderr.contains("--name"),
        "{stderr}"
    );
    let yaml = exported(
        dir.path(),
        &["cache_warmer", "--name", "cache-warmer", "--image", "x/y:1"],
    );
    assert!(yaml.contains("\n  name: cache-warmer\n"), "{yaml}");
    assert!(
        yaml.contains("value: cache_warmer\n"),
        "CUTOVER_COMPONENT stays the component's"
    );

    let out = export(dir.path(), &["backend", "--namespace", "Prod"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("namespace \"Prod\""));
}

#[test]
fn data_dir_and_untagged_images_are_refused() {
    let dir = project();
    let out = export(dir.path(), &["indexer", "--image", "x/y:1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("env INDEX_DIR uses {data_dir}"), "{stderr}");
    assert!(stderr.contains("PersistentVolume"), "{stderr}");

    let out = export(dir.path(), &["backend", "--image", "localhost:5000/api"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pass --release"), "{stderr}");
    let yaml = exported(
        dir.path(),
        &[
            "backend",
            "--image",
            "localhost:5000/api",
            "--release",
            "v9",
        ],
    );
    assert!(yaml.contains("value: v-v9\n"), "{yaml}");
}

#[test]
fn out_writes_the_same_yaml_to_a_file() {
    let dir = project();
    let file: PathBuf = dir.path().join("k8s.yaml");
    let args = ["backend", "--image", "x/y:1"];
    let printed = exported(dir.path(), &args);
    let out = export(
        dir.path(),
        &[&args[..], &["--out", file.to_str().unwrap()]].concat(),
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("wrote {}\n", file.display())
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), printed);
}

/// The writer's strings read back as written by a YAML 1.1 parser, whatever they hold: none
/// turns into a number, a boolean, a null, a date or an alias.
#[test]
fn the_yaml_writer_round_trips_through_pyyaml() {
    if !have_kubernetes_validate() {
        return;
    }
    let tricky = [
        "",
        " ",
        " lead",
        "trail ",
        "yes",
        "No",
        "ON",
        "off",
        "y",
        "~",
        "null",
        "true",
        "0755",
        "1e3",
        "0x1F",
        "1_000",
        "12:30",
        "2001-12-14",
        ".inf",
        "-.5",
        "-",
        "- x",
        ": x",
        "a: b",
        "a #b",
        "#c",
        "*alias",
        "&anchor",
        "!tag",
        "%dir",
        "@at",
        "`tick",
        "{}",
        "[]",
        ",",
        "?",
        "|",
        ">",
        "'single'",
        "\"double\"",
        "back\\slash",
        "line\nbreak",
        "tab\there",
        "cr\rlf",
        "nul\0",
        "del\u{7f}",
        "c1\u{85}",
        "sep\u{2028}",
        "bom\u{feff}",
        "café",
        "日本語",
        "emoji 🚀",
        "/health",
        "app.kubernetes.io/name",
        "---",
        "...",
    ];
    let mut map = Map::new();
    for (i, s) in tricky.iter().enumerate() {
        map.push(&format!("k{i}"), vec![format!("comment {s}")], *s);
    }
    map.push(
        "list",
        vec![],
        tricky.iter().map(|s| Node::from(*s)).collect::<Vec<_>>(),
    );
    map.push(
        "nested",
        vec![],
        Map::new().with(":key with colon", Map::new().with("n", 7u32)),
    );
    let yaml = documents(
        &["header".into()],
        &[map.clone(), Map::new().with("second", true)],
    );
    let parsed = parse(&yaml);
    assert_eq!(
        parsed,
        vec![
            serde_json::to_value(Node::from(map)).unwrap(),
            json!({"second": true})
        ],
        "{yaml}"
    );
}
