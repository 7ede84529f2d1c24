//! Giving memory back after load. glibc keeps what connections freed in its arenas and lowers
//! the heap only when its top is free: after 256 busy connections the daemon stayed at 150 MiB
//! long after the load (bench/PROFILE.md). Every few seconds `malloc_trim(0)` returns the free
//! pages of every arena to the system. Lowering glibc's mmap threshold instead (every 64 KiB
//! buffer mapped and unmapped on its own) did bound RSS, but cut 64 KiB proxying to a third of
//! its throughput: trimming off the request path costs requests nothing.

use std::time::Duration;

/// How often freed memory is handed back; a trim of an idle heap takes microseconds.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Trims until shutdown (a no-op outside glibc).
pub async fn return_freed_memory(mut shutdown: crate::shutdown::Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRIM_EVERY) => {
                // Off the runtime's threads: a trim of a large heap walks every arena.
                let _ = tokio::task::spawn_blocking(trim).await;
            }
            _ = shutdown.wait() => return,
        }
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands free pages back to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
