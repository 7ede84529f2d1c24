//! The admin listener (`[daemon] admin_listen`): `/metrics` in Prometheus text format and a
//! `/health` for the daemon itself. Bind it to loopback or a private address: it is not
//! authenticated.

use crate::proxy::ProxyBody;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

pub fn handle<B>(req: &Request<B>) -> Response<ProxyBody> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::global().encode(),
        ),
        (&Method::GET, "/health") => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(
            Full::new(Bytes::from(body))
                .map_err(|n| match n {})
                .boxed_unsync(),
        )
        .expect("static response parts are valid")
}

/// Checks every configured service periodically, for the `service_up` metric.
pub fn spawn_service_checks(
    config: std::sync::Arc<crate::config::Config>,
    mut shutdown: crate::shutdown::Shutdown,
) {
    if config.services.is_empty() {
        return;
    }
    tokio::spawn(async move {
        loop {
            for service in &config.services {
                let health = crate::checks::check_service(service).await;
                let labels = crate::metrics::ServiceLabels {
                    service: service.name.clone(),
                    kind: service.kind.to_string(),
                };
                let m = crate::metrics::global();
                m.service_up
                    .get_or_create(&labels)
                    .set(i64::from(health.ok));
                m.service_latency
                    .get_or_create(&labels)
                    .set(health.latency_ms.unwrap_or(f64::NAN));
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(15)) => {}
                _ = shutdown.wait() => return,
            }
        }
    });
}
