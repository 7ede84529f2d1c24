//! What the operator's side asks of one host, each as one `cutover` command run over ssh:
//! status, upload, the lock, deploy, rollback and abort. The host's daemon does the work as it
//! does for a local `cutover deploy`; its JSON events come back line by line.

use super::host_lock::{HELD_ELSEWHERE, LOCKED};
use super::receive::Received;
use super::ssh::{Ssh, SshError};
use crate::config::FleetConfig;
use crate::protocol::{Event, EventKind, StatusResponse};
use crate::vocab::Outcome;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// How long the lock may take to answer `locked`.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// One host of the fleet, with the transport and the settings every command needs.
pub struct Host<'a> {
    pub name: &'a str,
    pub ssh: &'a Ssh,
    pub fleet: &'a FleetConfig,
}

/// How a deploy or rollback on one host ended, from its event stream.
#[derive(Clone, Debug)]
pub struct PipelineResult {
    pub outcome: Outcome,
    /// Why it did not succeed, as the host said.
    pub reason: Option<String>,
    /// Each component's release before this pipeline (what a rollback goes back to), in the
    /// order the host deployed them.
    pub from: Vec<(String, Option<String>)>,
}

impl Host<'_> {
    /// `cutover --config REMOTE ARGS...`.
    fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            self.fleet.remote_binary.clone(),
            "--config".into(),
            self.fleet.remote_config.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }

    pub async fn status(&self) -> Result<StatusResponse, SshError> {
        let output = self
            .ssh
            .run(self.name, &self.argv(&["status", "--json"]), None)
            .await?;
        serde_json::from_str(&output.stdout).map_err(|e| self.garbled("status", e))
    }

    /// Puts `artifact` (a file) on the host unless it is there already; returns its path there.
    pub async fn upload(&self, artifact: &Path, sha256: &str) -> Result<Received, SshError> {
        let executable = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(artifact).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
        };
        let mut args = vec!["fleet", "receive", "--sha256", sha256];
        if executable {
            args.push("--executable");
        }
        let mut check = args.clone();
        check.push("--check");
        let output = self.ssh.run(self.name, &self.argv(&check), None).await?;
        let present: Received =
            serde_json::from_str(&output.stdout).map_err(|e| self.garbled("fleet receive", e))?;
        if present.present {
            return Ok(present);
        }
        let file = std::fs::File::open(artifact).map_err(|source| SshError::Io {
            host: self.name.to_owned(),
            source,
        })?;
        let output = self
            .ssh
            .run(self.name, &self.argv(&args), Some(file))
            .await?;
        serde_json::from_str(&output.stdout).map_err(|e| self.garbled("fleet receive", e))
    }

    /// Takes the host's fleet lock for `run`; it is held while the returned child lives (its
    /// stdin open), and released when it is dropped or the run ends.
    pub async fn lock(&self, run: &str) -> Result<Child, SshError> {
        let mut child = self
            .ssh
            .spawn_held(self.name, &self.argv(&["fleet", "lock", "--run", run]))?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(LOCK_TIMEOUT, lines.next_line()).await;
        if let Ok(Ok(Some(line))) = &first {
            if line.trim() == LOCKED {
                return Ok(child);
            }
        }
        // No `locked`: the process ended (held elsewhere, ssh failed) or hung.
        let _ = child.start_kill();
        let output = child
            .wait_with_output()
            .await
            .map_err(|source| SshError::Io {
                host: self.name.to_owned(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        Err(match output.status.code() {
            Some(255) => SshError::Unreachable {
                host: self.name.to_owned(),
                stderr,
            },
            Some(HELD_ELSEWHERE) => SshError::Remote {
                host: self.name.to_owned(),
                command: "cutover fleet lock".into(),
                status: "the lock held elsewhere".into(),
                stderr,
            },
            _ => SshError::Remote {
                host: self.name.to_owned(),
                command: "cutover fleet lock".into(),
                status: if first.is_err() {
                    format!("no answer within {LOCK_TIMEOUT:?}")
                } else {
                    format!("{:?}", output.status)
                },
                stderr,
            },
        })
    }

    /// `cutover deploy COMPONENTS --release R --artifact C=PATH... --json`, following it;
    /// with `hold`, each component waits (up to that long) before its switch for a
    /// [`Host::proceed`].
    pub async fn deploy(
        &self,
        components: &[String],
        release: &str,
        artifacts: &BTreeMap<String, String>,
        hold: Option<Duration>,
        who: &str,
        on_event: impl FnMut(&Event),
    ) -> Result<PipelineResult, SshError> {
        let mut args: Vec<String> = vec!["deploy".into()];
        args.extend(components.iter().cloned());
        args.extend(["--release".into(), release.into()]);
        for (component, path) in artifacts {
            args.extend(["--artifact".into(), format!("{component}={path}")]);
        }
        if let Some(hold) = hold {
            args.extend([
                "--hold".into(),
                "--hold-timeout".into(),
                format!("{}s", hold.as_secs().max(1)),
            ]);
        }
        args.extend(["--json".into(), "--who".into(), who.into()]);
        self.pipeline(&args, on_event).await
    }

    /// `cutover rollback COMPONENT [--to R] --json`, following it.
    pub async fn rollback(
        &self,
        component: &str,
        to: Option<&str>,
        who: &str,
        on_event: impl FnMut(&Event),
    ) -> Result<PipelineResult, SshError> {
        let mut args: Vec<String> = vec!["rollback".into(), component.into()];
        if let Some(to) = to {
            args.extend(["--to".into(), to.into()]);
        }
        args.extend(["--json".into(), "--who".into(), who.into()]);
        self.pipeline(&args, on_event).await
    }

    /// `cutover abort COMPONENT`: the deploy in progress there stops safely (before the switch
    /// the new instance goes; after it, traffic swaps back to the warm old instance).
    pub async fn abort(&self, component: &str, who: &str) -> Result<(), SshError> {
        self.steer("abort", component, who).await
    }

    /// `cutover proceed COMPONENT`: the deploy holding there before its switch switches now.
    pub async fn proceed(&self, component: &str, who: &str) -> Result<(), SshError> {
        self.steer("proceed", component, who).await
    }

    /// `cutover VERB COMPONENT --who WHO`: a word to a deploy in progress, no answer but success.
    async fn steer(&self, verb: &str, component: &str, who: &str) -> Result<(), SshError> {
        self.ssh
            .run(
                self.name,
                &self.argv(&[verb, component, "--who", who]),
                None,
            )
            .await
            .map(|_| ())
    }

    /// Runs a pipeline command and folds its events into a result. A pipeline that ran and
    /// failed exits non-zero: its events, not the exit code, say how it ended.
    async fn pipeline(
        &self,
        args: &[String],
        mut on_event: impl FnMut(&Event),
    ) -> Result<PipelineResult, SshError> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut result = PipelineResult {
            outcome: Outcome::Interrupted,
            reason: None,
            from: Vec::new(),
        };
        let mut finished = false;
        let streamed = self
            .ssh
            .stream(self.name, &self.argv(&args), |line| {
                let Ok(event) = serde_json::from_str::<Event>(line) else {
                    return;
                };
                fold(&mut result, &mut finished, &event);
                on_event(&event);
            })
            .await;
        match streamed {
            Ok(()) => Ok(result),
            Err(SshError::Remote { .. }) if finished => Ok(result),
            Err(e) => Err(e),
        }
    }

    fn garbled(&self, what: &str, e: serde_json::Error) -> SshError {
        SshError::Remote {
            host: self.name.to_owned(),
            command: format!("cutover {what}"),
            status: format!("an answer that is not what this cutover expects ({e})"),
            stderr: "is the same cutover version installed on the host?".into(),
        }
    }
}

fn fold(result: &mut PipelineResult, finished: &mut bool, event: &Event) {
    match &event.kind {
        EventKind::DeployStarted {
            component, from, ..
        } if !result.from.iter().any(|(c, _)| c == component) => {
            result.from.push((component.clone(), from.clone()));
        }
        EventKind::DeployFinished {
            outcome, reason, ..
        } if *outcome != Outcome::Succeeded && result.reason.is_none() => {
            result.reason = reason.clone();
        }
        EventKind::PipelineFinished {
            outcome, reason, ..
        } => {
            result.outcome = *outcome;
            if *outcome != Outcome::Succeeded && result.reason.is_none() {
                result.reason = reason.clone();
            }
            *finished = true;
        }
        _ => {}
    }
}
