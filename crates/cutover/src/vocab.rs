//! Words every layer shares, at the bottom of the crate: it imports nothing else of it.

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock, as Unix milliseconds: what the state database and the protocol record.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A byte count for people ("40.3 MiB").
pub fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize(bytes).to_string_as(true)
}
