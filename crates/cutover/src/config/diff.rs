//! The reload plan: what changed between the config the daemon runs and the one `cutover
//! reload` (or SIGHUP) just loaded, and when each change takes effect. Pure: this compares two
//! validated configs; the daemon applies the plan.
//!
//! Every setting is classified here, once, by who reads it:
//!
//! - **now**: read per request or per connection by the data plane (`upstream_timeout`,
//!   `[daemon] body_read_timeout`, `[edge] trusted_proxies`: for connections accepted from
//!   then on), per event by a daemon task (`[[notify]]`, `[daemon] log_max_size`), or never by
//!   the daemon but by the CLI commands that read the file themselves (`paths`, `build`,
//!   `artifact`, `[systemd]`): nothing has to wait for a deploy.
//! - **next deploy**: read by the deploy pipeline or fixed into what a deploy builds: the
//!   instance (`command`, `env`, `env_file`, `env_clear`, `inherit_env`, `migrations`,
//!   `requires`, `required_env`), its health gate, stabilization, drain, stop and watchdog
//!   (`health`, `stabilize`, `stabilize_checks`, `drain_timeout`, `stop_timeout`, `restart`),
//!   a static release's site (`spa_fallback`, `cache`: the deploy checks the release has the
//!   fallback file and builds the site with the rules), a hook's `run` and `verify`, retention
//!   (`keep_releases`), the pipeline (`after`, `[pipeline]`), the deploy gate (`[services]`,
//!   `[checks]`, `[daemon] production`) and the upload (`bundle_max_size`,
//!   `bundle_max_entries`). The release serving now was started and judged with the old values:
//!   judging it by new ones (a `health.path` it may not serve) could restart a healthy release.
//! - **refused**: what the daemon opened or sized once at start-up: `data_dir` (the state
//!   database, the release store, the instances' files), `control_socket` and `socket_group`
//!   (the socket this very reload came through), `admin_listen` (bound at start-up, outside
//!   any component), `max_connections` (the fd limit divided over the listeners at
//!   start-up; a cap lowered under open connections could not be kept) and `proxy_threads`
//!   (the threads connections live on, started once). A component whose
//!   `kind` changed is refused too: its releases and the route its listener serves are of its
//!   kind (a process's binary is not a site's directory), so it is removed in one reload and
//!   added back in another, which makes the gap in service a visible, separate step. A plan
//!   with a refusal must not be applied at all: a reload is all or nothing.
//!
//! A kept component's `listen` is not a [`Change`] but a [`ReloadPlan::relisten`]: the daemon
//! moves the socket itself. What is not a setting is not compared: the file's path (hooks'
//! working directory, derived from it, counts as `run`), its warnings, hash and load time.
//!
//! Each struct is destructured without `..`, so a field added to the settings does not compile
//! here until it is classified.

use super::diff_keys::{
    front_changes, hook_changes, process_changes, services_changes, site_changes,
    stabilize_checks_changes, systemd_changes, Changes,
};
pub use super::diff_keys::{Applies, Change, Refusal};
use super::settings::{
    ChecksConfig, ComponentConfig, ComponentKind, ComponentName, Config, DaemonConfig,
    PipelineConfig,
};
use super::{BundleLimits, EdgePolicy};
use std::net::SocketAddr;

/// What a reload changes; see the module doc for the rule behind each class.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReloadPlan {
    /// Components in the new config only, in its deploy order.
    pub added: Vec<ComponentName>,
    /// Components in the running config only.
    pub removed: Vec<ComponentName>,
    /// Kept components whose `listen` changed: (name, old, new).
    pub relisten: Vec<(ComponentName, Option<SocketAddr>, Option<SocketAddr>)>,
    /// Kept components whose other settings changed, with the keys that did.
    pub changed: Vec<(ComponentName, Vec<Change>)>,
    /// Changes outside the components: `[daemon]`, `[edge]`, `[[notify]]`, `[pipeline]`,
    /// `[services]`, `[checks]`, `[systemd]`.
    pub settings: Vec<Change>,
    /// Changes that cannot be made live; when there is one, nothing of the plan is applied.
    pub refusals: Vec<Refusal>,
}

impl ReloadPlan {
    /// What changes from `running` (the config the daemon serves) to `loaded` (the file as
    /// just read and validated).
    pub fn between(running: &Config, loaded: &Config) -> ReloadPlan {
        let Config {
            path: _,
            daemon,
            components,
            pipeline,
            services,
            checks,
            systemd,
            notify,
            edge,
            front,
            // Read by `cutover fleet` on the operator's side; the daemon never uses it.
            fleet: _,
            warnings: _,
            sha256: _,
            loaded_at: _,
        } = running;
        let mut plan = ReloadPlan::default();
        plan.components(components, &loaded.components);
        let mut settings = Changes::default();
        plan.daemon(daemon, &loaded.daemon, &mut settings);
        front_changes(front, &loaded.front, &mut settings, &mut plan.refusals);
        let EdgePolicy { trusted_proxies } = edge;
        settings.now(
            "edge.trusted_proxies",
            trusted_proxies,
            &loaded.edge.trusted_proxies,
        );
        settings.now("notify", notify, &loaded.notify);
        let PipelineConfig { on_failure } = pipeline;
        settings.next_deploy(
            "pipeline.on_failure",
            on_failure,
            &loaded.pipeline.on_failure,
        );
        services_changes(services, &loaded.services, &mut settings);
        let ChecksConfig { disk } = checks;
        settings.next_deploy("checks.disk", disk, &loaded.checks.disk);
        systemd_changes(systemd, &loaded.systemd, &mut settings);
        plan.settings = settings.0;
        plan
    }

    /// Nothing changed (and nothing was refused).
    pub fn is_empty(&self) -> bool {
        let ReloadPlan {
            added,
            removed,
            relisten,
            changed,
            settings,
            refusals,
        } = self;
        added.is_empty()
            && removed.is_empty()
            && relisten.is_empty()
            && changed.is_empty()
            && settings.is_empty()
            && refusals.is_empty()
    }

    /// Whether the reload must be refused as a whole.
    pub fn refused(&self) -> bool {
        !self.refusals.is_empty()
    }

    /// One line for the history: "added api2; removed worker; backend: listen 127.0.0.1:8080
    /// -> 127.0.0.1:8081; backend: upstream_timeout (now), health.path (next deploy)".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.refusals.is_empty() {
            let keys: Vec<&str> = self.refusals.iter().map(|r| r.key.as_str()).collect();
            parts.push(format!("refused {}", keys.join(", ")));
        }
        if !self.added.is_empty() {
            parts.push(format!("added {}", names(&self.added)));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", names(&self.removed)));
        }
        for (name, old, new) in &self.relisten {
            parts.push(format!(
                "{name}: listen {} -> {}",
                address(old),
                address(new)
            ));
        }
        for (name, changes) in &self.changed {
            parts.push(format!("{name}: {}", grouped(changes)));
        }
        if !self.settings.is_empty() {
            parts.push(grouped(&self.settings));
        }
        if parts.is_empty() {
            return "no changes".to_owned();
        }
        parts.join("; ")
    }

    /// What `cutover reload` prints: one change per line, each saying when it applies; the
    /// refusals first.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .refusals
            .iter()
            .map(|r| format!("refused: {r}"))
            .collect();
        for name in &self.added {
            lines.push(format!(
                "added component {name}: applies now (it serves from its first deploy)"
            ));
        }
        for name in &self.removed {
            lines.push(format!("removed component {name}: applies now"));
        }
        for (name, old, new) in &self.relisten {
            lines.push(format!(
                "{name}: listen {} -> {}: applies now",
                address(old),
                address(new)
            ));
        }
        for (name, changes) in &self.changed {
            for change in changes {
                lines.push(format!(
                    "{name}: {}: {}",
                    change.key,
                    change.applies.sentence()
                ));
            }
        }
        for change in &self.settings {
            lines.push(format!("{}: {}", change.key, change.applies.sentence()));
        }
        if lines.is_empty() {
            lines.push("no changes".to_owned());
        }
        lines
    }

    fn components(&mut self, running: &[ComponentConfig], loaded: &[ComponentConfig]) {
        let find = |list: &'_ [ComponentConfig], name: &ComponentName| {
            list.iter().position(|c| &c.name == name)
        };
        for old in running {
            match find(loaded, &old.name) {
                Some(i) => self.component(old, &loaded[i]),
                None => self.removed.push(old.name.clone()),
            }
        }
        for new in loaded {
            if find(running, &new.name).is_none() {
                self.added.push(new.name.clone());
            }
        }
    }

    fn component(&mut self, old: &ComponentConfig, new: &ComponentConfig) {
        let ComponentConfig {
            name,
            listen,
            h2c,
            access_log,
            routes,
            drain_timeout,
            keep_releases,
            stabilize,
            stabilize_checks,
            after,
            kind,
            paths,
            build,
            artifact,
            required_env,
        } = old;
        let mut changes = Changes::default();
        // Written as one arm per old kind, not `_`, so a new kind must be matched here.
        match (kind, &new.kind) {
            (ComponentKind::Process(old), ComponentKind::Process(new)) => {
                process_changes(old, new, &mut changes)
            }
            (ComponentKind::Static(old), ComponentKind::Static(new)) => {
                site_changes(old, new, &mut changes)
            }
            (ComponentKind::Hook(old), ComponentKind::Hook(new)) => {
                hook_changes(old, new, &mut changes)
            }
            (ComponentKind::Process(_) | ComponentKind::Static(_) | ComponentKind::Hook(_), _) => {
                self.refusals.push(Refusal {
                    key: format!("components.{name}.kind"),
                    message: format!(
                        "components.{name}.kind changed from {} to {}: remove the component in \
                         one reload and add it back in another",
                        old.kind_name(),
                        new.kind_name()
                    ),
                });
                return;
            }
        }
        if *listen != new.listen {
            self.relisten.push((name.clone(), *listen, new.listen));
        }
        // The shared listeners' routing table is rebuilt from the components on every reload.
        changes.now("hosts", routes, &new.routes);
        // Read per connection by the listener.
        changes.now("h2c", h2c, &new.h2c);
        changes.now("access_log", access_log, &new.access_log);
        changes.next_deploy("drain_timeout", drain_timeout, &new.drain_timeout);
        changes.next_deploy("keep_releases", keep_releases, &new.keep_releases);
        changes.next_deploy("stabilize", stabilize, &new.stabilize);
        stabilize_checks_changes(stabilize_checks, &new.stabilize_checks, &mut changes);
        changes.next_deploy("after", after, &new.after);
        changes.now("paths", paths, &new.paths);
        changes.now("build", build, &new.build);
        changes.now("artifact", artifact, &new.artifact);
        changes.next_deploy("required_env", required_env, &new.required_env);
        if !changes.0.is_empty() {
            self.changed.push((name.clone(), changes.0));
        }
    }

    fn daemon(&mut self, old: &DaemonConfig, new: &DaemonConfig, settings: &mut Changes) {
        let DaemonConfig {
            data_dir,
            control_socket,
            admin_listen,
            production,
            log_max_size,
            bundle_limits,
            max_connections,
            proxy_threads,
            body_read_timeout,
            socket_group,
        } = old;
        self.refuse(
            "daemon.data_dir",
            "it holds the state database and the releases",
            data_dir,
            &new.data_dir,
        );
        self.refuse(
            "daemon.control_socket",
            "this reload came through it",
            control_socket,
            &new.control_socket,
        );
        self.refuse(
            "daemon.socket_group",
            "the control socket was given to it when bound",
            socket_group,
            &new.socket_group,
        );
        self.refuse(
            "daemon.admin_listen",
            "the admin listener is bound at start-up",
            admin_listen,
            &new.admin_listen,
        );
        self.refuse(
            "daemon.max_connections",
            "the fd limit is divided over the listeners at start-up",
            max_connections,
            &new.max_connections,
        );
        self.refuse(
            "daemon.proxy_threads",
            "the proxy threads are started with the daemon",
            proxy_threads,
            &new.proxy_threads,
        );
        settings.next_deploy("daemon.production", production, &new.production);
        settings.now("daemon.log_max_size", log_max_size, &new.log_max_size);
        let BundleLimits {
            max_bytes,
            max_entries,
        } = bundle_limits;
        settings.next_deploy(
            "daemon.bundle_max_size",
            max_bytes,
            &new.bundle_limits.max_bytes,
        );
        settings.next_deploy(
            "daemon.bundle_max_entries",
            max_entries,
            &new.bundle_limits.max_entries,
        );
        settings.now(
            "daemon.body_read_timeout",
            body_read_timeout,
            &new.body_read_timeout,
        );
    }

    fn refuse<T: PartialEq>(&mut self, key: &str, why: &str, old: &T, new: &T) {
        if old != new {
            self.refusals.push(Refusal {
                key: key.to_owned(),
                message: format!(
                    "{key} cannot change while the daemon runs ({why}): restart it \
                     (`systemctl restart cutover`)"
                ),
            });
        }
    }
}

/// "upstream_timeout (now), health.path, drain_timeout (next deploy)".
fn grouped(changes: &[Change]) -> String {
    [Applies::Now, Applies::NextDeploy]
        .into_iter()
        .filter_map(|applies| {
            let keys: Vec<&str> = changes
                .iter()
                .filter(|c| c.applies == applies)
                .map(|c| c.key.as_str())
                .collect();
            (!keys.is_empty()).then(|| format!("{} ({})", keys.join(", "), applies.label()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn names(names: &[ComponentName]) -> String {
    names
        .iter()
        .map(ComponentName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn address(addr: &Option<SocketAddr>) -> String {
    addr.map_or_else(|| "none".to_owned(), |a| a.to_string())
}
