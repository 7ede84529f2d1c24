//! Operator commands: `init`, `generate`, `changed`, `env check`, `validate`, `logs`.

use super::client::Client;
use super::output::print;
use super::workflow::{github_workflow, refuse_gaps, WorkflowFlags};
use super::{Exit, UsageError};
use crate::checks;
use crate::config::{ComponentKind, Config};
use crate::ops::{changes, systemd};
use crate::protocol::StatusResponse;
use crate::store::Store;
use anyhow::{bail, Context};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the README installs the config on the server; the units and the workflow point there
/// unless `generate --server-config` says otherwise.
pub const SERVER_CONFIG: &str = "/etc/cutover/cutover.toml";

/// The config `cutover init` writes and `cutover generate config` prints.
pub const TEMPLATE_CONFIG: &str = include_str!("templates/cutover.toml");
const TEMPLATE_ENV: &str = include_str!("templates/env.production.example");

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Generated {
    /// cutover.service (hardened, Type=notify)
    Systemd,
    /// one cutover-<component>.socket per component
    Socket,
    /// .github/workflows/deploy.yml
    GithubWorkflow,
    /// a documented cutover.toml
    Config,
}

/// The config to generate from: the user's, or the template when there is none yet.
pub fn config_or_template(flag: Option<&Path>) -> anyhow::Result<(Config, bool)> {
    let path = Config::locate(flag);
    if path.exists() {
        return Ok((Config::load(&path)?, false));
    }
    let template = Config::parse(Path::new(SERVER_CONFIG), TEMPLATE_CONFIG)?;
    Ok((template, true))
}

/// The units, pointing at the config where it lives on the server (`server_config`), not where
/// this command read it: `generate` and `init` run in the repository.
fn unit_files(config: &Config, server_config: &Path) -> anyhow::Result<Vec<systemd::UnitFile>> {
    let mut sockets: Vec<(String, String)> = config
        .components
        .iter()
        .filter_map(|c| c.listen.map(|l| (c.name.to_string(), l.to_string())))
        .collect();
    // The shared [edge] listeners too: systemd binds 80 and 443 for the unprivileged daemon.
    for (name, addr) in [
        (crate::frontends::SHARED_HTTP, config.front.http),
        (crate::frontends::SHARED_HTTPS, config.front.https),
    ] {
        if let Some(addr) = addr {
            sockets.push((name.to_owned(), addr.to_string()));
        }
    }
    let slowest_stop: Duration = config
        .components
        .iter()
        .filter_map(|c| c.process().map(|p| p.stop_timeout.get()))
        .sum();
    let drain = config
        .components
        .iter()
        .map(|c| c.drain_timeout.get())
        .max()
        .unwrap_or_default();
    let options = systemd::UnitOptions {
        binary: config.systemd.binary.clone(),
        config: server_config.to_owned(),
        user: config.systemd.user.clone(),
        group: config.systemd.group.clone(),
        data_dir: config.daemon.data_dir.clone(),
        read_write_paths: config.systemd.read_write_paths.clone(),
        allow_jit: config.systemd.allow_jit,
        // Drain (capped at 30 s by the daemon), then each instance's stop, with a margin.
        stop_timeout: drain.min(Duration::from_secs(30)) + slowest_stop + Duration::from_secs(15),
        ..systemd::UnitOptions::default()
    };
    Ok(systemd::units(&options, &sockets)?)
}

pub fn generate(
    flag: Option<&Path>,
    what: Generated,
    server_config: &Path,
    flags: &WorkflowFlags,
) -> anyhow::Result<Exit> {
    let workflow = matches!(what, Generated::GithubWorkflow);
    if flags.given() && !workflow {
        bail!(UsageError(
            "--fleet and --install-cutover are options of `generate github-workflow`".into()
        ));
    }
    if let Generated::Config = what {
        print!("{TEMPLATE_CONFIG}");
        return Ok(Exit::Ok);
    }
    let (config, _) = config_or_template(flag)?;
    if workflow && refuse_gaps(&config) {
        return Ok(Exit::Usage);
    }
    let text = match what {
        Generated::Systemd => unit_files(&config, server_config)?.remove(0).contents,
        Generated::Socket => unit_files(&config, server_config)?
            .into_iter()
            .skip(1)
            .map(|unit| format!("# {}\n{}", unit.name, unit.contents))
            .collect::<Vec<_>>()
            .join("\n"),
        Generated::GithubWorkflow => {
            github_workflow(&config, &Config::locate(flag), server_config, flags)?
        }
        Generated::Config => unreachable!("handled above"),
    };
    print!("{text}");
    Ok(Exit::Ok)
}

/// Scaffolds a project; never overwrites a file unless `force`.
pub fn init(dir: &Path, force: bool) -> anyhow::Result<Exit> {
    let template = Config::parse(&dir.join("cutover.toml"), TEMPLATE_CONFIG)?;
    if refuse_gaps(&template) {
        return Ok(Exit::Usage);
    }
    let server = Path::new(SERVER_CONFIG);
    let mut files: Vec<(PathBuf, String, u32)> = vec![
        (dir.join("cutover.toml"), TEMPLATE_CONFIG.to_owned(), 0o644),
        (
            dir.join(".env.production.example"),
            TEMPLATE_ENV.to_owned(),
            0o644,
        ),
        (
            dir.join(".github/workflows/deploy.yml"),
            github_workflow(
                &template,
                &dir.join("cutover.toml"),
                server,
                &WorkflowFlags::default(),
            )?,
            0o644,
        ),
    ];
    for unit in unit_files(&template, server)? {
        files.push((
            dir.join("deploy/systemd").join(&unit.name),
            unit.contents,
            0o644,
        ));
    }
    let existing: Vec<String> = files
        .iter()
        .filter(|(p, _, _)| p.exists())
        .map(|(p, _, _)| p.display().to_string())
        .collect();
    if !existing.is_empty() && !force {
        bail!(
            "these files exist and were left alone (use --force to overwrite): {}",
            existing.join(", ")
        );
    }
    for (path, contents, mode) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
        println!("wrote {}", path.display());
    }
    println!("\nnext: edit cutover.toml, copy .env.production.example to .env.production (chmod 600),\nthen see README \"Run it on a server\".");
    Ok(Exit::Ok)
}

pub fn changed(config: &Config, base: &str, head: &str, json: bool) -> anyhow::Result<Exit> {
    let repo = config.path.parent().unwrap_or(Path::new("."));
    let components: Vec<(String, Vec<String>)> = config
        .components
        .iter()
        .map(|c| (c.name.to_string(), c.paths.clone()))
        .collect();
    let result = changes::changed(repo, base, head, &components)?;
    print(json, &result, |r| match r {
        changes::Changed::All { reason, components } => {
            let names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
            format!("all: {}\n{reason}\n", names.join(" "))
        }
        changes::Changed::Components {
            components,
            unmatched,
            ..
        } => {
            let mut out = String::new();
            for c in components {
                out.push_str(&format!(
                    "{}\t{} file(s): {}\n",
                    c.name,
                    c.files.len(),
                    c.files.join(", ")
                ));
            }
            if components.is_empty() {
                out.push_str("no component changed\n");
            }
            if !unmatched.is_empty() {
                out.push_str(&format!(
                    "(changed, matching no component: {})\n",
                    unmatched.join(", ")
                ));
            }
            out
        }
    })?;
    Ok(Exit::Ok)
}

pub fn env_check(config: &Config, json: bool) -> anyhow::Result<Exit> {
    let reports: Vec<checks::ComponentEnv> = config
        .components
        .iter()
        .filter(|c| c.process().is_some())
        .map(|c| checks::component_env(config, c))
        .collect();
    let ok = reports.iter().all(|r| r.error_messages().is_empty());
    print(json, &reports, |reports| {
        let mut out = String::new();
        for report in reports {
            if let Some(file) = &report.file {
                out.push_str(&format!(
                    "{}: {} ({} keys)\n",
                    report.component,
                    file.path.display(),
                    file.keys.len()
                ));
                for key in &file.keys {
                    out.push_str(&format!("  {}={}\n", key.name, key.masked));
                }
            }
            for problem in report
                .file
                .iter()
                .flat_map(|f| f.problems.iter())
                .chain(report.problems.iter())
            {
                let level = match problem.severity {
                    crate::checks::env::Severity::Error => "ERROR",
                    crate::checks::env::Severity::Warning => "warning",
                };
                out.push_str(&format!("  {level}: {}\n", problem.message));
            }
            if report.error_messages().is_empty() {
                out.push_str(&format!("{}: ok\n", report.component));
            }
        }
        out
    })?;
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}

/// Checks the config and everything it points at; prints every problem, not just the first.
pub fn validate(config: &Config) -> anyhow::Result<Exit> {
    let mut problems: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    notes.push(format!("{}: syntax and settings ok", config.path.display()));
    let data_parent = config
        .daemon
        .data_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if std::fs::metadata(data_parent)
        .map(|m| m.permissions().readonly())
        .unwrap_or(true)
    {
        problems.push(format!(
            "data_dir {}: {} is not writable",
            config.daemon.data_dir.display(),
            data_parent.display()
        ));
    }
    for component in &config.components {
        let name = component.name.as_str();
        for message in checks::component_env(config, component).error_messages() {
            problems.push(format!("{name}: {message}"));
        }
        match &component.kind {
            ComponentKind::Process(process) => {
                let program = &process.command[0];
                if !program.contains('{') {
                    let path = Path::new(program);
                    let found = if path.is_absolute() {
                        path.is_file()
                    } else {
                        which(program).is_some()
                    };
                    if !found {
                        problems.push(format!("{name}: command {program:?} is not found"));
                    }
                }
            }
            ComponentKind::Hook(hook) => {
                let program = Path::new(&hook.run[0]);
                let path = hook.workdir.join(program);
                if program.components().count() > 1 && !path.is_file() {
                    problems.push(format!("{name}: hook {} does not exist", path.display()));
                } else if program.components().count() == 1
                    && which(&hook.run[0]).is_none()
                    && !path.is_file()
                {
                    problems.push(format!(
                        "{name}: hook program {:?} is not on PATH",
                        hook.run[0]
                    ));
                }
            }
            ComponentKind::Static(_) => {}
        }
    }
    for service in &config.services {
        if let Err(e) = service.url() {
            problems.push(format!("service {}: {e}", service.name));
        }
        if let Some(compose) = &service.compose {
            if !compose.file.is_file() {
                problems.push(format!(
                    "service {}: compose file {} does not exist",
                    service.name,
                    compose.file.display()
                ));
            }
        }
    }
    for disk in &config.checks.disk {
        if !disk.path.exists() {
            problems.push(format!(
                "checks.disk: {} does not exist",
                disk.path.display()
            ));
        }
    }
    for note in &notes {
        println!("ok     {note}");
    }
    for warning in &config.warnings {
        println!("WARN   {warning}");
    }
    for problem in &problems {
        println!("ERROR  {problem}");
    }
    if problems.is_empty() {
        println!("everything the config points at is in place");
        Ok(Exit::Ok)
    } else {
        Ok(Exit::Failed)
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Which instance's log to show: of `release`, or of whatever serves now (the daemon's view,
/// else the committed active release).
async fn log_target(
    config: &Config,
    client: &Client,
    component: &str,
    release: Option<&str>,
) -> anyhow::Result<(String, PathBuf)> {
    if config.component(component).is_none() {
        bail!("unknown component {component:?}");
    }
    let release = match release {
        Some(r) => r.to_owned(),
        None => {
            let live = client.get::<StatusResponse>("/v1/status").await.ok();
            let serving = live.and_then(|s| {
                s.components
                    .into_iter()
                    .find(|c| c.name == component)
                    .and_then(|c| c.serving_release)
            });
            match serving {
                Some(r) => r,
                None => Store::open_read_only(&config.daemon.data_dir)?
                    .component_state(component)?
                    .active
                    .with_context(|| format!("{component} has no active release"))?,
            }
        }
    };
    let store = Store::open_read_only(&config.daemon.data_dir)?;
    let instance = store
        .latest_instance(component, &release)?
        .with_context(|| format!("release {release} of {component} has no instance log"))?;
    Ok((release, PathBuf::from(instance.log_path)))
}

pub async fn logs(
    config: &Config,
    client: &Client,
    component: &str,
    release: Option<&str>,
    follow: bool,
    lines: usize,
) -> anyhow::Result<Exit> {
    let (_, mut path) = log_target(config, client, component, release).await?;
    let tail = crate::supervisor::tail_lines(&path, lines)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    if !tail.is_empty() {
        writeln!(out, "{tail}")?;
    }
    drop(out);
    if !follow {
        return Ok(Exit::Ok);
    }
    let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut ticks = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        offset = copy_new_bytes(&path, offset)?;
        ticks += 1;
        // Without --release, follow whatever serves: after a switch, the new instance's log.
        if release.is_none() && ticks.is_multiple_of(5) {
            if let Ok((now, now_path)) = log_target(config, client, component, None).await {
                if now_path != path {
                    let _ = copy_new_bytes(&path, offset);
                    println!(
                        "==> now following {component} {now} ({}) <==",
                        now_path.display()
                    );
                    path = now_path;
                    offset = 0;
                }
            }
        }
    }
}

/// Prints what was appended to `path` since `offset`; a file that shrank was rotated (copied
/// and truncated), so reading starts again from its beginning.
fn copy_new_bytes(path: &Path, offset: u64) -> anyhow::Result<u64> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(offset);
    };
    let len = file.metadata()?.len();
    let start = if len < offset { 0 } else { offset };
    if len == start {
        return Ok(start);
    }
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.take(len - start).read_to_end(&mut buf)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_config_is_valid() {
        let config = Config::parse(Path::new(SERVER_CONFIG), TEMPLATE_CONFIG).unwrap();
        assert_eq!(config.components.len(), 2);
        assert!(config.daemon.production);
    }
}
