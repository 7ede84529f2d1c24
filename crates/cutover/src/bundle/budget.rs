//! What one unpack may still write, against the daemon's bundle limits.

use super::{BundleError, Limits};
use std::path::Path;

/// Counts what an unpack wrote against its [`Limits`].
pub(super) struct Budget<'a> {
    limits: Limits,
    /// The bundle being unpacked, for messages.
    pub(super) source: &'a Path,
    pub(super) bytes: u64,
    entries: u64,
}

impl<'a> Budget<'a> {
    pub(super) fn new(limits: Limits, source: &'a Path) -> Self {
        Budget {
            limits,
            source,
            bytes: 0,
            entries: 0,
        }
    }

    pub(super) fn entry(&mut self) -> Result<(), BundleError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(BundleError::TooLarge {
                bundle: self.source.to_owned(),
                limit: self.limits.max_entries.to_string(),
                what: "entries",
                key: "entries",
            });
        }
        Ok(())
    }

    /// The most bytes the next file may still have.
    pub(super) fn room(&self) -> u64 {
        self.limits.max_bytes.saturating_sub(self.bytes)
    }

    pub(super) fn wrote(&mut self, bytes: u64) -> Result<(), BundleError> {
        self.bytes += bytes;
        if self.bytes > self.limits.max_bytes {
            return Err(BundleError::TooLarge {
                bundle: self.source.to_owned(),
                limit: crate::vocab::human_bytes(self.limits.max_bytes),
                what: "bytes",
                key: "size",
            });
        }
        Ok(())
    }
}
