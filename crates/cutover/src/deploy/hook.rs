//! The start effect of a hook component (hosted elsewhere): run the trigger, then poll the
//! verify URL until it shows the new release. The switch is only an event: the traffic moves
//! wherever the hook's host moves it.

use super::run::{HookEnd, Run};
use super::DeployError;
use crate::config::HookConfig;
use crate::health;
use crate::protocol::EventKind;
use crate::release::now_millis;
use std::process::Stdio;
use std::time::{Duration, Instant};

impl Run<'_> {
    pub(super) async fn run_hook(&self, hook: &HookConfig) -> Result<(), HookEnd> {
        let config = &self.config;
        let expand = |text: &str| {
            text.replace("{release}", self.release.as_str())
                .replace("{component}", config.name.as_str())
        };
        let failed = |e: DeployError| HookEnd::Failed(e);
        let log_path = self
            .shared
            .releases
            .logs_dir(&config.name, self.release)
            .join(format!("hook-{}.log", now_millis()));
        let open_log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| {
                    failed(DeployError::HookIo(format!(
                        "cannot open {}: {e}",
                        log_path.display()
                    )))
                })
        };
        let argv: Vec<String> = hook.run.iter().map(|a| expand(a)).collect();
        let command = argv.join(" ");
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&hook.workdir)
            .env("CUTOVER_RELEASE", self.release.as_str())
            .env("CUTOVER_COMPONENT", config.name.as_str())
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                failed(DeployError::HookIo(format!(
                    "cannot run `{}`: {e}",
                    argv[0]
                )))
            })?;
        let deadline = Instant::now() + hook.verify.timeout.get();
        let waited = tokio::select! {
            waited = tokio::time::timeout_at(deadline.into(), child.wait()) => waited,
            // `kill_on_drop`: the hook's process goes with `child` when this returns.
            who = self.abort.raised_by() => return Err(HookEnd::Aborted(who)),
        };
        let status = match waited {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Err(failed(DeployError::HookIo(format!(
                    "cannot wait for `{}`: {e}",
                    argv[0]
                ))))
            }
            Err(_) => {
                return Err(failed(DeployError::HookTimedOut {
                    command,
                    timeout: hook.verify.timeout.to_string(),
                }))
            }
        };
        if !status.success() {
            let tail = crate::supervisor::tail_lines(&log_path, 12).unwrap_or_default();
            return Err(failed(DeployError::HookFailed {
                command,
                status,
                log: log_path.clone(),
                tail,
            }));
        }
        self.emit(EventKind::Healthy {
            component: self.name(),
            after_ms: 0,
        });
        self.verify(hook, &expand(&hook.verify.url), deadline, &expand)
            .await
    }

    /// Polls the verify URL until it answers 2xx (with `body_contains`, when set) or the
    /// deadline passes.
    async fn verify(
        &self,
        hook: &HookConfig,
        url: &str,
        deadline: Instant,
        expand: &impl Fn(&str) -> String,
    ) -> Result<(), HookEnd> {
        // The URL may carry a token (query string, user info): messages show it masked.
        let shown = crate::notify::mask_url(url);
        let expected = hook.verify.body_contains.as_deref().map(expand);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = tokio::select! {
                result = health::fetch_text(url, remaining.min(Duration::from_secs(30))) => result,
                who = self.abort.raised_by() => return Err(HookEnd::Aborted(who)),
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
                return Ok(());
            }
            let next = Instant::now() + hook.verify.interval.get();
            if next >= deadline {
                return Err(HookEnd::Failed(DeployError::VerifyFailed {
                    url: shown,
                    timeout: hook.verify.timeout.to_string(),
                    attempts,
                    last: detail,
                }));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                who = self.abort.raised_by() => return Err(HookEnd::Aborted(who)),
            }
        }
    }
}
