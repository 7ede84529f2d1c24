use super::*;
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

fn entry(n: usize) -> Entry {
    Entry {
        time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_738_324_800_123),
        host: "api.example.com".to_owned(),
        method: Method::POST,
        path: format!("/orders/{n}"),
        status: StatusCode::CREATED,
        component: Arc::from("backend"),
        release: Some(Arc::from("r-20250131-1")),
        duration: Duration::from_micros(12_345),
        bytes_in: 321,
        bytes_out: 4_567,
        client: "203.0.113.7".parse().unwrap(),
        request_id: HeaderValue::from_str(&format!("req-{n}")).unwrap(),
        protocol: Version::HTTP_2,
        tls_version: Some("TLSv1.3"),
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[tokio::test]
async fn lines_are_json_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/backend/access.log");
    let log = AccessLog::open(&path, 1 << 20, 3).unwrap();
    log.record(entry(1));
    let mut plain = entry(2);
    plain.release = None;
    plain.tls_version = None;
    plain.protocol = Version::HTTP_11;
    plain.method = Method::GET;
    plain.status = StatusCode::NOT_FOUND;
    plain.host = "evil\"\nhost".to_owned();
    log.record(plain);
    log.close().await.unwrap();

    let got = lines(&path);
    assert_eq!(
        got.len(),
        2,
        "one line per request (an escaped newline stays inside)"
    );
    assert_eq!(
        got[0],
        serde_json::json!({
            "time": "2025-01-31T12:00:00.123Z",
            "host": "api.example.com",
            "method": "POST",
            "path": "/orders/1",
            "status": 201,
            "component": "backend",
            "release": "r-20250131-1",
            "duration_ms": 12.345,
            "bytes_in": 321,
            "bytes_out": 4567,
            "client": "203.0.113.7",
            "request_id": "req-1",
            "protocol": "HTTP/2",
            "tls_version": "TLSv1.3",
        })
    );
    let second = got[1].as_object().unwrap();
    assert_eq!(second.len(), 14, "absent values are null, not missing");
    assert_eq!(second["release"], serde_json::Value::Null);
    assert_eq!(second["tls_version"], serde_json::Value::Null);
    assert_eq!(second["protocol"], "HTTP/1.1");
    assert_eq!(second["host"], "evil\"\nhost");

    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path) & !0o640, 0, "at most 0640: {:o}", mode(&path));
    assert_eq!(mode(path.parent().unwrap()) & !0o750, 0);
}

#[tokio::test]
async fn reopening_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    for n in 0..2 {
        let log = AccessLog::open(&path, 1 << 20, 1).unwrap();
        log.record(entry(n));
        log.close().await.unwrap();
    }
    assert_eq!(lines(&path).len(), 2);
}

#[tokio::test]
async fn rotation_keeps_n_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let line_len = {
        let mut one = serde_json::to_vec(&Line::of(&entry(10))).unwrap();
        one.push(b'\n');
        one.len() as u64
    };
    // Three lines per file.
    let log = AccessLog::open(&path, line_len * 3, 2).unwrap();
    for n in 10..30 {
        log.record(entry(n));
    }
    log.close().await.unwrap();

    let ids = |p: &Path| -> Vec<String> {
        lines(p)
            .iter()
            .map(|l| l["request_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&path), ["req-28", "req-29"]);
    assert_eq!(ids(&numbered(&path, 1)), ["req-25", "req-26", "req-27"]);
    assert_eq!(ids(&numbered(&path, 2)), ["req-22", "req-23", "req-24"]);
    assert!(!numbered(&path, 3).exists());
    for p in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
        assert!(fs::metadata(&p).unwrap().len() <= line_len * 3);
    }

    // Fewer files kept than before: the extra ones go at the next rotation.
    let log = AccessLog::open(&path, line_len * 3, 0).unwrap();
    log.record(entry(30));
    log.record(entry(31));
    log.close().await.unwrap();
    assert_eq!(ids(&path), ["req-31"]);
    assert!(!numbered(&path, 1).exists() && !numbered(&path, 2).exists());
}

#[tokio::test]
async fn a_full_queue_drops_without_waiting_and_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    // No writer yet: the queue fills and stays full.
    let (log, queue) = AccessLog::unstarted(&path, 8);
    let started = Instant::now();
    for n in 0..20 {
        log.record(entry(n));
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "record never waits: {:?}",
        started.elapsed()
    );
    assert_eq!(log.dropped(), 12);

    let file = RotatingFile::open(&path, 1 << 20, 1).unwrap();
    Writer::new(queue, file, Arc::clone(&log.shared.counters))
        .spawn()
        .unwrap();
    // The flush waits for room in the queue, and writes the drop summary.
    log.flush().await.unwrap();
    log.record(entry(20));
    log.close().await.unwrap();

    let got = lines(&path);
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|l| l["request_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["req-0", "req-1", "req-2", "req-3", "req-4", "req-5", "req-6", "req-7", "req-20"]
    );
    let summaries: Vec<&serde_json::Value> =
        got.iter().filter(|l| l.get("dropped").is_some()).collect();
    assert_eq!(summaries.len(), 1, "{got:?}");
    assert_eq!(summaries[0]["dropped"], 12);
    assert!(summaries[0]["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn lines_reach_the_file_within_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open(&path, 1 << 20, 1).unwrap();
    for round in 0..3 {
        // The first round finds the writer idle, the others in its ticking loop.
        let started = Instant::now();
        log.record(entry(round));
        while lines(&path).len() <= round {
            assert!(
                started.elapsed() < FLUSH_INTERVAL * 10,
                "line {round} not flushed after {:?}",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let waited = started.elapsed();
        // The bound is a tick; a loaded test machine gets some slack.
        assert!(
            waited < FLUSH_INTERVAL + Duration::from_millis(250),
            "round {round}: {waited:?}"
        );
    }
    drop(log);
}

#[test]
fn dropping_the_last_handle_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open(&path, 1 << 20, 1).unwrap();
    let other = log.clone();
    log.record(entry(1));
    drop(log);
    other.record(entry(2));
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines(&path).len() < 2 {
        assert!(Instant::now() < deadline, "not flushed after the last drop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn request_ids_are_kept_only_from_trusted_peers_and_only_when_sane() {
    let with = |values: &[&[u8]]| {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(REQUEST_ID, HeaderValue::from_bytes(v).unwrap());
        }
        headers
    };
    let kept = with(&[b"abc-123_X.Y:z"]);
    assert_eq!(
        request_id(&kept, true),
        (HeaderValue::from_static("abc-123_X.Y:z"), false)
    );
    assert!(request_id(&kept, false).1, "untrusted: replaced");

    let too_long = vec![b'a'; MAX_REQUEST_ID_LEN + 1];
    let at_limit = vec![b'a'; MAX_REQUEST_ID_LEN];
    assert!(!request_id(&with(&[&at_limit]), true).1);
    for bad in [
        with(&[&too_long]),
        with(&[b"has space"]),
        with(&[b"tab\there"]),
        with(&[b"caf\xc3\xa9"]),
        with(&[b""]),
        with(&[b"one", b"two"]),
        HeaderMap::new(),
    ] {
        let (id, generated) = request_id(&bad, true);
        assert!(generated, "{bad:?} kept as {id:?}");
    }
}

#[test]
fn generated_ids_are_128_random_bits_in_hex() {
    let ids: HashSet<String> = (0..2000)
        .map(|_| generate_request_id().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2000, "all distinct, across pool refills");
    for id in &ids {
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
    let mut fallback = [0u8; 64];
    fill_from_clock(&mut fallback);
    let mut again = [0u8; 64];
    fill_from_clock(&mut again);
    assert_ne!(fallback, again);
}
