//! Rules that need more than one value, or the file system, to judge: what `serve` could not
//! run (overlapping public addresses, a control socket path it cannot bind), references
//! between tables (`requires`, `migrations.service`, `after` and the deploy order it gives),
//! placeholders, `[edge]` networks, and the warnings `validate` prints.

use super::raw::RawEdge;
use super::validate::Validator;
use super::{error, ComponentConfig, ConfigError, ServiceConfig};
use std::net::SocketAddr;
use std::path::Path;

impl Validator<'_> {
    /// The daemon binds `path` (unlinking only a stale socket there), so anything else at that
    /// path, and a path longer than `sun_path` holds, would make `serve` fail.
    pub(super) fn check_control_socket(
        &self,
        path: &Path,
        key: &[&str],
    ) -> Result<(), ConfigError> {
        use std::os::unix::fs::FileTypeExt;
        // sockaddr_un.sun_path is 108 bytes on Linux, with a terminating NUL.
        const SUN_PATH_MAX: usize = 107;
        let length = path.as_os_str().len();
        if length > SUN_PATH_MAX {
            return Err(self.error(
                key,
                format!(
                    "control socket path {} is {length} bytes; a unix socket path holds at most {SUN_PATH_MAX}",
                    path.display()
                ),
            ));
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => Err(self.error(
                key,
                format!(
                    "{} exists and is not a socket; a control socket needs a path of its own",
                    path.display()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `[edge] http`, `https`, `hsts`, `default_component`.
    pub(super) fn front(&self, raw: &RawEdge) -> Result<super::edge::FrontConfig, ConfigError> {
        if let Some(hsts) = &raw.hsts {
            if http::HeaderValue::from_str(hsts).is_err() || !hsts.contains("max-age=") {
                return Err(self.error(
                    &["edge", "hsts"],
                    format!("invalid Strict-Transport-Security value {hsts:?}; write e.g. \"max-age=31536000\""),
                ));
            }
            if raw.https.is_none() {
                return Err(self.error(
                    &["edge", "hsts"],
                    "hsts needs an https listener: set [edge] https",
                ));
            }
        }
        let default_component = match &raw.default_component {
            Some(name) => Some(
                super::ComponentName::parse(name)
                    .map_err(|e| self.error(&["edge", "default_component"], e))?,
            ),
            None => None,
        };
        Ok(super::edge::FrontConfig {
            http: raw.http,
            https: raw.https,
            hsts: raw.hsts.clone(),
            default_component,
            acme: self.acme(raw)?,
            proxy_protocol: raw.proxy_protocol.unwrap_or(false),
            access_log: raw.access_log.unwrap_or(false),
            h2c: raw.h2c.unwrap_or(false),
        })
    }

    fn acme(&self, raw: &RawEdge) -> Result<Option<super::edge::AcmeSettings>, ConfigError> {
        use super::edge::AcmeChallenge;
        let Some(acme) = &raw.acme else {
            return Ok(None);
        };
        let key = |field: &'static str| ["edge", "acme", field];
        if raw.https.is_none() {
            return Err(self.error(
                &["edge", "acme"],
                "certificates are for the https listener: set [edge] https",
            ));
        }
        if !acme.directory.starts_with("https://") {
            return Err(self.error(
                &key("directory"),
                format!("{:?} is not an https:// URL (Let's Encrypt's is https://acme-v02.api.letsencrypt.org/directory)", acme.directory),
            ));
        }
        let challenge =
            match acme.challenge.as_deref() {
                None if raw.http.is_some() => AcmeChallenge::Http01,
                None => AcmeChallenge::TlsAlpn01,
                Some("http-01") if raw.http.is_some() => AcmeChallenge::Http01,
                Some("http-01") => return Err(self.error(
                    &key("challenge"),
                    "http-01 is answered on the http listener: set [edge] http, or use tls-alpn-01",
                )),
                Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
                Some(other) => {
                    return Err(self.error(
                        &key("challenge"),
                        format!("unknown challenge {other:?}: use \"http-01\" or \"tls-alpn-01\""),
                    ))
                }
            };
        Ok(Some(super::edge::AcmeSettings {
            directory: acme.directory.clone(),
            email: acme.email.clone(),
            ca_file: acme.ca_file.as_ref().map(|p| self.resolve(p)),
            challenge,
        }))
    }

    /// Hosts and path prefixes: each (host, prefix) routed to one component only, the shared
    /// listener they need configured, the default component one that has routes.
    pub(super) fn check_routes(
        &self,
        components: &[ComponentConfig],
        front: &super::edge::FrontConfig,
    ) -> Result<(), ConfigError> {
        let mut seen: Vec<(&super::edge::HostPattern, &str, &str)> = Vec::new();
        for component in components {
            let Some(routes) = &component.routes else {
                continue;
            };
            let name = component.name.as_str();
            if front.http.is_none() && front.https.is_none() {
                return Err(self.error(
                    &["components", name, "hosts"],
                    "hosts are served on the shared listeners: set [edge] http and/or https",
                ));
            }
            if routes.tls.is_some() && front.https.is_none() {
                return Err(self.error(
                    &["components", name, "tls"],
                    "a certificate needs the https listener: set [edge] https",
                ));
            }
            for host in &routes.hosts {
                if let Some((_, _, owner)) = seen
                    .iter()
                    .find(|(h, p, _)| *h == host && *p == routes.path_prefix)
                {
                    return Err(self.error(
                        &["components", name, "hosts"],
                        format!(
                            "{host}{} is already routed to {owner}",
                            if routes.path_prefix == "/" {
                                ""
                            } else {
                                &routes.path_prefix
                            }
                        ),
                    ));
                }
                seen.push((host, &routes.path_prefix, name));
            }
        }
        if let Some(default) = &front.default_component {
            let found = components.iter().find(|c| &c.name == default);
            match found {
                None => {
                    return Err(self.error(
                        &["edge", "default_component"],
                        format!("no component named {default}"),
                    ))
                }
                Some(c) if matches!(c.kind, super::ComponentKind::Hook(_)) => {
                    return Err(self.error(
                        &["edge", "default_component"],
                        format!("{default} is a hook: cutover serves none of its requests"),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    pub(super) fn edge(&self, raw: &RawEdge) -> Result<super::EdgePolicy, ConfigError> {
        let mut trusted_proxies = Vec::new();
        for text in &raw.trusted_proxies {
            let net = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    self.error(
                        &["edge", "trusted_proxies"],
                        format!(
                            "invalid network {text:?}; write a CIDR like \"10.0.0.0/8\" or an address like \"192.0.2.7\""
                        ),
                    )
                })?;
            trusted_proxies.push(net.trunc());
        }
        Ok(super::EdgePolicy { trusted_proxies })
    }

    /// Whether `key` is written in the file (rather than left to its default).
    fn is_set(&self, key: &[&str]) -> bool {
        error::key_is_written(self.text, key)
    }

    pub(super) fn warnings(&self, components: &[ComponentConfig]) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut warn = |key: &[&str], message: String| {
            warnings.push(self.error(key, message).to_string());
        };
        for component in components {
            let Some(process) = component.process() else {
                continue;
            };
            let name = component.name.as_str();
            let mentions_port = process
                .command
                .iter()
                .chain(process.env.values())
                .any(|v| v.contains("{port}"));
            if !mentions_port {
                warn(
                    &["components", name, "command"],
                    "neither command nor env mentions {port}: the instance is told its port only \
                     in $CUTOVER_PORT, and a server that does not read it cannot listen where \
                     cutover sends requests"
                        .into(),
                );
            }
            let health = &process.health;
            let explicit = self.is_set(&["components", name, "health", "timeout"])
                || self.is_set(&["components", name, "health", "interval"]);
            if explicit && health.timeout.get() > health.interval.get() {
                warn(
                    &["components", name, "health", "timeout"],
                    format!(
                        "a probe timeout of {} is longer than the interval ({}): a hanging instance \
                         is noticed only after the timeout",
                        health.timeout, health.interval
                    ),
                );
            }
        }
        warnings
    }

    /// No two public sockets (components' `listen`, `admin_listen`) may take the same port on
    /// overlapping addresses: `serve` could not bind the second.
    pub(super) fn check_listen_unique(
        &self,
        components: &[ComponentConfig],
        admin_listen: Option<SocketAddr>,
        front: &super::edge::FrontConfig,
    ) -> Result<(), ConfigError> {
        let mut taken: Vec<(SocketAddr, &str)> = Vec::new();
        for (addr, key, owner) in [
            (front.http, "http", "[edge] http"),
            (front.https, "https", "[edge] https"),
        ] {
            if let Some(addr) = addr {
                self.check_free(&taken, addr, &["edge", key])?;
                taken.push((addr, owner));
            }
        }
        for component in components {
            let Some(addr) = component.listen else {
                continue;
            };
            self.check_free(
                &taken,
                addr,
                &["components", component.name.as_str(), "listen"],
            )?;
            taken.push((addr, component.name.as_str()));
        }
        if let Some(addr) = admin_listen {
            self.check_free(&taken, addr, &["daemon", "admin_listen"])?;
        }
        Ok(())
    }

    fn check_free(
        &self,
        taken: &[(SocketAddr, &str)],
        addr: SocketAddr,
        key: &[&str],
    ) -> Result<(), ConfigError> {
        match taken.iter().find(|(other, _)| listen_overlaps(*other, addr)) {
            Some((other, owner)) if *other == addr => Err(self.error(
                key,
                format!("{addr} is already the listen address of {owner}"),
            )),
            Some((other, owner)) => Err(self.error(
                key,
                format!(
                    "{addr} overlaps {other}, the listen address of {owner} (one port, and an unspecified address takes it on every address)"
                ),
            )),
            None => Ok(()),
        }
    }

    /// `requires` and `migrations.service` name configured services of the right kind.
    pub(super) fn check_service_refs(
        &self,
        components: &[ComponentConfig],
        services: &[ServiceConfig],
    ) -> Result<(), ConfigError> {
        let known = || {
            services
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for component in components {
            let Some(process) = component.process() else {
                continue;
            };
            for required in &process.requires {
                if !services.iter().any(|s| &s.name == required) {
                    return Err(self.error(
                        &["components", component.name.as_str(), "requires"],
                        format!(
                            "unknown service {required:?} in `requires`; configured: {}",
                            known()
                        ),
                    ));
                }
            }
            if let Some(migrations) = &process.migrations {
                match services.iter().find(|s| s.name == migrations.service) {
                    Some(s) if s.kind == crate::vocab::ServiceKind::Postgres => {}
                    Some(_) => {
                        return Err(self.error(
                            &["components", component.name.as_str(), "migrations"],
                            format!(
                                "migrations need a postgres service; {:?} is not one",
                                migrations.service
                            ),
                        ))
                    }
                    None => {
                        return Err(self.error(
                            &["components", component.name.as_str(), "migrations"],
                            format!(
                                "unknown service {:?} in `migrations`; configured: {}",
                                migrations.service,
                                known()
                            ),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Topological order by `after`; unknown names and cycles are errors.
    pub(super) fn order(
        &self,
        mut pending: Vec<ComponentConfig>,
    ) -> Result<Vec<ComponentConfig>, ConfigError> {
        for component in &pending {
            for dep in &component.after {
                if !pending.iter().any(|c| &c.name == dep) {
                    return Err(self.error(
                        &["components", component.name.as_str(), "after"],
                        format!("unknown component \"{dep}\" in `after`"),
                    ));
                }
                if dep == &component.name {
                    return Err(self.error(
                        &["components", component.name.as_str(), "after"],
                        "a component cannot come after itself",
                    ));
                }
            }
        }
        let mut ordered: Vec<ComponentConfig> = Vec::new();
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|c| c.after.iter().all(|d| ordered.iter().any(|o| &o.name == d)));
            match ready {
                Some(i) => ordered.push(pending.remove(i)),
                None => {
                    let names: Vec<_> = pending.iter().map(|c| c.name.as_str()).collect();
                    return Err(self.error(
                        &["components", pending[0].name.as_str(), "after"],
                        format!("`after` forms a cycle among: {}", names.join(", ")),
                    ));
                }
            }
        }
        Ok(ordered)
    }
}

/// Whether two listen addresses cannot both be bound: the same port on the same address, or
/// on an unspecified one (`0.0.0.0` takes every IPv4 address; `[::]` is dual-stack on Linux
/// and takes every address).
fn listen_overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wide: std::net::IpAddr, other: std::net::IpAddr| {
        wide.is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}
