//! The access log: one JSON object per line per request, written off the request task, and the
//! request id every request carries (`X-Request-Id`).
//!
//! A request task calls [`AccessLog::record`], which puts the [`Entry`] into a bounded queue
//! and returns: it never waits. When the queue is full the line is dropped and counted, and a
//! `{"time":…,"dropped":N}` line says so at the next flush. One writer thread per log drains
//! the queue, formats the JSON, writes through a `BufWriter`, flushes every
//! [`FLUSH_INTERVAL`] (or sooner, when the buffer fills), and rotates by size
//! (`access.log` -> `access.log.1` ... `access.log.<keep>`).
//!
//! Cost on the request task (reasoned, not benchmarked): building the `Entry` (the host and
//! path `String`s are its only allocations; component and release are `Arc<str>` clones, the
//! request id a `HeaderValue` clone) and one `try_send` into an array queue whose slots are
//! allocated at open: a few atomic operations, no lock held across I/O, no syscall. The writer
//! drains in ticks rather than waiting on the queue while lines flow, so a send under load
//! finds no parked receiver and wakes nobody; only the first line after an idle spell wakes the
//! writer (one futex call). JSON, the timestamp and all file I/O happen on the writer thread.
//! A dedicated thread rather than a tokio task because the writes are blocking file I/O.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use serde::Serialize;

/// Lines reach the file at most this long after they were recorded (one writer tick).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Lines waiting for the writer before new ones are dropped: a tick's worth at 80,000
/// requests/s. Slots are allocated at open, an `Entry` each (240 bytes: about 1 MiB a log).
pub const QUEUE_CAPACITY: usize = 4096;
/// The write buffer: a batch larger than this is written (not yet flushed) as it fills.
const BUFFER_BYTES: usize = 64 * 1024;

/// The header carrying a request's id, to the upstream and back in the log.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// An incoming request id longer than this is replaced (ids are logged with every request).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// One request, as the access log records it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the request arrived.
    pub time: SystemTime,
    pub host: String,
    pub method: Method,
    /// The path only: query strings often carry tokens, which have no place in a log.
    pub path: String,
    pub status: StatusCode,
    pub component: Arc<str>,
    /// The release that answered; `None` when none did (no instance serving, cutover's own
    /// answer).
    pub release: Option<Arc<str>>,
    /// From arrival until the response's last byte was sent.
    pub duration: Duration,
    /// Request body bytes read.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// The client as trusted: the peer, or the address a trusted proxy gave for it.
    pub client: IpAddr,
    pub request_id: HeaderValue,
    pub protocol: Version,
    /// `Some("TLSv1.3")` and the like on TLS connections.
    pub tls_version: Option<&'static str>,
}

/// A handle to one access log file; clones share the file and its writer. The writer stops,
/// after writing and flushing what was queued, once the last handle is dropped; `close` also
/// waits for that flush.
#[derive(Clone)]
pub struct AccessLog {
    shared: Arc<Shared>,
}

struct Shared {
    queue: SyncSender<Message>,
    counters: Arc<Counters>,
    path: PathBuf,
}

#[derive(Default)]
struct Counters {
    /// Dropped since the last summary line (the writer takes it to zero).
    unreported: AtomicU64,
    /// Dropped since the log was opened, for metrics.
    total: AtomicU64,
}

// Nearly every message is a line: boxing it would cost an allocation per request to save
// queue slots that are allocated once.
#[allow(clippy::large_enum_variant)]
enum Message {
    Line(Entry),
    /// Flush what came before, then answer.
    Flush(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl AccessLog {
    /// Opens (appending) or creates the log at `path`, mode 0640, with its directory (0750)
    /// if missing, and starts its writer. Past `max_size` bytes the file is rotated; `keep`
    /// rotated files are kept (`keep = 0`: the full file is removed).
    pub fn open(path: &Path, max_size: u64, keep: usize) -> io::Result<AccessLog> {
        let file = RotatingFile::open(path, max_size, keep).map_err(|e| with_path(e, path))?;
        let (log, queue) = AccessLog::unstarted(path, QUEUE_CAPACITY);
        Writer::new(queue, file, Arc::clone(&log.shared.counters)).spawn()?;
        Ok(log)
    }

    /// The handle and the queue's far end, with no writer yet (tests start one later).
    fn unstarted(path: &Path, capacity: usize) -> (AccessLog, Receiver<Message>) {
        let (queue, receiver) = mpsc::sync_channel(capacity);
        let shared = Shared {
            queue,
            counters: Arc::default(),
            path: path.to_owned(),
        };
        let log = AccessLog {
            shared: Arc::new(shared),
        };
        (log, receiver)
    }

    /// Queues one line; never waits. A full queue drops the line and counts it.
    pub fn record(&self, entry: Entry) {
        match self.shared.queue.try_send(Message::Line(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let counters = &self.shared.counters;
                counters.unreported.fetch_add(1, Ordering::Relaxed);
                counters.total.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the queue was full, since the log was opened.
    pub fn dropped(&self) -> u64 {
        self.shared.counters.total.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Waits until every line recorded before this call is written and flushed to the file.
    pub async fn flush(&self) -> io::Result<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let mut message = Message::Flush(done);
        // Not the request path: waiting for room is right here, without blocking the runtime.
        loop {
            match self.shared.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    message = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(writer_gone()),
            }
        }
        answer.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Flushes, then drops this handle (the writer stops when no handle is left).
    pub async fn close(self) -> io::Result<()> {
        self.flush().await
    }
}

fn writer_gone() -> io::Error {
    io::Error::other("the access log writer has stopped")
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("access log {}: {e}", path.display()))
}

/// The drain loop on the writer thread.
struct Writer {
    queue: Receiver<Message>,
    file: RotatingFile,
    counters: Arc<Counters>,
    /// One line's JSON, reused.
    line: Vec<u8>,
    /// Whether the last write failed, so a full disk is reported once, not per line.
    failing: bool,
}

impl Writer {
    fn new(queue: Receiver<Message>, file: RotatingFile, counters: Arc<Counters>) -> Writer {
        Writer {
            queue,
            file,
            counters,
            line: Vec::with_capacity(512),
            failing: false,
        }
    }

    fn spawn(self) -> io::Result<()> {
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || self.run())
            .map(drop)
    }

    /// Idle: blocks on the queue. Busy: sleeps a tick, drains everything queued, flushes, and
    /// again, until a tick brings nothing. Senders therefore find a parked receiver only on
    /// the first line of a burst.
    fn run(mut self) {
        loop {
            let first = match self.queue.recv() {
                Ok(message) => message,
                Err(_) => return self.finish(),
            };
            self.handle(first);
            loop {
                std::thread::sleep(FLUSH_INTERVAL);
                match self.drain() {
                    Drained::Some => continue,
                    Drained::Nothing => break,
                    Drained::Closed => return self.finish(),
                }
            }
        }
    }

    /// Writes every queued message, then flushes. A flush request in the queue is answered in
    /// order, so it covers exactly what was recorded before it.
    fn drain(&mut self) -> Drained {
        let mut drained = Drained::Nothing;
        loop {
            match self.queue.try_recv() {
                Ok(message) => {
                    drained = Drained::Some;
                    self.handle(message);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Drained::Closed,
            }
        }
        let flushed = self.flush();
        self.report(flushed);
        drained
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Line(entry) => {
                let written = self.write(&entry);
                self.report(written);
            }
            Message::Flush(done) => {
                let _ = done.send(self.flush());
            }
        }
    }

    fn write(&mut self, entry: &Entry) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, &Line::of(entry))?;
        self.line.push(b'\n');
        self.file.write_line(&self.line)
    }

    /// The drop summary (if lines were dropped), then the buffer to the file.
    fn flush(&mut self) -> io::Result<()> {
        let dropped = self.counters.unreported.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            self.line.clear();
            let summary = DroppedLine {
                time: Timestamp(SystemTime::now()),
                dropped,
            };
            serde_json::to_writer(&mut self.line, &summary)?;
            self.line.push(b'\n');
            self.file.write_line(&self.line)?;
        }
        self.file.flush()
    }

    fn report(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(log = %self.file.path.display(), error = %e, "cannot write the access log; lines are lost until it works again");
            }
            Err(_) => {}
        }
    }

    fn finish(mut self) {
        let flushed = self.flush();
        self.report(flushed);
    }
}

enum Drained {
    Some,
    Nothing,
    Closed,
}

/// One line of the log, borrowed from its entry.
#[derive(Serialize)]
struct Line<'a> {
    time: Timestamp,
    host: &'a str,
    method: &'a str,
    path: &'a str,
    status: u16,
    component: &'a str,
    release: Option<&'a str>,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
    client: IpAddr,
    request_id: std::borrow::Cow<'a, str>,
    protocol: &'static str,
    tls_version: Option<&'static str>,
}

impl<'a> Line<'a> {
    fn of(entry: &'a Entry) -> Line<'a> {
        Line {
            time: Timestamp(entry.time),
            host: &entry.host,
            method: entry.method.as_str(),
            path: &entry.path,
            status: entry.status.as_u16(),
            component: &entry.component,
            release: entry.release.as_deref(),
            // Microseconds are as fine as a request's duration is meaningful.
            duration_ms: entry.duration.as_micros() as f64 / 1000.0,
            bytes_in: entry.bytes_in,
            bytes_out: entry.bytes_out,
            client: entry.client,
            request_id: String::from_utf8_lossy(entry.request_id.as_bytes()),
            protocol: protocol_text(entry.protocol),
            tls_version: entry.tls_version,
        }
    }
}

#[derive(Serialize)]
struct DroppedLine {
    time: Timestamp,
    dropped: u64,
}

/// RFC 3339 in UTC with milliseconds: `2025-01-31T12:00:00.123Z`.
struct Timestamp(SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

fn protocol_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// The log file with its size, rotated before a line would take it past `max_size`.
struct RotatingFile {
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    max_size: u64,
    keep: usize,
}

impl RotatingFile {
    fn open(path: &Path, max_size: u64, keep: usize) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            file: BufWriter::with_capacity(BUFFER_BYTES, file),
            size,
            max_size,
            keep,
        })
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        // A line longer than max_size still goes in, alone in its file.
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    /// `log.<keep-1>` -> `log.<keep>` ... `log` -> `log.1`, then a new `log`. Files past
    /// `keep` (left by a larger `keep` before) are removed.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let mut extra = self.keep + 1;
        while remove_if_present(&numbered(&self.path, extra))? {
            extra += 1;
        }
        if self.keep == 0 {
            remove_if_present(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                rename_if_present(&numbered(&self.path, n), &numbered(&self.path, n + 1))?;
            }
            // Absent if someone removed it: a new one is opened all the same.
            rename_if_present(&self.path, &numbered(&self.path, 1))?;
        }
        self.file = BufWriter::with_capacity(BUFFER_BYTES, open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The request id to pass upstream and log, and whether it was generated here. An incoming
/// `X-Request-Id` is kept only from a trusted peer (anyone else could plant ids that make
/// their requests look like another's in the logs), only when it is the only one, and only
/// when it is at most [`MAX_REQUEST_ID_LEN`] visible ASCII characters (no spaces or control
/// characters, so it is safe in a log line and a header). Otherwise: 128 random bits in hex.
pub fn request_id(headers: &HeaderMap, trusted: bool) -> (HeaderValue, bool) {
    if trusted {
        let mut incoming = headers.get_all(&REQUEST_ID).iter();
        if let (Some(id), None) = (incoming.next(), incoming.next()) {
            let bytes = id.as_bytes();
            if !bytes.is_empty()
                && bytes.len() <= MAX_REQUEST_ID_LEN
                && bytes.iter().all(u8::is_ascii_graphic)
            {
                return (id.clone(), false);
            }
        }
    }
    (generate_request_id(), true)
}

/// 32 lowercase hex digits of OS randomness.
pub fn generate_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, byte) in random_128().iter().enumerate() {
        text[2 * i] = HEX[usize::from(byte >> 4)];
        text[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

/// Random bytes fetched from the OS 512 at a time per thread, so a request id costs a copy,
/// not a `getrandom` syscall per request.
struct RandomPool {
    bytes: [u8; 512],
    used: usize,
}

thread_local! {
    static RANDOM: RefCell<RandomPool> = const {
        RefCell::new(RandomPool { bytes: [0; 512], used: 512 })
    };
}

fn random_128() -> [u8; 16] {
    RANDOM.with_borrow_mut(|pool| {
        if pool.used + 16 > pool.bytes.len() {
            if let Err(e) = getrandom::getrandom(&mut pool.bytes) {
                // Not seen on Linux (it falls back to /dev/urandom); ids must still differ.
                tracing::warn!(error = %e, "no OS randomness for request ids; using the clock");
                fill_from_clock(&mut pool.bytes);
            }
            pool.used = 0;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&pool.bytes[pool.used..pool.used + 16]);
        pool.used += 16;
        out
    })
}

/// Distinct (not unpredictable) bytes: splitmix64 over the clock and a process-wide counter.
fn fill_from_clock(bytes: &mut [u8]) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut state = nanos ^ (u64::from(std::process::id()) << 32);
    for chunk in bytes.chunks_mut(8) {
        state = state
            .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

#[cfg(test)]
#[path = "access_log_tests.rs"]
mod tests;
