//! The threads public connections live on (`[daemon] proxy_threads`): a single-threaded tokio
//! runtime on each, running its own accept loop on every public listener, so a connection is
//! accepted, served and proxied on one thread from start to end, as an nginx worker does.
//!
//! Why not the daemon's multi-threaded runtime: its work-stealing scheduler moves a
//! connection's task between workers, and each move and cross-thread wake-up costs; measured on
//! the proxy's request path it was 20-25% of the daemon's CPU per request (bench/PROFILE.md,
//! section 11). The control plane (deploys, the control socket, supervision) stays on that
//! runtime: none of it is on the request path.
//!
//! All loops of one listener share its socket: the kernel wakes each loop's epoll for a new
//! connection, the first to call `accept` gets it and the others find nothing. Everything a
//! connection shares with the rest of the daemon (routes, limits, the accept gate, shutdown
//! signals) is `Send + Sync` and runtime-agnostic.

use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::Handle;

/// The most `[daemon] proxy_threads` may ask for.
pub const MAX_THREADS: usize = 256;

static HANDLES: OnceLock<Vec<Handle>> = OnceLock::new();

/// Starts the data-plane runtimes, once per process: `threads` of them, or half the CPUs this
/// process may run on (at least one) when `None`. Returns how many run (fewer if the system
/// refused a thread; none means the caller's runtime serves).
///
/// Why half by default: the proxy shares the host with the application it fronts and its
/// databases, and on a 2-core machine one thread carried the load both cores could generate at
/// 20-25% less CPU per request than two (bench/PROFILE.md, section 11): with fewer threads each
/// wake-up finds more work, and no two threads share a connection pool or counter.
pub fn start(threads: Option<usize>) -> usize {
    let count = threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    });
    HANDLES.get_or_init(|| spawn(count.min(MAX_THREADS))).len()
}

/// The data-plane runtimes; empty before [`start`] (then the caller's own runtime serves).
pub fn handles() -> &'static [Handle] {
    HANDLES.get().map_or(&[], Vec::as_slice)
}

thread_local! {
    /// Which data-plane runtime this thread runs (0 on any other thread).
    static INDEX: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The index of the data-plane runtime running on this thread, 0 on other threads: for state
/// kept per thread (the upstream connection pools).
pub fn current_index() -> usize {
    INDEX.with(|i| i.get())
}

fn spawn(count: usize) -> Vec<Handle> {
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::warn!("cannot start proxy thread {index}: {e}");
                break;
            }
        };
        handles.push(runtime.handle().clone());
        let spawned = std::thread::Builder::new()
            .name(format!("cutover-proxy-{index}"))
            // Runs what is spawned on it until the process exits.
            .spawn(move || {
                INDEX.with(|i| i.set(index));
                runtime.block_on(std::future::pending::<()>())
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start proxy thread {index}: {e}");
            handles.pop();
            break;
        }
    }
    handles
}

/// Tasks on the data-plane runtimes that end with their owner: aborted when dropped, so an
/// accept loop never outlives the server that started it.
pub struct Spawned(Vec<tokio::task::JoinHandle<()>>);

impl Spawned {
    /// Runs a future from `make` on every data-plane runtime.
    pub fn on_each<F, Fut>(handles: &[Handle], mut make: F) -> Spawned
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Spawned(handles.iter().map(|handle| handle.spawn(make())).collect())
    }

    /// Waits for all of them to end.
    pub async fn finished(mut self) {
        // Awaited in place: if this wait is dropped, the tasks not yet ended are aborted.
        while let Some(task) = self.0.last_mut() {
            let _ = task.await;
            self.0.pop();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
