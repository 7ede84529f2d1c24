//! Why a deploy did not succeed: the machine's reasons, shown to people through `Display`
//! (the deploy's recorded reason, the CLI's last line).

use std::fmt;
use std::time::Duration;

/// Why a deploy did not succeed; shown to people through `Display`.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// A step failed; the message says which and why.
    Step(String),
    /// A phase could not be recorded.
    Record(String),
    NewExited {
        status: String,
        while_draining: bool,
    },
    ProbesFailed {
        count: u32,
        last: String,
    },
    ErrorRate {
        failed: u64,
        requests: u64,
        limit: f64,
    },
    Stalled {
        waiting: usize,
        since: Duration,
    },
    Aborted {
        who: String,
    },
    /// The swap back failed too.
    RollbackImpossible {
        cause: Box<Failure>,
        why: String,
    },
    /// Nothing to go back to (the first release).
    NoPrevious {
        cause: Box<Failure>,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Step(why) => f.write_str(why),
            Failure::Record(why) => write!(f, "cannot record the deploy's progress: {why}"),
            Failure::NewExited {
                status,
                while_draining: true,
            } => write!(f, "the new instance {status} while the old one drained"),
            Failure::NewExited { status, .. } => write!(f, "the new instance {status}"),
            Failure::ProbesFailed { count, last } => {
                write!(f, "{count} health probes failed in a row (last: {last})")
            }
            Failure::ErrorRate {
                failed,
                requests,
                limit,
            } => write!(
                f,
                "error rate {:.1}% ({failed} of {requests} requests failed) is above the {:.1}% limit",
                *failed as f64 * 100.0 / *requests as f64,
                limit * 100.0
            ),
            Failure::Stalled { waiting, since } => write!(
                f,
                "no response for {} while {waiting} request(s) waited for one",
                humantime::format_duration(Duration::from_secs(since.as_secs()))
            ),
            Failure::Aborted { who } => write!(f, "aborted by {who}"),
            Failure::RollbackImpossible { cause, why } => {
                write!(f, "{cause}; rollback impossible: {why}")
            }
            Failure::NoPrevious { cause } => {
                write!(f, "{cause}; there is no previous release to roll back to")
            }
        }
    }
}
