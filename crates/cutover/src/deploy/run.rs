//! One deploy in progress: what every step of it reaches (the daemon's shared parts, the
//! component, the event sink, the abort signal) and how steps report.

use super::machine::{Event, Failure};
use super::{DeployError, EventSink, Shared};
use crate::abort::AbortSignal;
use crate::component::ComponentRuntime;
use crate::protocol::EventKind;
use crate::release::ReleaseId;
use std::sync::Arc;

/// One deploy in progress.
pub(super) struct Run<'a> {
    pub shared: &'a Shared,
    pub component: &'a Arc<ComponentRuntime>,
    /// The component's settings as this deploy started: a reload meanwhile changes the next.
    pub config: Arc<crate::config::ComponentConfig>,
    pub deploy_id: i64,
    pub release: &'a ReleaseId,
    pub sink: &'a EventSink,
    pub abort: &'a AbortSignal,
    /// Set when the deploy holds before its switch.
    pub hold: Option<&'a crate::hold::SwitchHold>,
}

impl Run<'_> {
    pub(super) fn name(&self) -> String {
        self.component.name().to_owned()
    }

    pub(super) fn emit(&self, kind: EventKind) {
        self.sink.emit(self.deploy_id, kind);
    }

    pub(super) fn warn(&self, message: String) {
        self.emit(EventKind::Warning {
            component: Some(self.name()),
            message,
        });
    }

    pub(super) fn drained(&self, release: &ReleaseId, remaining: usize) {
        self.emit(EventKind::Drained {
            component: self.name(),
            release: release.to_string(),
            remaining,
        });
    }
}

/// How a hook run ended when it did not pass.
pub(super) enum HookEnd {
    Aborted(String),
    Failed(DeployError),
}

pub(super) fn step_failed(e: DeployError) -> Event {
    Event::Failed(Failure::Step(e.to_string()))
}
