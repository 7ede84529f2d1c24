//! Prometheus metrics (prometheus-client), served at `/metrics` on `[daemon] admin_listen`.
//!
//! One registry per process. The proxy never looks a label set up per request: each
//! [`crate::proxy::Upstream`] takes its counters and histogram once, when it is created.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    pub component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReleaseLabels {
    pub component: String,
    pub release: String,
}

/// "1xx" .. "5xx".
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: u16) -> usize {
    (usize::from(status / 100).clamp(1, 5)) - 1
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub component: String,
    pub release: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub component: String,
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
    pub kind: String,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

fn duration_buckets() -> Histogram {
    Histogram::new([0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0])
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_errors: Family<ReleaseLabels, Counter>,
    pub inflight: Family<ComponentLabels, Gauge>,
    pub latency: Family<ComponentLabels, Histogram, fn() -> Histogram>,
    pub active_release: Family<ReleaseLabels, Gauge>,
    pub deploys: Family<OutcomeLabels, Counter>,
    pub rollbacks: Family<OutcomeLabels, Counter>,
    pub deploy_duration: Family<ComponentLabels, Histogram, fn() -> Histogram>,
    pub stabilization_duration: Family<ComponentLabels, Histogram, fn() -> Histogram>,
    pub service_up: Family<ServiceLabels, Gauge>,
    pub service_latency: Family<ServiceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 while the serving instance passes its health probes, 0 while it is down or failing.
    pub instance_healthy: Family<ComponentLabels, Gauge>,
    /// Restarts of a serving instance by the watchdog, by cause (`exited`, `unhealthy`).
    pub restarts: Family<CauseLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub component: String,
    pub cause: String,
}

impl Metrics {
    fn new() -> Metrics {
        let mut metrics = Metrics {
            requests: Family::default(),
            upstream_errors: Family::default(),
            inflight: Family::default(),
            latency: Family::new_with_constructor(latency_buckets),
            active_release: Family::default(),
            deploys: Family::default(),
            rollbacks: Family::default(),
            deploy_duration: Family::new_with_constructor(duration_buckets),
            stabilization_duration: Family::new_with_constructor(duration_buckets),
            service_up: Family::default(),
            service_latency: Family::default(),
            instance_healthy: Family::default(),
            restarts: Family::default(),
            registry: Registry::with_prefix("cutover"),
        };
        metrics
            .registry
            .register_collector(Box::new(CertificateCollector));
        metrics.registry.register(
            "requests",
            "Proxied or served requests by status class",
            metrics.requests.clone(),
        );
        metrics.registry.register(
            "upstream_errors",
            "Requests that got no answer from the instance",
            metrics.upstream_errors.clone(),
        );
        metrics.registry.register(
            "inflight_requests",
            "Requests and tunnels in flight",
            metrics.inflight.clone(),
        );
        metrics.registry.register(
            "request_duration_seconds",
            "Time to the response head",
            metrics.latency.clone(),
        );
        metrics.registry.register(
            "active_release",
            "1 for the release serving each component",
            metrics.active_release.clone(),
        );
        metrics.registry.register(
            "deploys",
            "Deploys by kind and outcome",
            metrics.deploys.clone(),
        );
        metrics.registry.register(
            "rollbacks",
            "Rollbacks: automatic (stabilization) or manual",
            metrics.rollbacks.clone(),
        );
        metrics.registry.register(
            "deploy_duration_seconds",
            "Deploy durations",
            metrics.deploy_duration.clone(),
        );
        metrics.registry.register(
            "stabilization_duration_seconds",
            "Time spent stabilizing",
            metrics.stabilization_duration.clone(),
        );
        metrics.registry.register(
            "service_up",
            "1 when the service's health check passes",
            metrics.service_up.clone(),
        );
        metrics.registry.register(
            "service_check_latency_ms",
            "Latency of the last service health check",
            metrics.service_latency.clone(),
        );
        metrics.registry.register(
            "instance_healthy",
            "1 while the serving instance of a process component passes its health probes",
            metrics.instance_healthy.clone(),
        );
        metrics.registry.register(
            "instance_restarts",
            "Restarts of a serving instance by the watchdog, by cause",
            metrics.restarts.clone(),
        );
        metrics
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// One certificate of the shared https listener, as `/metrics` shows it.
#[derive(Clone, Debug)]
pub struct CertificateSample {
    pub name: String,
    /// None: no usable certificate yet (no series for it).
    pub not_after: Option<std::time::SystemTime>,
    /// Consecutive failed renewals.
    pub failures: u32,
}

type CertificateSource = Box<dyn Fn() -> Vec<CertificateSample> + Send + Sync>;

/// Read at each scrape, so expiry and failures are never stale; set by `certs` each time the
/// config is applied.
static CERTIFICATES: std::sync::Mutex<Option<CertificateSource>> = std::sync::Mutex::new(None);

/// Where `/metrics` reads the certificates from from now on.
pub fn set_certificates(source: impl Fn() -> Vec<CertificateSample> + Send + Sync + 'static) {
    *CERTIFICATES.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(source));
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    name: String,
}

/// `certificate_expiry_seconds` and `certificate_renewal_failures`, written only when there
/// are certificates (a daemon without them shows neither).
#[derive(Debug)]
struct CertificateCollector;

impl prometheus_client::collector::Collector for CertificateCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::{MetricType, TypedMetric};
        let samples = match &*CERTIFICATES.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(source) => source(),
            None => return Ok(()),
        };
        let expiring: Vec<(&str, i64)> = samples
            .iter()
            .filter_map(|s| {
                let at = s.not_after?.duration_since(std::time::UNIX_EPOCH).ok()?;
                Some((s.name.as_str(), i64::try_from(at.as_secs()).ok()?))
            })
            .collect();
        if !expiring.is_empty() {
            let mut family = encoder.encode_descriptor(
                "certificate_expiry_seconds",
                "When each certificate of the https listener expires (its not_after, unix time)",
                None,
                ConstGauge::<i64>::TYPE,
            )?;
            for (name, at) in expiring {
                let labels = CertificateLabels {
                    name: name.to_owned(),
                };
                ConstGauge::new(at).encode(family.encode_family(&labels)?)?;
            }
        }
        if !samples.is_empty() {
            let mut family = encoder.encode_descriptor(
                "certificate_renewal_failures",
                "Consecutive failed orders of each certificate (0 once one succeeds)",
                None,
                MetricType::Gauge,
            )?;
            for sample in &samples {
                let labels = CertificateLabels {
                    name: sample.name.clone(),
                };
                ConstGauge::new(i64::from(sample.failures))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Label sets of `active_release` ever set: prometheus-client cannot iterate a family, and an
/// old release's series must drop to 0 when another takes over.
static ACTIVE_INDEX: std::sync::Mutex<Vec<ReleaseLabels>> = std::sync::Mutex::new(Vec::new());

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn global() -> &'static Metrics {
    &METRICS
}

/// Records which release serves a component now.
pub fn active(component: &str, release: Option<&str>) {
    let mut index = ACTIVE_INDEX.lock().unwrap_or_else(|p| p.into_inner());
    for labels in index.iter().filter(|l| l.component == component) {
        global().active_release.get_or_create(labels).set(0);
    }
    if let Some(release) = release {
        let labels = ReleaseLabels {
            component: component.to_owned(),
            release: release.to_owned(),
        };
        global().active_release.get_or_create(&labels).set(1);
        if !index.contains(&labels) {
            index.push(labels);
        }
    }
}

/// The per-upstream handles the proxy updates on every request.
#[derive(Clone)]
pub struct UpstreamMetrics {
    by_class: [Counter; 5],
    pub errors: Counter,
    pub latency: Histogram,
    pub inflight: Gauge,
}

impl UpstreamMetrics {
    pub fn new(component: &str, release: &str) -> UpstreamMetrics {
        let m = global();
        let class = |class: &str| {
            m.requests
                .get_or_create(&RequestLabels {
                    component: component.to_owned(),
                    release: release.to_owned(),
                    class: class.to_owned(),
                })
                .clone()
        };
        let component_labels = ComponentLabels {
            component: component.to_owned(),
        };
        UpstreamMetrics {
            by_class: CLASSES.map(class),
            errors: m
                .upstream_errors
                .get_or_create(&ReleaseLabels {
                    component: component.to_owned(),
                    release: release.to_owned(),
                })
                .clone(),
            latency: m.latency.get_or_create(&component_labels).clone(),
            inflight: m.inflight.get_or_create(&component_labels).clone(),
        }
    }

    pub fn response(&self, status: u16) {
        self.by_class[class_index(status)].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(CLASSES[class_index(101)], "1xx");
        assert_eq!(CLASSES[class_index(204)], "2xx");
        assert_eq!(CLASSES[class_index(304)], "3xx");
        assert_eq!(CLASSES[class_index(404)], "4xx");
        assert_eq!(CLASSES[class_index(503)], "5xx");
        assert_eq!(CLASSES[class_index(999)], "5xx");
    }
}
