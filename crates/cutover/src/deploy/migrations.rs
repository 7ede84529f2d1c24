//! The migrate step of a process deploy: `up` before the new instance starts (the old release
//! keeps serving meanwhile); a rollback never runs `down`, it only warns when the schema is
//! newer than the release it goes back to.

use super::machine::Event;
use super::run::{step_failed, Run};
use super::{DeployError, DeployPlan};
use crate::config::MigrationsConfig;
use crate::migrate::{self, Migrations};
use crate::protocol::EventKind;

impl Run<'_> {
    /// `apply`: run the migrations (a deploy); else only warn (a rollback).
    pub(super) async fn migrate_step(&self, plan: &DeployPlan, apply: bool) -> Event {
        let Some(migrations) = self.config.process().and_then(|p| p.migrations.as_ref()) else {
            return Event::Migrated;
        };
        if !apply {
            self.warn_if_schema_ahead(plan, migrations).await;
            return Event::Migrated;
        }
        match self.migrate(plan, migrations).await {
            Ok(()) => Event::Migrated,
            Err(e) => step_failed(e),
        }
    }

    fn migrations_of(
        &self,
        plan: &DeployPlan,
        migrations: &MigrationsConfig,
    ) -> Result<(String, Migrations), DeployError> {
        let config = &self.config;
        let service = self
            .shared
            .config
            .service(&migrations.service)
            .ok_or_else(|| DeployError::UnknownService(migrations.service.clone()))?;
        let url = service.url().map_err(|why| DeployError::ServiceUrl {
            service: service.name.to_string(),
            why,
        })?;
        let dir = self
            .shared
            .releases
            .bundle_dir(&config.name, &plan.release)
            .join(&migrations.dir);
        let files = if dir.is_dir() {
            Migrations::scan(&dir).map_err(|e| DeployError::MigrationFiles(Box::new(e)))?
        } else {
            Migrations::empty(&dir)
        };
        Ok((url, files))
    }

    async fn migrate(
        &self,
        plan: &DeployPlan,
        migrations: &MigrationsConfig,
    ) -> Result<(), DeployError> {
        let (url, files) = self.migrations_of(plan, migrations)?;
        let mut options = migrate::Options::new(migrations.lock_timeout.get());
        let sink = self.sink.clone();
        let name = self.name();
        options.progress = Some(std::sync::Arc::new(move |progress: &migrate::Progress| {
            let detail = match progress {
                migrate::Progress::WaitingForLock { holders } => {
                    format!("waiting for the migration lock (held by {holders:?})")
                }
                migrate::Progress::LockAcquired => "migration lock acquired".into(),
                migrate::Progress::Running { version, file, .. } => {
                    format!(
                        "applying {}",
                        file.clone().unwrap_or_else(|| version.to_string())
                    )
                }
                migrate::Progress::Done(step) => format!(
                    "applied version {} in {:.0} ms",
                    step.version, step.duration_ms
                ),
            };
            sink.progress(EventKind::Migrating {
                component: name.clone(),
                detail,
            });
        }));
        let steps = migrate::up(&url, &files, None, &options)
            .await
            .map_err(|e| DeployError::Migration(Box::new(e)))?;
        let applied: Vec<String> = steps.iter().filter_map(|s| s.file.clone()).collect();
        self.emit(EventKind::Migrated {
            component: self.name(),
            applied,
            version: steps.last().and_then(|s| s.now_at).or(files.latest()),
        });
        Ok(())
    }

    /// A rollback never runs `down`; it says so when the schema is newer than the target knows.
    async fn warn_if_schema_ahead(&self, plan: &DeployPlan, migrations: &MigrationsConfig) {
        let Ok((url, files)) = self.migrations_of(plan, migrations) else {
            return;
        };
        let options = migrate::Options::new(migrations.lock_timeout.get());
        if let Ok(status) = migrate::status(&url, &files, &options).await {
            if status.ahead_of_files() {
                self.warn(format!(
                    "the database schema is at version {}, newer than {}'s newest migration ({}); cutover never runs down migrations by itself: make sure {} works with the newer schema, or run `cutover migrate down`",
                    status.version.unwrap_or_default(),
                    plan.release,
                    files.latest().map_or("none".into(), |v| v.to_string()),
                    plan.release
                ));
            }
        }
    }
}
