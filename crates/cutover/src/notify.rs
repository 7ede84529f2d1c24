//! Webhook notifications of deploy events (`[[notify]] url = "..." events = [...]`).
//!
//! Why it exists: the deploys this replaces failed silently. Each event is POSTed as JSON to
//! every webhook that asked for it, with a one-line `text` (Slack) and `content` (Discord)
//! summary beside the structured fields:
//!
//! ```json
//! {"event": "deploy_failed", "component": "backend", "release": "abc1234",
//!  "message": "health gate: ...", "text": "❌ backend abc1234: deploy failed: health gate: ...",
//!  "content": "<same as text>", "at": "2025-01-02T03:04:05.678Z"}
//! ```
//!
//! A webhook never slows or fails a deploy: [`Notifier::notify`] only spawns a task and
//! returns. Each delivery makes up to [`RetryPolicy::attempts`] attempts (3), each bounded by
//! [`RetryPolicy::timeout`] (5 s, connecting included), waiting 1 s then 2 s between them; a
//! 2xx response ends it; 408, 429, 5xx, timeouts and connection errors are retried, other
//! statuses are not. Failures are logged with tracing, with the URL masked ([`mask_url`]):
//! webhook URLs carry their secret in the path or query string.
//!
//! `http://` and `https://` (Slack, Discord) URLs are supported, through [`crate::https`].

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use crate::vocab::NotifyKind as EventKind;

/// One event to announce.
#[derive(Debug, Clone)]
pub struct NotifyEvent {
    pub kind: EventKind,
    pub component: String,
    pub release: Option<String>,
    /// What happened, already free of secrets (it is sent as is).
    pub message: String,
    pub at: SystemTime,
}

impl NotifyEvent {
    /// An event happening now.
    pub fn new(
        kind: EventKind,
        component: impl Into<String>,
        release: Option<String>,
        message: impl Into<String>,
    ) -> NotifyEvent {
        NotifyEvent {
            kind,
            component: component.into(),
            release,
            message: message.into(),
            at: SystemTime::now(),
        }
    }

    /// The Slack/Discord one-line summary.
    pub fn text(&self) -> String {
        let (icon, what) = self.kind.summary();
        let mut text = format!("{icon} {}", self.component);
        if let Some(release) = &self.release {
            text.push(' ');
            text.push_str(release);
        }
        text.push_str(": ");
        text.push_str(what);
        let message: String = self
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !message.is_empty() {
            text.push_str(": ");
            if message.chars().count() > 300 {
                text.extend(message.chars().take(299));
                text.push('…');
            } else {
                text.push_str(&message);
            }
        }
        text
    }

    /// The JSON body POSTed to webhooks.
    pub fn payload(&self) -> serde_json::Value {
        let text = self.text();
        serde_json::json!({
            "event": self.kind.as_str(),
            "component": self.component,
            "release": self.release,
            "message": self.message,
            "text": text,
            "content": text,
            "at": humantime::format_rfc3339_millis(self.at).to_string(),
        })
    }
}

/// How hard one delivery tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    /// Per attempt, connecting included.
    pub timeout: Duration,
    /// Wait before the second attempt; doubled before each next one.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            timeout: Duration::from_secs(5),
            backoff: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotifyError {
    #[error("notify url {url}: {why}")]
    Url { url: String, why: String },
    #[error("notify url {url}: unknown event {event:?} (events: {known})")]
    Event {
        url: String,
        event: String,
        known: String,
    },
}

/// Sends events to the configured webhooks. Cheap to clone; all clones share the deliveries in
/// flight (see [`Notifier::flush`]).
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    hooks: Vec<Hook>,
    policy: RetryPolicy,
    /// Deliveries spawned and not finished, so shutdown can wait for them.
    in_flight: AtomicUsize,
    idle: tokio::sync::Notify,
}

struct Hook {
    uri: Uri,
    /// The URL as logs show it.
    masked: String,
    /// `None`: every event.
    events: Option<BTreeSet<EventKind>>,
}

impl Notifier {
    /// Webhooks as `(url, events)`; an empty event list means every event.
    /// The config's `[[notify]]` hooks; none when it has none.
    pub fn for_config(config: &crate::config::Config) -> Result<Option<Notifier>, NotifyError> {
        let hooks: Vec<(String, Vec<String>)> = config
            .notify
            .iter()
            .map(|n| (n.url.clone(), n.events.clone()))
            .collect();
        if hooks.is_empty() {
            return Ok(None);
        }
        Self::new(&hooks).map(Some)
    }

    pub fn new(hooks: &[(String, Vec<String>)]) -> Result<Notifier, NotifyError> {
        Self::with_policy(hooks, RetryPolicy::default())
    }

    pub fn with_policy(
        hooks: &[(String, Vec<String>)],
        policy: RetryPolicy,
    ) -> Result<Notifier, NotifyError> {
        let mut parsed = Vec::new();
        for (url, events) in hooks {
            let masked = mask_url(url);
            let err = |why: &str| NotifyError::Url {
                url: masked.clone(),
                why: why.to_owned(),
            };
            let uri: Uri = url.parse().map_err(|_| err("not a valid URL"))?;
            match uri.scheme_str() {
                Some("http" | "https") => {}
                _ => return Err(err("use an http:// or https:// URL")),
            }
            let Some(authority) = uri.authority() else {
                return Err(err("no host"));
            };
            if authority.as_str().contains('@') {
                return Err(err(
                    "credentials in the URL are not supported: put the token in the path or query",
                ));
            }
            let events = if events.is_empty() {
                None
            } else {
                let mut set = BTreeSet::new();
                for event in events {
                    let kind = EventKind::parse(event).ok_or_else(|| NotifyError::Event {
                        url: masked.clone(),
                        event: event.clone(),
                        known: EventKind::ALL.map(EventKind::as_str).join(", "),
                    })?;
                    set.insert(kind);
                }
                Some(set)
            };
            parsed.push(Hook {
                uri,
                masked,
                events,
            });
        }
        Ok(Notifier {
            inner: Arc::new(Inner {
                hooks: parsed,
                policy,
                in_flight: AtomicUsize::new(0),
                idle: tokio::sync::Notify::new(),
            }),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.inner.hooks.is_empty()
    }

    /// Announces `event` to every webhook that asked for it. Never blocks: deliveries run in
    /// spawned tasks (on the current tokio runtime, or on a thread of their own outside one).
    pub fn notify(&self, event: NotifyEvent) {
        let targets: Vec<usize> = (0..self.inner.hooks.len())
            .filter(|&i| {
                self.inner.hooks[i]
                    .events
                    .as_ref()
                    .is_none_or(|set| set.contains(&event.kind))
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        let body = Bytes::from(event.payload().to_string());
        for i in targets {
            self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
            let guard = InFlight(self.inner.clone());
            let body = body.clone();
            let kind = event.kind;
            let task = async move {
                deliver(&guard.0.hooks[i], kind, body, guard.0.policy).await;
                drop(guard);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(task);
                }
                Err(_) => {
                    std::thread::spawn(move || match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(task),
                        Err(e) => tracing::warn!(error = %e, "webhook not sent: no runtime"),
                    });
                }
            }
        }
    }

    /// Waits until no delivery is in flight, at most `timeout`; true if none is left. For a
    /// graceful shutdown that wants its last events sent.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.inner.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// Counts a delivery as in flight until dropped (also when its task is cancelled).
struct InFlight(Arc<Inner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

enum Outcome {
    Done,
    Retry(String),
    GiveUp(String),
}

async fn deliver(hook: &Hook, kind: EventKind, body: Bytes, policy: RetryPolicy) {
    let client = match crate::https::client::<Full<Bytes>>(policy.timeout) {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(url = %hook.masked, event = %kind, %error, "webhook not sent");
            return;
        }
    };
    let attempts = policy.attempts.max(1);
    let mut backoff = policy.backoff;
    for attempt in 1..=attempts {
        let outcome = attempt_once(&client, hook, body.clone(), policy.timeout).await;
        match outcome {
            Outcome::Done => {
                tracing::debug!(url = %hook.masked, event = %kind, attempt, "webhook delivered");
                return;
            }
            Outcome::GiveUp(error) => {
                tracing::warn!(url = %hook.masked, event = %kind, attempt, %error, "webhook refused the event; not retrying");
                return;
            }
            Outcome::Retry(error) if attempt == attempts => {
                tracing::warn!(url = %hook.masked, event = %kind, attempts, %error, "webhook failed; giving up");
                return;
            }
            Outcome::Retry(error) => {
                tracing::debug!(url = %hook.masked, event = %kind, attempt, %error, "webhook failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
        }
    }
}

async fn attempt_once(
    client: &Client<crate::https::Connector, Full<Bytes>>,
    hook: &Hook,
    body: Bytes,
    timeout: Duration,
) -> Outcome {
    let request = Request::builder()
        .method(Method::POST)
        .uri(hook.uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("cutover/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body));
    let request = match request {
        Ok(r) => r,
        Err(e) => return Outcome::GiveUp(e.to_string()),
    };
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => Outcome::Retry(format!("no response within {timeout:?}")),
        Ok(Err(e)) => Outcome::Retry(error_chain(&e)),
        Ok(Ok(response)) => {
            let status = response.status();
            if status.is_success() {
                Outcome::Done
            } else if status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
            {
                Outcome::Retry(format!("HTTP {status}"))
            } else {
                Outcome::GiveUp(format!("HTTP {status}"))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A webhook URL as it may be logged: scheme, host and port, the first path segment; the rest
/// of the path, the query and any credentials replaced by `****`.
/// `http://hooks.example/services/T0/B0/XyZ?token=s` → `http://hooks.example/services/****?****`.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => return "****".into(),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (before_query, query) = match rest.split_once('?') {
        Some((b, _)) => (b, true),
        None => (rest, false),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("****@{host}"),
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}");
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    if let Some(first) = segments.next() {
        out.push('/');
        out.push_str(first);
        if segments.next().is_some() {
            out.push_str("/****");
        }
    }
    if query {
        out.push_str("?****");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_urls() {
        assert_eq!(
            mask_url("http://hooks.example/services/T0/B0/XyZ?token=s"),
            "http://hooks.example/services/****?****"
        );
        assert_eq!(
            mask_url("http://u:p@127.0.0.1:9/hook#x"),
            "http://****@127.0.0.1:9/hook"
        );
        assert_eq!(mask_url("http://h:80"), "http://h:80");
        assert_eq!(mask_url("garbage"), "****");
    }

    #[test]
    fn accepts_https_refuses_unknown_events_and_credentials() {
        let hook = |url: &str, events: &[&str]| {
            vec![(
                url.to_owned(),
                events.iter().map(|e| e.to_string()).collect(),
            )]
        };
        assert!(Notifier::new(&hook("https://hooks.slack.com/services/T/B/secret", &[])).is_ok());
        let e = Notifier::new(&hook(
            "https://hooks.slack.com/services/T/B/secret",
            &["nope"],
        ))
        .err()
        .unwrap();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(matches!(
            Notifier::new(&hook("http://h/x", &["deploy_exploded"])),
            Err(NotifyError::Event { .. })
        ));
        assert!(Notifier::new(&hook("http://u:p@h/x", &[])).is_err());
        assert!(Notifier::new(&hook("ftp://h/x", &[])).is_err());
        assert!(Notifier::new(&hook("http://h/x", &["rollback"])).is_ok());
    }

    #[test]
    fn payload_and_text() {
        let mut event = NotifyEvent::new(
            EventKind::DeployFailed,
            "backend",
            Some("abc1234".into()),
            "health gate:\n  GET /health timed out",
        );
        event.at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let p = event.payload();
        assert_eq!(p["event"], "deploy_failed");
        assert_eq!(p["component"], "backend");
        assert_eq!(p["release"], "abc1234");
        assert_eq!(
            p["text"],
            "❌ backend abc1234: deploy failed: health gate: GET /health timed out"
        );
        assert_eq!(p["content"], p["text"]);
        assert_eq!(p["at"], "2023-11-14T22:13:20.123Z");
    }
}
