//! From the file as written to typed settings: each table's keys checked and turned into
//! settings, every error located (`file:line:col: key: message`) by looking the key up in the
//! source. Rules across tables are in `rules.rs`, the environment keys in `environment.rs`.

use super::placeholders::placeholder_problem;
use super::raw::{
    default_stabilize, default_stop_timeout, kind_label, RawComponent, RawConfig, RawKind,
    RawService,
};
use super::settings::{
    BundleLimits, ChecksConfig, ComponentConfig, ComponentKind, ComponentName, ComposeRef, Config,
    DaemonConfig, DiskCheck, HookConfig, MigrationsConfig, NotifyConfig, ProcessConfig,
    RestartPolicy, ServiceConfig, StaticConfig, UpstreamProtocol, UrlSource, PLACEHOLDERS,
};
use super::{ConfigError, HumanDuration};
use std::path::{Path, PathBuf};

/// Turns the file as written into settings, with positions looked up in the source.
pub(super) struct Validator<'a> {
    /// The config file, named in every error.
    pub(super) path: &'a Path,
    /// Its text, where the keys of errors are looked up.
    pub(super) text: &'a str,
    /// What relative paths are relative to: the file's directory.
    pub(super) base: &'a Path,
}

impl Validator<'_> {
    pub(super) fn error(&self, key: &[&str], message: impl Into<String>) -> ConfigError {
        ConfigError::at_key(self.path, self.text, key, message.into())
    }

    pub(super) fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base.join(path)
        }
    }

    pub(super) fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        if raw.daemon.max_connections == Some(0) {
            return Err(self.error(
                &["daemon", "max_connections"],
                "must be at least 1 (leave it out to derive it from the fd limit)",
            ));
        }
        match raw.daemon.proxy_threads {
            Some(0) => {
                return Err(self.error(
                    &["daemon", "proxy_threads"],
                    "must be at least 1 (leave it out for half the CPUs, at least 1)",
                ))
            }
            Some(n) if n > crate::proxy_threads::MAX_THREADS => {
                return Err(self.error(
                    &["daemon", "proxy_threads"],
                    format!("must be at most {}", crate::proxy_threads::MAX_THREADS),
                ))
            }
            _ => {}
        }
        if raw.daemon.body_read_timeout.get().is_zero() {
            return Err(self.error(&["daemon", "body_read_timeout"], "must be more than 0s"));
        }
        let data_dir = self.resolve(&raw.daemon.data_dir);
        let control_socket = match &raw.daemon.control_socket {
            Some(p) => self.resolve(p),
            None => data_dir.join("control.sock"),
        };
        let socket_key: &[&str] = match raw.daemon.control_socket {
            Some(_) => &["daemon", "control_socket"],
            None => &["daemon", "data_dir"],
        };
        self.check_control_socket(&control_socket, socket_key)?;
        if raw.components.is_empty() {
            return Err(self.error(
                &["components"],
                "no components configured; add a [components.NAME] table with at least `listen` and `command`",
            ));
        }
        let mut components = Vec::new();
        for (name, component) in raw.components {
            components.push(self.component(&name, component)?);
        }
        let front = self.front(&raw.edge)?;
        self.check_listen_unique(&components, raw.daemon.admin_listen, &front)?;
        self.check_routes(&components, &front)?;
        let warnings = self.warnings(&components);
        let components = self.order(components)?;
        let mut services = Vec::new();
        for (name, service) in raw.services {
            services.push(self.service(&name, service)?);
        }
        self.check_service_refs(&components, &services)?;
        let checks = ChecksConfig {
            disk: raw
                .checks
                .disk
                .into_iter()
                .map(|d| DiskCheck {
                    path: self.resolve(&d.path),
                    min_free: d.min_free,
                })
                .collect(),
        };
        Ok(Config {
            path: self.path.to_owned(),
            daemon: DaemonConfig {
                data_dir,
                control_socket,
                admin_listen: raw.daemon.admin_listen,
                production: raw.daemon.production,
                log_max_size: raw.daemon.log_max_size,
                bundle_limits: BundleLimits {
                    max_bytes: raw.daemon.bundle_max_size,
                    max_entries: raw.daemon.bundle_max_entries,
                },
                max_connections: raw.daemon.max_connections,
                proxy_threads: raw.daemon.proxy_threads,
                body_read_timeout: raw.daemon.body_read_timeout,
                socket_group: self.socket_group(raw.daemon.socket_group)?,
            },
            components,
            pipeline: raw.pipeline,
            services,
            checks,
            systemd: raw.systemd,
            notify: self.notify(raw.notify)?,
            edge: self.edge(&raw.edge)?,
            front,
            fleet: match raw.fleet {
                Some(fleet) => Some(
                    fleet
                        .build(|p| self.resolve(p))
                        .map_err(|(field, message)| self.error(&["fleet", field], message))?,
                ),
                None => None,
            },
            warnings,
            // Set by `parse`, which has the text.
            sha256: String::new(),
            loaded_at: 0,
        })
    }

    /// `hosts`, `path_prefix`, `strip_prefix`, `tls`.
    fn routes(
        &self,
        name: &str,
        raw: &RawComponent,
    ) -> Result<Option<super::edge::HostRoutes>, ConfigError> {
        let key = |field: &'static str| ["components", name, field];
        let Some(hosts) = &raw.hosts else {
            for (field, set) in [
                ("path_prefix", raw.path_prefix.is_some()),
                ("strip_prefix", raw.strip_prefix.is_some()),
                ("tls", raw.tls.is_some()),
            ] {
                if set {
                    return Err(self.error(&key(field), format!("`{field}` goes with `hosts`")));
                }
            }
            return Ok(None);
        };
        if hosts.is_empty() {
            return Err(self.error(&key("hosts"), "name at least one host"));
        }
        let hosts = hosts
            .iter()
            .map(|h| super::edge::HostPattern::parse(h))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(&key("hosts"), e))?;
        let path_prefix = match &raw.path_prefix {
            None => "/".to_owned(),
            Some(p) if p.starts_with('/') && !p.contains(['?', '#', '*']) => {
                let trimmed = p.trim_end_matches('/');
                if trimmed.is_empty() {
                    "/".to_owned()
                } else {
                    trimmed.to_owned()
                }
            }
            Some(p) => {
                return Err(self.error(
                    &key("path_prefix"),
                    format!("invalid path prefix {p:?}: write a path like \"/api\""),
                ))
            }
        };
        let tls = raw.tls.as_ref().map(|t| super::edge::TlsFiles {
            cert: self.resolve(&t.cert),
            key: self.resolve(&t.key),
        });
        Ok(Some(super::edge::HostRoutes {
            hosts,
            strip_prefix: raw.strip_prefix.unwrap_or(false),
            path_prefix,
            tls,
        }))
    }

    fn component(&self, name: &str, raw: RawComponent) -> Result<ComponentConfig, ConfigError> {
        let key = |field: &'static str| ["components", name, field];
        let name_parsed =
            ComponentName::parse(name).map_err(|e| self.error(&["components", name], e))?;
        if let Some(foreign) = raw.foreign_keys().first() {
            return Err(self.error(
                &key(foreign),
                format!(
                    "`{foreign}` does not apply to kind = \"{}\"",
                    kind_label(raw.kind)
                ),
            ));
        }
        if raw.kind != RawKind::Hook && raw.listen.is_none() && raw.hosts.is_none() {
            return Err(self.error(
                &["components", name],
                "missing field `listen` (or `hosts`, to be served on the shared [edge] listeners)",
            ));
        }
        let routes = self.routes(name, &raw)?;
        if raw.keep_releases < 2 {
            return Err(self.error(
                &key("keep_releases"),
                "keep_releases must be at least 2 (the active release and the one to roll back to)",
            ));
        }
        let checks = raw.stabilize_checks.clone().unwrap_or_default();
        if !(0.0..=1.0).contains(&checks.max_error_rate) {
            return Err(self.error(
                &["components", name, "stabilize_checks", "max_error_rate"],
                "max_error_rate is a fraction between 0 and 1",
            ));
        }
        if checks.unhealthy_threshold == 0 {
            return Err(self.error(
                &[
                    "components",
                    name,
                    "stabilize_checks",
                    "unhealthy_threshold",
                ],
                "unhealthy_threshold must be at least 1",
            ));
        }
        for glob in &raw.paths {
            if let Err(e) = globset::Glob::new(glob) {
                return Err(self.error(&key("paths"), format!("invalid glob {glob:?}: {e}")));
            }
        }
        let kind = match raw.kind {
            RawKind::Process => ComponentKind::Process(self.process(name, &raw)?),
            RawKind::Static => ComponentKind::Static(self.static_site(name, &raw)?),
            RawKind::Hook => ComponentKind::Hook(self.hook(name, &raw)?),
        };
        Ok(ComponentConfig {
            name: name_parsed,
            listen: raw.listen,
            h2c: raw.h2c.unwrap_or(false),
            access_log: raw.access_log.unwrap_or(false),
            routes,
            drain_timeout: raw.drain_timeout,
            keep_releases: raw.keep_releases,
            // Only processes are watched after the switch: files and hooks have nothing to watch.
            stabilize: match raw.kind {
                RawKind::Process => raw.stabilize.unwrap_or_else(default_stabilize),
                _ => HumanDuration::from_secs(0),
            },
            stabilize_checks: checks,
            after: raw.after,
            kind,
            paths: raw.paths,
            build: raw.build,
            artifact: raw.artifact,
            required_env: raw.required_env,
        })
    }

    fn process(&self, name: &str, raw: &RawComponent) -> Result<ProcessConfig, ConfigError> {
        let key = |field: &'static str| ["components", name, field];
        let command = raw.command.clone().unwrap_or_default();
        if raw.command.is_none() {
            return Err(self.error(&["components", name], "missing field `command`"));
        }
        if command.is_empty() || command[0].trim().is_empty() {
            return Err(self.error(&key("command"), "command must name a program to run"));
        }
        let env = raw.env.clone().unwrap_or_default();
        for (field, values) in [
            ("command", &command),
            ("env", &env.values().cloned().collect()),
        ] {
            if let Some(problem) = values
                .iter()
                .find_map(|v| placeholder_problem(v, PLACEHOLDERS))
            {
                return Err(self.error(&key(field), problem));
            }
        }
        let clean_env = self.release_environment(name, raw)?;
        let health = raw.health.clone().unwrap_or_default();
        if !health.path.starts_with('/') {
            return Err(self.error(
                &["components", name, "health", "path"],
                format!("health path {:?} must start with '/'", health.path),
            ));
        }
        let upstream = raw.upstream.unwrap_or_default();
        if health.grpc && upstream != UpstreamProtocol::H2c {
            return Err(self.error(
                &["components", name, "health", "grpc"],
                "the gRPC health check speaks HTTP/2: set `upstream = \"h2c\"` on this component",
            ));
        }
        if health.healthy_threshold == 0 {
            return Err(self.error(
                &["components", name, "health", "healthy_threshold"],
                "healthy_threshold must be at least 1",
            ));
        }
        if health.interval.get().is_zero() {
            return Err(self.error(
                &["components", name, "health", "interval"],
                "interval must be greater than zero",
            ));
        }
        if health.timeout.get() > health.start_timeout.get() {
            return Err(self.error(
                &["components", name, "health", "timeout"],
                format!(
                    "a probe timeout of {} is longer than start_timeout ({}): no probe could ever pass in time",
                    health.timeout, health.start_timeout
                ),
            ));
        }
        Ok(ProcessConfig {
            command,
            env,
            env_file: raw.env_file.as_ref().map(|p| self.resolve(p)),
            health,
            stop_timeout: raw.stop_timeout.unwrap_or_else(default_stop_timeout),
            upstream_timeout: raw
                .upstream_timeout
                .unwrap_or_else(|| HumanDuration::from_secs(60)),
            upstream,
            requires: raw.requires.clone().unwrap_or_default(),
            migrations: match &raw.migrations {
                None => None,
                Some(m) => {
                    let inside = m.dir.components().all(|c| {
                        matches!(
                            c,
                            std::path::Component::Normal(_) | std::path::Component::CurDir
                        )
                    });
                    if !inside || m.dir.as_os_str().is_empty() {
                        return Err(self.error(
                            &["components", name, "migrations", "dir"],
                            format!("migrations dir {:?} must be a relative path inside the release bundle", m.dir),
                        ));
                    }
                    Some(MigrationsConfig {
                        dir: m.dir.clone(),
                        service: m.service.clone(),
                        lock_timeout: m.lock_timeout,
                    })
                }
            },
            restart: self.restart_policy(name, raw)?,
            clean_env,
        })
    }

    fn restart_policy(&self, name: &str, raw: &RawComponent) -> Result<RestartPolicy, ConfigError> {
        let policy = raw.restart.clone().unwrap_or_default();
        let key = |field: &'static str| ["components", name, "restart", field];
        if policy.max_restarts == 0 {
            return Err(self.error(&key("max_restarts"), "max_restarts must be at least 1"));
        }
        if policy.window.get().is_zero() {
            return Err(self.error(&key("window"), "window must be greater than zero"));
        }
        Ok(policy)
    }

    fn notify(&self, hooks: Vec<NotifyConfig>) -> Result<Vec<NotifyConfig>, ConfigError> {
        use crate::vocab::NotifyKind;
        for hook in &hooks {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(
                    self.error(&["notify"], "notify url must be an http:// or https:// URL")
                );
            }
            if let Some(unknown) = hook.events.iter().find(|e| NotifyKind::parse(e).is_none()) {
                let known = NotifyKind::ALL.map(NotifyKind::as_str).join(", ");
                return Err(self.error(
                    &["notify"],
                    format!("unknown event {unknown:?}; known: {known}"),
                ));
            }
        }
        Ok(hooks)
    }

    fn service(&self, name: &str, raw: RawService) -> Result<ServiceConfig, ConfigError> {
        let url = match (raw.url, raw.url_env) {
            (Some(url), None) => {
                if raw.env_file.is_some() {
                    return Err(self.error(
                        &["services", name, "env_file"],
                        "env_file only applies with url_env",
                    ));
                }
                UrlSource::Literal(url)
            }
            (None, Some(var)) => UrlSource::Env {
                var,
                env_file: raw.env_file.as_ref().map(|p| self.resolve(p)),
            },
            (Some(_), Some(_)) => {
                return Err(self.error(
                    &["services", name, "url_env"],
                    "give either url or url_env, not both",
                ))
            }
            (None, None) => {
                return Err(self.error(&["services", name], "missing field `url` or `url_env`"))
            }
        };
        Ok(ServiceConfig {
            name: name.to_owned(),
            kind: raw.kind,
            url,
            compose: raw.compose.map(|c| ComposeRef {
                file: self.resolve(&c.file),
                service: c.service,
                command: c.command,
            }),
            required: raw.required,
            timeout: raw.timeout,
        })
    }

    fn static_site(&self, name: &str, raw: &RawComponent) -> Result<StaticConfig, ConfigError> {
        if let Some(fallback) = &raw.spa_fallback {
            if fallback.is_empty()
                || fallback.starts_with('/')
                || fallback.split('/').any(|p| p == "..")
            {
                return Err(self.error(
                    &["components", name, "spa_fallback"],
                    format!("spa_fallback {fallback:?} must be a relative path inside the site, e.g. \"index.html\""),
                ));
            }
        }
        let cache = raw.cache.clone().unwrap_or_default();
        for rule in &cache {
            if let Err(e) = globset::Glob::new(&rule.glob) {
                return Err(self.error(
                    &["components", name, "cache"],
                    format!("invalid glob {:?}: {e}", rule.glob),
                ));
            }
            if http::HeaderValue::from_str(&rule.control).is_err() {
                return Err(self.error(
                    &["components", name, "cache"],
                    format!("invalid Cache-Control value {:?}", rule.control),
                ));
            }
        }
        Ok(StaticConfig {
            spa_fallback: raw.spa_fallback.clone(),
            cache,
        })
    }

    fn hook(&self, name: &str, raw: &RawComponent) -> Result<HookConfig, ConfigError> {
        let (Some(run), Some(verify)) = (raw.run.clone(), raw.verify.clone()) else {
            let missing = if raw.run.is_none() { "run" } else { "verify" };
            return Err(self.error(
                &["components", name],
                format!("missing field `{missing}` for kind = \"hook\""),
            ));
        };
        if run.is_empty() || run[0].trim().is_empty() {
            return Err(self.error(
                &["components", name, "run"],
                "run must name a program to run",
            ));
        }
        const HOOK_PLACEHOLDERS: &[&str] = &["release", "component"];
        for value in run
            .iter()
            .chain(std::iter::once(&verify.url))
            .chain(verify.body_contains.iter())
        {
            if let Some(problem) = placeholder_problem(value, HOOK_PLACEHOLDERS) {
                return Err(self.error(&["components", name, "run"], problem));
            }
        }
        if !(verify.url.starts_with("http://") || verify.url.starts_with("https://")) {
            return Err(self.error(
                &["components", name, "verify", "url"],
                "verify.url must be an http:// or https:// URL",
            ));
        }
        Ok(HookConfig {
            run,
            verify,
            workdir: self.base.to_owned(),
        })
    }
}
