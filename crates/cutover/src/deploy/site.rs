//! The deploy of a static component: unpacked files, one atomic switch, no process.

use super::{DeployError, DeployPlan, Run};
use crate::config::ComponentKind;
use crate::protocol::EventKind;
use crate::site::Site;
use crate::vocab::{Outcome, Phase};
use std::sync::Arc;

impl Run<'_> {
    pub(super) async fn run_static(
        &self,
        plan: &DeployPlan,
    ) -> Result<(Outcome, Option<String>), DeployError> {
        let config = &self.component.config;
        let ComponentKind::Static(site_config) = &config.kind else {
            unreachable!("run_static is only called for static components");
        };
        self.phase(Phase::Starting).await?;
        let site = load_site(self.shared, config, site_config, &plan.release)?;
        let pages = site.file_count();
        self.phase(Phase::Switching).await?;
        let old = self.component.site.switch(Some(Arc::new(site)));
        self.sink.emit(
            self.deploy_id,
            EventKind::Switched {
                component: self.name(),
                from: old.as_ref().map(|o| o.release.to_string()),
                to: format!("{} ({pages} files)", plan.release),
            },
        );
        self.finalize(&plan.release).await
    }
}

/// Builds the servable view of a stored static release.
pub fn load_site(
    shared: &super::Shared,
    config: &crate::config::ComponentConfig,
    site_config: &crate::config::StaticConfig,
    release: &crate::release::ReleaseId,
) -> Result<Site, DeployError> {
    let manifest = shared.releases.manifest(&config.name, release)?;
    if let Some(fallback) = &site_config.spa_fallback {
        if !manifest.contains_key(fallback) {
            return Err(DeployError::Refused(format!(
                "release {release} has no {fallback}, which spa_fallback names"
            )));
        }
    }
    let root = shared.releases.bundle_dir(&config.name, release);
    Site::new(
        config.name.as_str(),
        release.clone(),
        root,
        manifest,
        site_config,
    )
    .map_err(|e| DeployError::Refused(format!("invalid cache glob: {e}")))
}
