//! Docker Compose: `docker compose -f FILE up -d SERVICE...`, and nothing else.
//!
//! cutover brings services up; it never takes one down. No code path runs a destructive compose
//! verb (`down`, `stop`, `rm`, `restart`, `kill`): a database restarted by a deploy is exactly the
//! outage this tool exists to prevent. `tests/services.rs` scans this crate's sources so that such
//! a verb cannot be added silently; the argv is built in one place, [`up_argv`].
//!
//! Before `up`, [`up`] checks that the `docker` CLI exists, that a Docker engine answers
//! (`docker info`) and that the compose plugin is installed, so each of those failures gets its
//! own clear error.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::Command;

/// The Docker CLI, found on `PATH`.
const DOCKER: &str = "docker";

/// How long `docker info` and `docker compose version` may take: both are local calls.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why `services up` could not bring services up.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("compose file {} does not exist", .0.display())]
    FileMissing(PathBuf),
    #[error("the docker command is not installed (not found on PATH); install Docker Engine and its compose plugin")]
    DockerMissing,
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("`docker compose` is not available ({detail}); install the Docker Compose plugin (docker-compose-plugin)")]
    ComposeMissing { detail: String },
    #[error("no Docker engine answers (`docker info` failed: {detail}); start Docker (`systemctl start docker`) or check DOCKER_HOST and the permissions of the docker socket")]
    NoEngine { detail: String },
    #[error("`{command}` did not finish within {}", humantime::format_duration(*after))]
    TimedOut { command: String, after: Duration },
    #[error("`{command}` failed ({status}): {detail}")]
    UpFailed {
        command: String,
        status: ExitStatus,
        detail: String,
    },
}

/// The exact argv of bringing `services` up (all services of the file when empty):
/// `docker compose -f FILE up -d SERVICE...`.
pub fn up_argv(file: &Path, services: &[String]) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        DOCKER.into(),
        "compose".into(),
        "-f".into(),
        file.as_os_str().to_owned(),
        "up".into(),
        "-d".into(),
    ];
    argv.extend(services.iter().map(OsString::from));
    argv
}

/// Runs `docker compose -f FILE up -d SERVICE...` and returns when compose has started the
/// containers (not when the services inside are healthy: wait for that with
/// [`super::wait_healthy`] and the service's own check).
pub async fn up(file: &Path, services: &[String]) -> Result<(), ComposeError> {
    ready(file).await?;
    up_checked(file, services).await
}

/// `Ok` when `up` can run: the file exists, the docker CLI is there, an engine answers and the
/// compose plugin is installed.
pub async fn ready(file: &Path) -> Result<(), ComposeError> {
    if !file.is_file() {
        return Err(ComposeError::FileMissing(file.to_path_buf()));
    }
    engine_available().await?;
    compose_available().await
}

/// [`up`] without its checks, for a caller that ran [`ready`] itself.
pub async fn up_checked(file: &Path, services: &[String]) -> Result<(), ComposeError> {
    let argv = up_argv(file, services);
    let command = shown(&argv);
    tracing::info!(%command, "bringing services up");
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| spawn_error(&command, e))?;
    if !output.status.success() {
        return Err(ComposeError::UpFailed {
            command,
            status: output.status,
            detail: tail(&output.stderr),
        });
    }
    Ok(())
}

/// `Ok` when the Docker CLI's compose plugin answers `docker compose version`.
pub async fn compose_available() -> Result<(), ComposeError> {
    let output = probe(&["compose", "version"]).await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ComposeError::ComposeMissing {
            detail: tail(&output.stderr),
        })
    }
}

/// `Ok` when a Docker engine answers `docker info` (the CLI exits non-zero when it cannot reach
/// one, e.g. "Cannot connect to the Docker daemon").
pub async fn engine_available() -> Result<(), ComposeError> {
    let output = probe(&["info", "--format", "{{.ServerVersion}}"]).await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ComposeError::NoEngine {
            detail: tail(&output.stderr),
        })
    }
}

async fn probe(args: &[&str]) -> Result<std::process::Output, ComposeError> {
    let command = format!("{DOCKER} {}", args.join(" "));
    let child = Command::new(DOCKER)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(PROBE_TIMEOUT, child).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(spawn_error(&command, e)),
        Err(_) => Err(ComposeError::TimedOut {
            command,
            after: PROBE_TIMEOUT,
        }),
    }
}

fn spawn_error(command: &str, e: io::Error) -> ComposeError {
    if e.kind() == io::ErrorKind::NotFound {
        ComposeError::DockerMissing
    } else {
        ComposeError::Spawn {
            command: command.to_string(),
            source: e,
        }
    }
}

fn shown(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last few non-empty lines of a command's stderr, joined on one line.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(3);
    let joined = lines[start..].join(" | ");
    if joined.is_empty() {
        "no error output".to_string()
    } else {
        joined
    }
}
