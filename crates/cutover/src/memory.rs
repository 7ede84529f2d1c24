//! Giving memory back after load. glibc keeps what connections freed in its arenas and lowers
//! the heap only when the top of it is free: after 256 busy connections the daemon stayed at
//! 150 MiB long after the load (bench/PROFILE.md). Allocations of 64 KiB and more (request and
//! response buffers) are then mapped on their own and returned when freed, and a heap whose
//! free top passes 64 KiB is trimmed; the same load then settles near 40 MiB. An operator's own
//! `GLIBC_TUNABLES` wins.

/// Sets the thresholds once, at daemon start.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        const THRESHOLD: libc::c_int = 64 * 1024;
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
        }
    }
}
