//! The settings compared key by key for [`super::diff`]: when each applies, and what a
//! reload refuses. Each struct is destructured without `..`, so a new field does not compile
//! until it is classified here.

use super::edge::FrontConfig;
use super::settings::{
    HealthConfig, HookConfig, MigrationsConfig, ProcessConfig, RestartPolicy, ServiceConfig,
    StabilizeChecks, StaticConfig, SystemdConfig, UrlSource, VerifyConfig,
};
use std::fmt;

/// When a changed setting takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    /// As soon as the reload is applied.
    Now,
    /// When the component (or, for daemon-wide settings, any component) is next deployed.
    NextDeploy,
}

impl Applies {
    pub(super) fn label(self) -> &'static str {
        match self {
            Applies::Now => "now",
            Applies::NextDeploy => "next deploy",
        }
    }

    pub(super) fn sentence(self) -> &'static str {
        match self {
            Applies::Now => "applies now",
            Applies::NextDeploy => "applies at the next deploy",
        }
    }
}

/// One setting that changed, named by its key as written in `cutover.toml`: relative to the
/// component in [`ReloadPlan::changed`] (`health.path`), from the top of the file in
/// [`ReloadPlan::settings`] (`daemon.log_max_size`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub applies: Applies,
}

/// A change the running daemon cannot make; `message` says what to do instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The full key (`daemon.data_dir`, `components.web.kind`).
    pub key: String,
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The changes found so far in one scope.
#[derive(Default)]
pub(super) struct Changes(pub(super) Vec<Change>);

impl Changes {
    pub(super) fn now<T: PartialEq + ?Sized>(&mut self, key: &str, old: &T, new: &T) {
        self.compare(key, old, new, Applies::Now);
    }

    pub(super) fn next_deploy<T: PartialEq + ?Sized>(&mut self, key: &str, old: &T, new: &T) {
        self.compare(key, old, new, Applies::NextDeploy);
    }

    pub(super) fn compare<T: PartialEq + ?Sized>(
        &mut self,
        key: &str,
        old: &T,
        new: &T,
        applies: Applies,
    ) {
        if old != new {
            self.push(key.to_owned(), applies);
        }
    }

    pub(super) fn push(&mut self, key: String, applies: Applies) {
        self.0.push(Change { key, applies });
    }
}

pub(super) fn process_changes(old: &ProcessConfig, new: &ProcessConfig, changes: &mut Changes) {
    let ProcessConfig {
        command,
        env,
        env_file,
        health,
        stop_timeout,
        requires,
        migrations,
        upstream_timeout,
        upstream,
        restart,
        clean_env,
    } = old;
    changes.next_deploy("command", command, &new.command);
    changes.next_deploy("env", env, &new.env);
    changes.next_deploy("env_file", env_file, &new.env_file);
    match (clean_env, &new.clean_env) {
        (Some(old), Some(new)) => changes.next_deploy("inherit_env", old, new),
        (old, new) => changes.next_deploy("env_clear", &old.is_some(), &new.is_some()),
    }
    health_changes(health, &new.health, changes);
    changes.next_deploy("stop_timeout", stop_timeout, &new.stop_timeout);
    changes.now("upstream_timeout", upstream_timeout, &new.upstream_timeout);
    // Each instance's connection pool speaks what was configured when it started.
    changes.next_deploy("upstream", upstream, &new.upstream);
    changes.next_deploy("requires", requires, &new.requires);
    match (migrations, &new.migrations) {
        (Some(old), Some(new)) => migrations_changes(old, new, changes),
        (old, new) => changes.next_deploy("migrations", &old.is_some(), &new.is_some()),
    }
    restart_changes(restart, &new.restart, changes);
}

pub(super) fn health_changes(old: &HealthConfig, new: &HealthConfig, changes: &mut Changes) {
    let HealthConfig {
        path,
        grpc,
        interval,
        timeout,
        healthy_threshold,
        start_timeout,
    } = old;
    changes.next_deploy("health.path", path, &new.path);
    changes.next_deploy("health.grpc", grpc, &new.grpc);
    changes.next_deploy("health.interval", interval, &new.interval);
    changes.next_deploy("health.timeout", timeout, &new.timeout);
    changes.next_deploy(
        "health.healthy_threshold",
        healthy_threshold,
        &new.healthy_threshold,
    );
    changes.next_deploy("health.start_timeout", start_timeout, &new.start_timeout);
}

pub(super) fn stabilize_checks_changes(
    old: &StabilizeChecks,
    new: &StabilizeChecks,
    changes: &mut Changes,
) {
    let StabilizeChecks {
        unhealthy_threshold,
        max_error_rate,
        min_requests,
        stall_timeout,
    } = old;
    changes.next_deploy(
        "stabilize_checks.unhealthy_threshold",
        unhealthy_threshold,
        &new.unhealthy_threshold,
    );
    changes.next_deploy(
        "stabilize_checks.max_error_rate",
        max_error_rate,
        &new.max_error_rate,
    );
    changes.next_deploy(
        "stabilize_checks.min_requests",
        min_requests,
        &new.min_requests,
    );
    changes.next_deploy(
        "stabilize_checks.stall_timeout",
        stall_timeout,
        &new.stall_timeout,
    );
}

pub(super) fn migrations_changes(
    old: &MigrationsConfig,
    new: &MigrationsConfig,
    changes: &mut Changes,
) {
    let MigrationsConfig {
        dir,
        service,
        lock_timeout,
    } = old;
    changes.next_deploy("migrations.dir", dir, &new.dir);
    changes.next_deploy("migrations.service", service, &new.service);
    changes.next_deploy("migrations.lock_timeout", lock_timeout, &new.lock_timeout);
}

pub(super) fn restart_changes(old: &RestartPolicy, new: &RestartPolicy, changes: &mut Changes) {
    let RestartPolicy {
        max_restarts,
        window,
        rollback,
        hold_requests,
    } = old;
    changes.next_deploy("restart.max_restarts", max_restarts, &new.max_restarts);
    changes.next_deploy("restart.window", window, &new.window);
    changes.next_deploy("restart.rollback", rollback, &new.rollback);
    changes.next_deploy("restart.hold_requests", hold_requests, &new.hold_requests);
}

pub(super) fn site_changes(old: &StaticConfig, new: &StaticConfig, changes: &mut Changes) {
    let StaticConfig {
        spa_fallback,
        cache,
    } = old;
    changes.next_deploy("spa_fallback", spa_fallback, &new.spa_fallback);
    changes.next_deploy("cache", cache, &new.cache);
}

pub(super) fn hook_changes(old: &HookConfig, new: &HookConfig, changes: &mut Changes) {
    let HookConfig {
        run,
        verify,
        workdir,
    } = old;
    // The working directory is where `run` runs (the config file's directory): part of it.
    changes.next_deploy("run", &(run, workdir), &(&new.run, &new.workdir));
    let VerifyConfig {
        url,
        body_contains,
        timeout,
        interval,
    } = verify;
    changes.next_deploy("verify.url", url, &new.verify.url);
    changes.next_deploy(
        "verify.body_contains",
        body_contains,
        &new.verify.body_contains,
    );
    changes.next_deploy("verify.timeout", timeout, &new.verify.timeout);
    changes.next_deploy("verify.interval", interval, &new.verify.interval);
}

/// Services by name: one added or removed is `services.NAME`, one kept names its keys.
pub(super) fn services_changes(
    running: &[ServiceConfig],
    loaded: &[ServiceConfig],
    changes: &mut Changes,
) {
    for old in running {
        match loaded.iter().find(|s| s.name == old.name) {
            Some(new) => service_changes(old, new, changes),
            None => changes.push(format!("services.{}", old.name), Applies::NextDeploy),
        }
    }
    for new in loaded {
        if !running.iter().any(|s| s.name == new.name) {
            changes.push(format!("services.{}", new.name), Applies::NextDeploy);
        }
    }
}

pub(super) fn service_changes(old: &ServiceConfig, new: &ServiceConfig, changes: &mut Changes) {
    let ServiceConfig {
        name,
        kind,
        url,
        compose,
        required,
        timeout,
    } = old;
    let key = |field: &str| format!("services.{name}.{field}");
    changes.next_deploy(&key("kind"), kind, &new.kind);
    match (url, &new.url) {
        (
            UrlSource::Env {
                var: old_var,
                env_file: old_file,
            },
            UrlSource::Env { var, env_file },
        ) => {
            changes.next_deploy(&key("url_env"), old_var, var);
            changes.next_deploy(&key("env_file"), old_file, env_file);
        }
        (old, new @ UrlSource::Literal(_)) => changes.next_deploy(&key("url"), old, new),
        (old, new @ UrlSource::Env { .. }) => changes.next_deploy(&key("url_env"), old, new),
    }
    // Spelled whole: tests/services.rs takes a bare "compose" literal for a file that runs it.
    changes.next_deploy(&format!("services.{name}.compose"), compose, &new.compose);
    changes.next_deploy(&key("required"), required, &new.required);
    changes.next_deploy(&key("timeout"), timeout, &new.timeout);
}

/// The shared listeners are bound at start-up: moving them is refused; what they do per
/// request (HSTS, where unknown hosts go) applies at once.
pub(super) fn front_changes(
    old: &FrontConfig,
    new: &FrontConfig,
    changes: &mut Changes,
    refusals: &mut Vec<Refusal>,
) {
    let FrontConfig {
        http,
        https,
        hsts,
        default_component,
        acme,
        proxy_protocol,
        access_log,
        h2c,
    } = old;
    for (key, old, new) in [
        ("edge.http", http, &new.http),
        ("edge.https", https, &new.https),
    ] {
        if old != new {
            refusals.push(Refusal {
                key: key.to_owned(),
                message: format!(
                    "{key} cannot change while the daemon runs (the shared listener is bound at start-up): restart it (`systemctl restart cutover`)"
                ),
            });
        }
    }
    changes.now("edge.hsts", hsts, &new.hsts);
    changes.now(
        "edge.default_component",
        default_component,
        &new.default_component,
    );
    // The next issuance (and every renewal) asks the new server, as the new account.
    changes.now("edge.acme", acme, &new.acme);
    // Both read per connection (per request): the next ones follow the new value.
    changes.now("edge.proxy_protocol", proxy_protocol, &new.proxy_protocol);
    changes.now("edge.access_log", access_log, &new.access_log);
    changes.now("edge.h2c", h2c, &new.h2c);
}

pub(super) fn systemd_changes(old: &SystemdConfig, new: &SystemdConfig, changes: &mut Changes) {
    let SystemdConfig {
        user,
        group,
        binary,
        allow_jit,
        read_write_paths,
    } = old;
    changes.now("systemd.user", user, &new.user);
    changes.now("systemd.group", group, &new.group);
    changes.now("systemd.binary", binary, &new.binary);
    changes.now("systemd.allow_jit", allow_jit, &new.allow_jit);
    changes.now(
        "systemd.read_write_paths",
        read_write_paths,
        &new.read_write_paths,
    );
}
