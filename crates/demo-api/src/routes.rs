//! Request routing and the plain HTTP endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::config::Config;
use crate::faults::Faults;
use crate::readiness;
use crate::tracker::Tracker;
use crate::visits::Visits;
use crate::websocket;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// One body type for fixed, echoed and generated responses.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

const X_RELEASE: HeaderName = HeaderName::from_static("x-release");

/// State shared by all connections.
pub struct App {
    pub config: Config,
    pub faults: Faults,
    pub ws_sessions: Tracker,
    pub visits: Visits,
}

impl App {
    pub fn new(config: Config, started: Instant) -> Self {
        App {
            faults: Faults::new(&config, started),
            config,
            ws_sessions: Tracker::new(),
            visits: Visits::from_env(),
        }
    }
}

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let mut response = route(&app, req).await;
    // Lets tests and the demo see which release answered through the proxy.
    response
        .headers_mut()
        .insert(X_RELEASE, app.config.release_header.clone());
    Ok(response)
}

async fn route(app: &App, req: Request<Incoming>) -> Response<Body> {
    let config = &app.config;
    let path = req.uri().path();
    let is_health = matches!(path, "/health" | "/health/ready");

    if app.faults.failing() {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failing on purpose (DEMO_FAIL_AFTER_MS)\n",
        );
    }
    if !is_health && app.faults.inject_error() {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected error (DEMO_ERROR_RATE)\n",
        );
    }
    if !is_health && config.hang {
        std::future::pending::<()>().await;
    }
    if !is_health && config.truncate {
        return truncated();
    }
    if is_health && config.never_healthy {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy on purpose (DEMO_NEVER_HEALTHY)\n",
        );
    }

    match (req.method(), path) {
        (&Method::GET, "/") => text(StatusCode::OK, format!("demo-api {}\n", config.release)),
        (&Method::GET, "/health") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/health/ready") => ready(config).await,
        (&Method::GET, "/version") => text(StatusCode::OK, config.release.clone()),
        (&Method::GET, "/slow") => slow(&req).await,
        (&Method::GET, "/stream") => chunked(&req),
        (&Method::GET, "/headers") => headers(&req),
        // The request target as it arrived: a proxy must send origin-form (`/target?q`), not
        // the absolute-form (`http://host:port/target?q`) only a forward proxy gets.
        (&Method::GET | &Method::POST, "/target") => text(StatusCode::OK, req.uri().to_string()),
        (&Method::POST, "/echo") => echo(req).await,
        (&Method::GET, "/ws") => websocket::upgrade(req, &app.ws_sessions),
        (&Method::GET, "/visits") => visits(app, false).await,
        (&Method::POST, "/visits") => visits(app, true).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn visits(app: &App, record: bool) -> Response<Body> {
    match app.visits.count(&app.config.release, record).await {
        Ok(n) => text(StatusCode::OK, format!("{n}\n")),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn ready(config: &Config) -> Response<Body> {
    let failures = readiness::failures(&config.dependencies).await;
    if failures.is_empty() {
        return text(StatusCode::OK, "ready\n");
    }
    let mut body = String::from("not ready\n");
    for failure in failures {
        body.push_str(&failure);
        body.push('\n');
    }
    text(StatusCode::SERVICE_UNAVAILABLE, body)
}

/// `?ms=N` (default 1000): a request that stays in flight, e.g. across a shutdown.
async fn slow(req: &Request<Incoming>) -> Response<Body> {
    let ms = match query_u64(req, "ms", 1000) {
        Ok(ms) => ms,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    text(StatusCode::OK, format!("slept {ms} ms"))
}

/// `?chunks=N&ms=M` (default 10 and 100): a long-lived streaming body of
/// lines `chunk 0` .. `chunk N-1`, the first sent at once.
fn chunked(req: &Request<Incoming>) -> Response<Body> {
    let (chunks, ms) = match (query_u64(req, "chunks", 10), query_u64(req, "ms", 100)) {
        (Ok(chunks), Ok(ms)) => (chunks, ms),
        (Err(message), _) | (_, Err(message)) => return text(StatusCode::BAD_REQUEST, message),
    };
    let frames = stream::unfold(0, move |i| async move {
        if i == chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let frame = Frame::data(Bytes::from(format!("chunk {i}\n")));
        Some((Ok(frame), i + 1))
    });
    // No length is known, so hyper sends it with chunked transfer encoding.
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(StreamBody::new(frames).boxed_unsync())
        .expect("static response parts are valid")
}

/// Declares 64 bytes, sends 10, then fails the body: hyper closes the connection mid-response.
fn truncated() -> Response<Body> {
    let frames = stream::iter([
        Ok(Frame::data(Bytes::from_static(b"truncated "))),
        Err(BoxError::from("cut short on purpose (DEMO_TRUNCATE)")),
    ]);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, "64")
        .body(StreamBody::new(frames).boxed_unsync())
        .expect("static response parts are valid")
}

/// Request headers as `name: value` lines, to check what a proxy forwarded.
fn headers(req: &Request<Incoming>) -> Response<Body> {
    let mut body = String::new();
    for (name, value) in req.headers() {
        body.push_str(name.as_str());
        body.push_str(": ");
        body.push_str(&String::from_utf8_lossy(value.as_bytes()));
        body.push('\n');
    }
    text(StatusCode::OK, body)
}

/// Streams the request body straight back, so arbitrarily large (and chunked)
/// uploads never sit in memory as a whole.
/// Streams the body back as it arrives; with `?collect=1` reads all of it first, as an app that
/// parses a JSON body does.
async fn echo(req: Request<Incoming>) -> Response<Body> {
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let collect = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "collect=1"));
    let body = if collect {
        match req.into_body().collect().await {
            Ok(all) => Full::new(all.to_bytes())
                .map_err(BoxError::from)
                .boxed_unsync(),
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}\n"),
                )
            }
        }
    } else {
        req.into_body().map_err(BoxError::from).boxed_unsync()
    };
    let mut response = Response::new(body);
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

/// Query parameter `name` as a whole number, or why it is malformed.
fn query_u64(req: &Request<Incoming>, name: &str, default: u64) -> Result<u64, String> {
    let value = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value));
    match value {
        None => Ok(default),
        Some(value) => value
            .parse()
            .map_err(|_| format!("query parameter {name} must be a whole number, got {value:?}\n")),
    }
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(
            Full::new(body.into())
                .map_err(BoxError::from)
                .boxed_unsync(),
        )
        .expect("static response parts are valid")
}
