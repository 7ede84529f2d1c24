//! Webhooks: a receiver on loopback sees the event JSON; a dead webhook (one that never
//! answers, one that refuses connections) never slows `notify()`, and retries are bounded
//! (issue 5).

use bytes::Bytes;
use cutover::notify::{EventKind, Notifier, NotifyEvent, RetryPolicy};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A webhook receiver: answers each request with the next status of `statuses` (then 200) and
/// sends (path and query, JSON body) to the channel.
async fn receiver(
    statuses: Vec<u16>,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<(String, serde_json::Value)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let statuses = Arc::new(Mutex::new(statuses.into_iter()));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let statuses = statuses.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    let status = statuses.lock().unwrap().next().unwrap_or(200);
                    async move {
                        let target = req.uri().to_string();
                        assert_eq!(req.method(), hyper::Method::POST);
                        assert_eq!(req.headers()["content-type"], "application/json");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let _ = tx.send((target, json));
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(StatusCode::from_u16(status).unwrap())
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// Accepts connections and never answers; counts them.
async fn black_hole() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (addr, accepted)
}

/// A loopback port with nothing listening (connections are refused).
async fn refusing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

fn hooks(list: &[(String, &[&str])]) -> Vec<(String, Vec<String>)> {
    list.iter()
        .map(|(url, events)| (url.clone(), events.iter().map(|e| e.to_string()).collect()))
        .collect()
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        timeout: Duration::from_millis(300),
        backoff: Duration::from_millis(50),
    }
}

async fn recv(
    rx: &mut mpsc::UnboundedReceiver<(String, serde_json::Value)>,
) -> (String, serde_json::Value) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("webhook received within 10 s")
        .unwrap()
}

#[tokio::test]
async fn receiver_sees_the_event_json() {
    let (addr, mut rx) = receiver(vec![]).await;
    let notifier =
        Notifier::new(&hooks(&[(format!("http://{addr}/hook?token=s3cret"), &[])])).unwrap();
    notifier.notify(NotifyEvent::new(
        EventKind::DeployFailed,
        "backend",
        Some("abc1234".into()),
        "health gate: GET /health returned 503",
    ));
    let (target, json) = recv(&mut rx).await;
    assert_eq!(target, "/hook?token=s3cret");
    assert_eq!(json["event"], "deploy_failed");
    assert_eq!(json["component"], "backend");
    assert_eq!(json["release"], "abc1234");
    assert_eq!(json["message"], "health gate: GET /health returned 503");
    let text = json["text"].as_str().unwrap();
    assert!(
        text.contains("backend") && text.contains("abc1234") && text.contains("deploy failed"),
        "{text}"
    );
    assert_eq!(json["content"], json["text"]);
    let at = json["at"].as_str().unwrap();
    humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}"));
    assert!(notifier.flush(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn only_the_events_asked_for() {
    let (addr, mut rx) = receiver(vec![]).await;
    let notifier = Notifier::new(&hooks(&[(
        format!("http://{addr}/x"),
        &["deploy_failed", "rollback"],
    )]))
    .unwrap();
    for kind in EventKind::ALL {
        notifier.notify(NotifyEvent::new(kind, "backend", None, ""));
    }
    assert!(notifier.flush(Duration::from_secs(5)).await);
    let mut seen = Vec::new();
    while let Ok((_, json)) = rx.try_recv() {
        seen.push(json["event"].as_str().unwrap().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["deploy_failed", "rollback"]);
}

#[tokio::test]
async fn server_errors_are_retried_client_errors_are_not() {
    let (addr, mut rx) = receiver(vec![500, 503]).await;
    let notifier =
        Notifier::with_policy(&hooks(&[(format!("http://{addr}/"), &[])]), fast()).unwrap();
    notifier.notify(NotifyEvent::new(EventKind::Rollback, "web", None, "5xx"));
    assert!(notifier.flush(Duration::from_secs(5)).await);
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 3, "500, 503, then 200");

    let (addr, mut rx) = receiver(vec![404, 404, 404]).await;
    let notifier =
        Notifier::with_policy(&hooks(&[(format!("http://{addr}/"), &[])]), fast()).unwrap();
    notifier.notify(NotifyEvent::new(EventKind::Rollback, "web", None, "4xx"));
    assert!(notifier.flush(Duration::from_secs(5)).await);
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 1, "a 404 is final");
}

/// A webhook that accepts and never answers, and one that refuses: `notify()` returns at once,
/// each gets exactly `attempts` tries, and a live webhook beside them is not delayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_webhooks_do_not_slow_notify_and_retries_are_bounded() {
    let (hole, accepted) = black_hole().await;
    let refused = refusing().await;
    let (live, mut rx) = receiver(vec![]).await;
    let notifier = Notifier::with_policy(
        &hooks(&[
            (format!("http://{hole}/hang"), &[]),
            (format!("http://{refused}/refuse"), &[]),
            (format!("http://{live}/live"), &[]),
        ]),
        fast(),
    )
    .unwrap();

    let start = Instant::now();
    notifier.notify(NotifyEvent::new(EventKind::DeployStarted, "a", None, ""));
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_millis(50),
        "notify took {elapsed:?}"
    );

    let (target, _) = recv(&mut rx).await;
    assert_eq!(target, "/live");
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "the live webhook waited for the dead ones: {:?}",
        start.elapsed()
    );

    // 3 attempts x 300 ms + 50 + 100 ms of backoff; bounded well below 5 s.
    assert!(
        notifier.flush(Duration::from_secs(5)).await,
        "retries never ended"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "exactly 3 attempts");
    let total = start.elapsed();
    assert!(
        total >= Duration::from_millis(900) && total < Duration::from_secs(3),
        "{total:?}"
    );
}

/// With the production policy (5 s per attempt, 3 attempts) notify() still returns at once.
#[tokio::test]
async fn default_policy_does_not_block_either() {
    let (hole, accepted) = black_hole().await;
    let notifier = Notifier::new(&hooks(&[(format!("http://{hole}/"), &[])])).unwrap();
    let start = Instant::now();
    for _ in 0..10 {
        notifier.notify(NotifyEvent::new(EventKind::DeployFailed, "a", None, "x"));
    }
    assert!(
        start.elapsed() < Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );
    // The deliveries are running (connected and waiting), not done.
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.load(Ordering::SeqCst) < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
    assert!(!notifier.flush(Duration::from_millis(100)).await);
}

/// Outside a tokio runtime, notify() delivers from a thread of its own.
#[test]
fn works_outside_a_runtime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (addr, mut rx) = rt.block_on(receiver(vec![]));
    let notifier = Notifier::new(&hooks(&[(format!("http://{addr}/"), &[])])).unwrap();
    let start = Instant::now();
    notifier.notify(NotifyEvent::new(EventKind::Interrupted, "a", None, "crash"));
    assert!(start.elapsed() < Duration::from_millis(50));
    let (_, json) = rt.block_on(recv(&mut rx));
    assert_eq!(json["event"], "interrupted");
}
