//! The hold's effect (`AwaitGo`, `cutover deploy --hold`): wait for go with the new instance
//! ready beside the old one, saying so once a second. The ticks are also how the daemon notices
//! that the client following the deploy went away (its stream stops taking them), because
//! nobody is left to say go then.

use super::machine::{Event, Failure};
use super::run::Run;
use crate::hold::HoldEnd;
use crate::protocol::EventKind;
use crate::supervisor::Instance;
use std::time::{Duration, Instant};

impl Run<'_> {
    /// Waits at the hold until released; an abort, the hold's timeout, a departed follower or
    /// the new instance dying ends it instead (the machine then stops the new instance).
    pub(super) async fn await_go(&self, instance: Option<&Instance>) -> Event {
        let Some(hold) = self.hold else {
            return Event::Failed(Failure::Step(
                "internal error: a deploy without a hold waited at one".into(),
            ));
        };
        hold.reached();
        let since = Instant::now();
        let timeout = hold.timeout;
        let holding = |at: Instant| EventKind::Holding {
            component: self.name(),
            elapsed_ms: at.duration_since(since).as_millis() as u64,
            timeout_ms: timeout.as_millis() as u64,
        };
        self.emit(holding(since));
        let exited = async {
            match instance {
                Some(instance) => instance.exited().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(exited);
        let mut tick = tokio::time::interval_at(
            (since + Duration::from_secs(1)).into(),
            Duration::from_secs(1),
        );
        loop {
            tokio::select! {
                end = hold.ended() => return match end {
                    HoldEnd::Go { who } => {
                        self.emit(EventKind::Proceeding { component: self.name(), who: who.clone() });
                        Event::Go { who }
                    }
                    HoldEnd::FollowerLeft => Event::Failed(Failure::Step(
                        "the client following the held deploy went away, so nobody can release it"
                            .into(),
                    )),
                },
                who = self.abort.raised_by() => return Event::Abort { who },
                status = &mut exited => return Event::NewExited { status },
                _ = tokio::time::sleep_until((since + timeout).into()) => {
                    return Event::Failed(Failure::Step(format!(
                        "nobody released the hold within {}",
                        humantime::format_duration(Duration::from_secs(timeout.as_secs()))
                    )));
                }
                at = tick.tick() => self.sink.progress(holding(at.into_std())),
            }
        }
    }
}
