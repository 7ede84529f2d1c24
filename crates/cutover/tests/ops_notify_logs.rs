//! Webhook failures are logged with the URL masked (issue 5). In a test binary of its own:
//! a thread-scoped tracing subscriber misses events when other tests register the same
//! callsites concurrently.

use cutover::notify::{EventKind, Notifier, NotifyEvent, RetryPolicy};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A loopback port with nothing listening (connections are refused).
async fn refusing() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// Failures are logged with the URL masked: no token from the path or query in the logs.
#[tokio::test]
async fn logs_mask_the_url() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let refused = refusing().await;
    let url = format!("http://{refused}/services/T0/B0/pathsecret?token=querysecret");
    let policy = RetryPolicy {
        attempts: 3,
        timeout: Duration::from_millis(300),
        backoff: Duration::from_millis(50),
    };
    let notifier = Notifier::with_policy(&[(url, vec![])], policy).unwrap();
    notifier.notify(NotifyEvent::new(EventKind::DeployFailed, "a", None, "x"));
    assert!(notifier.flush(Duration::from_secs(5)).await);
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("giving up"), "{logs}");
    assert!(
        logs.contains(&format!("http://{refused}/services/****?****")),
        "{logs}"
    );
    assert!(
        !logs.contains("pathsecret") && !logs.contains("querysecret"),
        "{logs}"
    );
}
