//! What the running daemon holds, shared by the control API, the status views and start-up:
//! the deploy context, the components and the uploads in flight.

use crate::component::ComponentRuntime;
use crate::deploy::Shared;
use std::sync::Arc;

/// Everything the control API needs.
pub struct DaemonState {
    pub shared: Arc<Shared>,
    pub components: Vec<Arc<ComponentRuntime>>,
    pub started_at: i64,
    /// Artifacts received over the control socket, removed when their pipeline ends.
    pub uploads: crate::upload::Uploads,
}

impl DaemonState {
    pub fn component(&self, name: &str) -> Option<&Arc<ComponentRuntime>> {
        self.components.iter().find(|c| c.name() == name)
    }
}

/// One line for systemd's STATUS=: what each component serves.
pub fn status_line(state: &DaemonState) -> String {
    let parts: Vec<String> = state
        .components
        .iter()
        .map(|c| {
            let serving = c.serving_release(&state.shared.store);
            format!(
                "{}={}",
                c.name(),
                serving.map_or("-".into(), |r| r.to_string())
            )
        })
        .collect();
    format!("serving {}", parts.join(" "))
}
