//! The deploy of a hook component (hosted elsewhere): run the trigger, then poll the verify URL
//! until it shows the new release.

use super::{log_excerpt, DeployError, DeployPlan, Run};
use crate::config::HookConfig;
use crate::health;
use crate::protocol::EventKind;
use crate::release::now_millis;
use crate::vocab::{Outcome, Phase};
use std::process::Stdio;
use std::time::Instant;

impl Run<'_> {
    pub(super) async fn run_hook(
        &self,
        plan: &DeployPlan,
        hook: &HookConfig,
    ) -> Result<(Outcome, Option<String>), DeployError> {
        let config = &self.component.config;
        let expand = |text: &str| {
            text.replace("{release}", plan.release.as_str())
                .replace("{component}", config.name.as_str())
        };

        self.phase(Phase::Starting).await?;
        let log_path = self
            .shared
            .releases
            .logs_dir(&config.name, &plan.release)
            .join(format!("hook-{}.log", now_millis()));
        let open_log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| {
                    DeployError::Launch(anyhow::anyhow!("cannot open {}: {e}", log_path.display()))
                })
        };
        let argv: Vec<String> = hook.run.iter().map(|a| expand(a)).collect();
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&hook.workdir)
            .env("CUTOVER_RELEASE", plan.release.as_str())
            .env("CUTOVER_COMPONENT", config.name.as_str())
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DeployError::Launch(anyhow::anyhow!("cannot run `{}`: {e}", argv[0])))?;
        let deadline = Instant::now() + hook.verify.timeout.get();
        let waited = tokio::select! {
            waited = tokio::time::timeout_at(deadline.into(), child.wait()) => waited,
            // `kill_on_drop`: the hook's process goes with `child` when this returns.
            reason = self.abort.raised() => return Err(DeployError::Aborted(reason)),
        };
        let status = match waited {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Err(DeployError::Launch(anyhow::anyhow!(
                    "cannot wait for `{}`: {e}",
                    argv[0]
                )))
            }
            Err(_) => {
                return Err(DeployError::Refused(format!(
                    "hook `{}` did not finish within {}",
                    argv.join(" "),
                    hook.verify.timeout
                )))
            }
        };
        let tail = crate::supervisor::tail_lines(&log_path, 12).unwrap_or_default();
        if !status.success() {
            return Err(DeployError::Refused(format!(
                "hook `{}` failed ({status}){}",
                argv.join(" "),
                log_excerpt(&log_path, &tail)
            )));
        }
        self.sink.emit(
            self.deploy_id,
            EventKind::Healthy {
                component: self.name(),
                after_ms: 0,
            },
        );

        let url = expand(&hook.verify.url);
        // The URL may carry a token (query string, user info): messages show it masked.
        let shown = crate::ops::notify::mask_url(&url);
        let expected = hook.verify.body_contains.as_deref().map(expand);
        let mut attempts = 0u32;
        let last = loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = tokio::select! {
                result = health::fetch_text(&url, remaining.min(std::time::Duration::from_secs(30))) => result,
                reason = self.abort.raised() => return Err(DeployError::Aborted(reason)),
            };
            let (ok, detail) = match &result {
                Ok((status, body)) => {
                    let found = expected
                        .as_deref()
                        .is_none_or(|needle| body.contains(needle));
                    let ok = (200..300).contains(status) && found;
                    let detail = match (&expected, found) {
                        (Some(needle), false) => {
                            format!("HTTP {status}, body does not contain {needle:?} yet")
                        }
                        _ => format!("HTTP {status}"),
                    };
                    (ok, detail)
                }
                Err(e) => (false, e.clone()),
            };
            self.sink.progress(EventKind::Probe {
                component: self.name(),
                ok,
                detail: format!("verify {shown}: {detail}"),
                consecutive: u32::from(ok),
                needed: 1,
            });
            if ok {
                break None;
            }
            let next = Instant::now() + hook.verify.interval.get();
            if next >= deadline {
                break Some(detail);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                reason = self.abort.raised() => return Err(DeployError::Aborted(reason)),
            }
        };
        if let Some(detail) = last {
            return Err(DeployError::Refused(format!(
                "verify of {shown} did not pass within {} ({attempts} attempts; last: {detail})",
                hook.verify.timeout
            )));
        }
        self.phase(Phase::Switching).await?;
        self.sink.emit(
            self.deploy_id,
            EventKind::Switched {
                component: self.name(),
                from: None,
                to: plan.release.to_string(),
            },
        );
        crate::metrics::active(self.component.name(), Some(plan.release.as_str()));
        self.finalize(&plan.release).await
    }
}
