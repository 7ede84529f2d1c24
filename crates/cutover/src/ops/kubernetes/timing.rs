//! cutover's durations as the whole seconds Kubernetes counts in, and the probes built from
//! them.
//!
//! Kubernetes takes probe periods and timeouts, `minReadySeconds`, grace periods and sleeps in
//! whole seconds, most of them at least 1. A duration that is not is rounded *up* (a shorter
//! timeout or grace period would cut what cutover allowed), and the YAML says so next to the
//! number.

use super::yaml::Map;
use super::{Health, Probe};
use std::time::Duration;

/// A duration in whole seconds, rounded up to at least `min`, with the note to write when it
/// is not the duration as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seconds {
    pub value: u64,
    pub note: Option<String>,
}

pub(super) fn seconds(key: &str, d: Duration, min: u64) -> Seconds {
    let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let value = whole.max(min);
    let exact = d.subsec_nanos() == 0 && d.as_secs() == value;
    let note = (!exact).then(|| {
        let why = if min > 0 {
            format!("Kubernetes counts whole seconds, at least {min}")
        } else {
            "Kubernetes counts whole seconds".to_owned()
        };
        format!("{key} = {} rounded up to {value}s: {why}.", human(d))
    });
    Seconds { value, note }
}

/// "250ms", "60s", "1s 500ms": as a config would write it.
pub(super) fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 && d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.subsec_millis())
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// The three probes of the container, in the order Kubernetes runs them: `startupProbe`
/// (until it passes, nothing else runs), `readinessProbe` (whether the Service sends it
/// traffic) and `livenessProbe` (whether the kubelet restarts it). Each is `(key, comments,
/// probe)`.
pub(super) fn probes(
    probe: &Probe,
    health: &Health,
    unhealthy_threshold: u32,
) -> Vec<(&'static str, Vec<String>, Map)> {
    let period = seconds("health.interval", health.interval, 1);
    let timeout = seconds("health.timeout", health.timeout, 1);
    let rounding: Vec<String> = [&period.note, &timeout.note]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let timed = |map: Map| {
        map.with("periodSeconds", period.value)
            .with("timeoutSeconds", timeout.value)
    };
    let start = health.start_timeout;
    let start_failures = start
        .as_millis()
        .div_ceil(u128::from(period.value) * 1000)
        .max(1);
    let start_failures = u32::try_from(start_failures).unwrap_or(u32::MAX);
    let unhealthy = unhealthy_threshold.max(1);

    let mut startup_comments = rounding.clone();
    startup_comments.push(format!(
        "health.start_timeout = {}: {start_failures} probes {}s apart for the app to come up; \
         until one passes, readiness and liveness are not probed.",
        human(start),
        period.value,
    ));
    let startup = timed(handler(probe))
        .with("successThreshold", 1u32)
        .with("failureThreshold", start_failures);

    let readiness = timed(handler(probe))
        .with_comments(
            "successThreshold",
            vec![match health.healthy_threshold {
                0 | 1 => "health.healthy_threshold: traffic after one passing probe.".to_owned(),
                n => format!(
                    "health.healthy_threshold: {n} passing probes in a row before it gets traffic."
                ),
            }],
            health.healthy_threshold.max(1),
        )
        .with_comments(
            "failureThreshold",
            vec![format!(
                "stabilize_checks.unhealthy_threshold: out of the Service after {unhealthy} \
                 failed probes in a row."
            )],
            unhealthy,
        );

    let liveness = timed(handler(probe))
        .with("successThreshold", 1u32)
        .with_comments(
            "failureThreshold",
            vec![format!(
                "stabilize_checks.unhealthy_threshold: restarted after {unhealthy} failed probes \
                 in a row, as cutover's watchdog replaces an instance that stays unhealthy."
            )],
            unhealthy,
        );

    vec![
        ("startupProbe", startup_comments, startup),
        ("readinessProbe", Vec::new(), readiness),
        ("livenessProbe", Vec::new(), liveness),
    ]
}

/// How the kubelet probes, as cutover's health check does.
fn handler(probe: &Probe) -> Map {
    match probe {
        Probe::Http { path, port_name } => Map::new().with(
            "httpGet",
            Map::new()
                .with("path", path.as_str())
                .with("port", port_name.as_str()),
        ),
        // The grpc action takes a port number only, not a name; no `service`: cutover asks
        // for the whole server ("").
        Probe::Grpc { port } => Map::new().with("grpc", Map::new().with("port", *port)),
        Probe::Tcp { port_name } => Map::new().with_comments(
            "tcpSocket",
            vec![
                "upstream = \"h2c\" without health.grpc: the kubelet's httpGet speaks HTTP/1.1 \
                 only, which an HTTP/2-only server does not answer, so the probe is a TCP \
                 connect. For a gRPC server set health.grpc = true (a grpc probe)."
                    .into(),
            ],
            Map::new().with("port", port_name.as_str()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml::Node;
    use super::*;

    #[test]
    fn rounds_up_and_says_so() {
        let s = seconds("health.interval", Duration::from_millis(250), 1);
        assert_eq!(s.value, 1);
        assert_eq!(
            s.note.as_deref(),
            Some("health.interval = 250ms rounded up to 1s: Kubernetes counts whole seconds, at least 1.")
        );
        let s = seconds("drain_timeout", Duration::from_millis(1500), 0);
        assert_eq!(s.value, 2);
        assert!(s.note.unwrap().contains("1s 500ms rounded up to 2s"));
        assert_eq!(
            seconds("stabilize", Duration::from_secs(60), 0),
            Seconds {
                value: 60,
                note: None
            }
        );
        assert_eq!(seconds("stop_timeout", Duration::ZERO, 0).value, 0);
        assert!(seconds("x", Duration::ZERO, 1).note.is_some());
    }

    #[test]
    fn startup_covers_start_timeout() {
        let health = Health {
            path: "/health".into(),
            grpc: false,
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            start_timeout: Duration::from_millis(30_500),
        };
        let probe = Probe::Http {
            path: "/health".into(),
            port_name: "http".into(),
        };
        let probes = probes(&probe, &health, 3);
        let startup = &probes[0].2;
        assert_eq!(startup.get("periodSeconds"), Some(&Node::Int(1)));
        // 30.5 s at 1 s apart: 31 probes, never fewer than the time allowed.
        assert_eq!(startup.get("failureThreshold"), Some(&Node::Int(31)));
        assert_eq!(probes[1].2.get("successThreshold"), Some(&Node::Int(2)));
        assert_eq!(probes[2].2.get("failureThreshold"), Some(&Node::Int(3)));
    }
}
