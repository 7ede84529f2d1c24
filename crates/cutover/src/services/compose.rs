//! Docker Compose: which CLI to run, and the only compose command lines cutover runs.
//!
//! cutover brings services up; it never takes one down. No code path runs a destructive compose
//! verb (`down`, `stop`, `rm`, `restart`, `kill`): a database restarted by a deploy is exactly the
//! outage this tool exists to prevent. Every argv is built here, by [`Project`]: `up -d
//! --no-recreate` (never replaces a container), `up -d --force-recreate --no-deps SERVICE` (only
//! for `cutover services recreate`, after confirmation), and the read-only `ps -q`, `config
//! --hash`, `logs`, `version`. `tests/services.rs` scans the sources so that another verb cannot
//! be added silently.
//!
//! Two CLIs exist: the v2 plugin (`docker compose`) and the standalone `docker-compose` (v1 in
//! Debian, or v2 installed as a binary). [`ComposeCli::detect`] prefers the plugin and falls back
//! to the standalone one; `compose.command` in the config overrides both. Both read
//! `DOCKER_HOST` from the environment, which cutover passes on unchanged.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::process::Command;

/// How long a read-only compose call may take (`version`, `ps`, `config`): all are local.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `up` may take: it may pull images first.
const UP_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("compose file {} does not exist", .0.display())]
    FileMissing(PathBuf),
    #[error("no Docker Compose found: tried {tried}; install the compose plugin (Debian/Ubuntu: docker-compose-plugin, or docker-compose), or set `compose.command` in the config")]
    NotFound { tried: String },
    #[error("`compose.command` ({command}) does not run: {detail}")]
    ConfiguredBroken { command: String, detail: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("`{command}` did not finish within {}", humantime::format_duration(*after))]
    TimedOut { command: String, after: Duration },
    #[error("`{command}` failed ({status}): {detail}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        detail: String,
    },
    #[error("`{command}` printed no hash for {service}: {output:?}")]
    NoHash {
        command: String,
        service: String,
        output: String,
    },
}

/// Which compose CLI runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CliForm {
    /// `docker compose`, the Docker CLI plugin.
    Plugin,
    /// `docker-compose`, a binary of its own.
    Standalone,
    /// `compose.command` from the config.
    Configured,
}

/// The compose CLI: a program and the arguments before compose's own (`docker` + `compose`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComposeCli {
    pub form: CliForm,
    program: Vec<OsString>,
}

impl fmt::Display for ComposeCli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shown(&self.program))
    }
}

impl ComposeCli {
    pub fn plugin() -> ComposeCli {
        ComposeCli {
            form: CliForm::Plugin,
            program: vec!["docker".into(), "compose".into()],
        }
    }

    pub fn standalone() -> ComposeCli {
        ComposeCli {
            form: CliForm::Standalone,
            program: vec!["docker-compose".into()],
        }
    }

    pub fn configured(command: &[String]) -> ComposeCli {
        ComposeCli {
            form: CliForm::Configured,
            program: command.iter().map(OsString::from).collect(),
        }
    }

    /// The configured command when given (checked with `version`), else `docker compose` when
    /// the plugin answers `version`, else `docker-compose`. The error names what was tried.
    pub async fn detect(configured: Option<&[String]>) -> Result<ComposeCli, ComposeError> {
        if let Some(command) = configured {
            let cli = ComposeCli::configured(command);
            return match cli.version().await {
                Ok(()) => Ok(cli),
                Err(detail) => Err(ComposeError::ConfiguredBroken {
                    command: cli.to_string(),
                    detail,
                }),
            };
        }
        let mut tried = Vec::new();
        for cli in [ComposeCli::plugin(), ComposeCli::standalone()] {
            match cli.version().await {
                Ok(()) => return Ok(cli),
                Err(detail) => tried.push(format!("`{cli} version` ({detail})")),
            }
        }
        Err(ComposeError::NotFound {
            tried: tried.join(" and "),
        })
    }

    /// `Ok` when `CLI version` exits 0; else why not, in one line.
    async fn version(&self) -> Result<(), String> {
        let argv = self.argv(None, &["version"]);
        match run(&argv, None, QUERY_TIMEOUT).await {
            Ok(output) if output.status.success() => Ok(()),
            Ok(output) => Err(tail(&output.stderr)),
            Err(ComposeError::Spawn { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Err(format!(
                    "{} is not on PATH",
                    self.program[0].to_string_lossy()
                ))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn argv(&self, file: Option<&Path>, args: &[&str]) -> Vec<OsString> {
        let mut argv = self.program.clone();
        if let Some(file) = file {
            argv.push("-f".into());
            argv.push(file.as_os_str().to_owned());
        }
        argv.extend(args.iter().map(OsString::from));
        argv
    }
}

/// One compose file, driven by one CLI. Commands run in the file's directory, as compose
/// resolves `env_file`, `.env` and the project name from there.
#[derive(Clone, Debug)]
pub struct Project {
    pub cli: ComposeCli,
    pub file: PathBuf,
}

impl Project {
    pub fn new(cli: ComposeCli, file: &Path) -> Result<Project, ComposeError> {
        if !file.is_file() {
            return Err(ComposeError::FileMissing(file.to_path_buf()));
        }
        Ok(Project {
            cli,
            file: file.to_path_buf(),
        })
    }

    fn argv(&self, args: &[&str], services: &[String]) -> Vec<OsString> {
        let mut argv = self.cli.argv(Some(&self.file), args);
        argv.extend(services.iter().map(OsString::from));
        argv
    }

    /// `CLI -f FILE up -d --no-recreate SERVICE...`: starts what is missing or stopped, and
    /// never replaces a container whose definition changed (that would restart a database).
    pub fn up_argv(&self, services: &[String]) -> Vec<OsString> {
        self.argv(&["up", "-d", "--no-recreate"], services)
    }

    /// `CLI -f FILE up -d --force-recreate --no-deps SERVICE`: replaces that one container
    /// (its volumes stay), for `cutover services recreate` only.
    pub fn recreate_argv(&self, service: &str) -> Vec<OsString> {
        self.argv(
            &["up", "-d", "--force-recreate", "--no-deps"],
            &[service.to_string()],
        )
    }

    /// `CLI -f FILE logs --no-color --tail=N [-f] SERVICE`.
    pub fn logs_argv(&self, service: &str, lines: usize, follow: bool) -> Vec<OsString> {
        let tail = format!("--tail={lines}");
        let mut args = vec!["logs", "--no-color", tail.as_str()];
        if follow {
            args.push("-f");
        }
        self.argv(&args, &[service.to_string()])
    }

    pub async fn up(&self, services: &[String]) -> Result<(), ComposeError> {
        self.checked(&self.up_argv(services), UP_TIMEOUT)
            .await
            .map(drop)
    }

    pub async fn recreate(&self, service: &str) -> Result<(), ComposeError> {
        self.checked(&self.recreate_argv(service), UP_TIMEOUT)
            .await
            .map(drop)
    }

    /// The id of the service's container (`ps -q SERVICE`), `None` when it has none yet.
    pub async fn container_id(&self, service: &str) -> Result<Option<String>, ComposeError> {
        let output = self
            .checked(
                &self.argv(&["ps", "-q"], &[service.to_string()]),
                QUERY_TIMEOUT,
            )
            .await?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string))
    }

    /// The hash compose gives the service's current definition (`config --hash SERVICE`, both
    /// CLIs print `SERVICE HASH`); compose labels each container with the hash it was created
    /// from, so a difference means the file changed since.
    pub async fn config_hash(&self, service: &str) -> Result<String, ComposeError> {
        let argv = self.argv(&["config", "--hash"], &[service.to_string()]);
        let output = self.checked(&argv, QUERY_TIMEOUT).await?;
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(name, _)| *name == service)
            .map(|(_, hash)| hash.trim().to_string())
            .ok_or_else(|| ComposeError::NoHash {
                command: shown(&argv),
                service: service.to_string(),
                output: text.trim().to_string(),
            })
    }

    async fn checked(&self, argv: &[OsString], timeout: Duration) -> Result<Output, ComposeError> {
        let dir = self.file.parent().filter(|d| !d.as_os_str().is_empty());
        let output = run(argv, dir, timeout).await?;
        if !output.status.success() {
            return Err(ComposeError::Failed {
                command: shown(argv),
                status: output.status,
                detail: tail(&output.stderr),
            });
        }
        Ok(output)
    }
}

async fn run(
    argv: &[OsString],
    dir: Option<&Path>,
    timeout: Duration,
) -> Result<Output, ComposeError> {
    let command = shown(argv);
    tracing::debug!(%command, "running");
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).kill_on_drop(true);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(source)) => Err(ComposeError::Spawn { command, source }),
        Err(_) => Err(ComposeError::TimedOut {
            command,
            after: timeout,
        }),
    }
}

/// An argv as a person would type it.
pub fn shown(argv: &[OsString]) -> String {
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
