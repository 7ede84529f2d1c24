//! The effects of a static deploy: load the unpacked files, one atomic switch, no process.

use super::machine::{Event, Failure};
use super::run::{step_failed, Run};
use super::DeployError;
use crate::config::{ComponentConfig, StaticConfig};
use crate::protocol::EventKind;
use crate::release::ReleaseId;
use crate::site::Site;
use std::sync::Arc;

/// What a static deploy holds between effects: the site it loaded, until the switch.
pub(super) struct StaticSteps<'c> {
    config: &'c StaticConfig,
    loaded: Option<Site>,
}

impl<'c> StaticSteps<'c> {
    pub(super) fn new(config: &'c StaticConfig) -> Self {
        Self {
            config,
            loaded: None,
        }
    }

    pub(super) fn load(&mut self, run: &Run<'_>) -> Event {
        match load_site(run.shared, &run.config, self.config, run.release) {
            Ok(site) => {
                self.loaded = Some(site);
                Event::Started
            }
            Err(e) => step_failed(e),
        }
    }

    pub(super) fn switch(&mut self, run: &Run<'_>) -> Event {
        let Some(site) = self.loaded.take() else {
            return Event::Failed(Failure::Step("internal error: no site loaded".into()));
        };
        let Some(route) = run.component.site() else {
            return Event::Failed(Failure::Step("internal error: not a static site".into()));
        };
        let pages = site.file_count();
        let old = route.switch(Some(Arc::new(site)));
        run.emit(EventKind::Switched {
            component: run.name(),
            from: old.as_ref().map(|o| o.release.to_string()),
            to: format!("{} ({pages} files)", run.release),
        });
        Event::Switched
    }
}

/// Builds the servable view of a stored static release.
pub fn load_site(
    shared: &super::Shared,
    config: &ComponentConfig,
    site_config: &StaticConfig,
    release: &ReleaseId,
) -> Result<Site, DeployError> {
    let manifest = shared.releases.manifest(&config.name, release)?;
    if let Some(fallback) = &site_config.spa_fallback {
        if !manifest.contains_key(fallback) {
            return Err(DeployError::MissingFallback {
                release: release.clone(),
                fallback: fallback.clone(),
            });
        }
    }
    let root = shared.releases.bundle_dir(&config.name, release);
    Ok(Site::new(
        config.name.as_str(),
        release.clone(),
        root,
        manifest,
        site_config,
    )?)
}
