//! Automatic certificates for the shared https listener: which hosts want one (those of
//! components with `hosts` and no `tls` of their own, exact names: a wildcard needs DNS-01),
//! and the [`crate::acme::CertManager`] that issues and renews them, started with the daemon
//! and replaced by a reload that changes `[edge] acme`.

use crate::acme::{
    AcmeConfig, CertManager, CertRequest, CertStatus, CertStore, ChallengeKind, Challenges, Leaf,
};
use crate::config::{AcmeChallenge, AcmeSettings, Config, HostPattern};
use crate::front::{AcmeParts, Front};
use crate::metrics::CertificateSample;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use std::path::PathBuf;
use std::sync::Mutex;

/// The running manager, if `[edge] acme` is set.
#[derive(Default)]
pub struct Certs {
    running: Mutex<Option<Running>>,
}

struct Running {
    settings: AcmeSettings,
    manager: CertManager,
    stop: ShutdownTrigger,
}

impl Certs {
    /// Starts, updates or stops the manager as `config` says; `shutdown` ends it with the
    /// daemon. Certificates already issued are served at once (they are on disk).
    pub fn apply(&self, config: &Config, front: &Front, shutdown: &Shutdown) -> Result<(), String> {
        let applied = self.apply_acme(config, front, shutdown);
        self.publish_metrics(config);
        applied
    }

    fn apply_acme(
        &self,
        config: &Config,
        front: &Front,
        shutdown: &Shutdown,
    ) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = config.front.acme.as_ref();
        if let (Some(now), Some(settings)) = (running.as_ref(), wanted) {
            if now.settings == *settings {
                now.manager.set_wanted(requests(config, settings.challenge));
                return Ok(());
            }
        }
        if let Some(old) = running.take() {
            old.stop.trigger();
        }
        let Some(settings) = wanted else {
            front.set_acme(None);
            return Ok(());
        };
        let data_dir = &config.daemon.data_dir;
        let store = CertStore::load(data_dir).map_err(|e| e.to_string())?;
        let challenges = Challenges::new();
        let acme = crate::acme::Acme::new(
            AcmeConfig {
                directory: settings.directory.clone(),
                email: settings.email.clone(),
                ca_file: settings.ca_file.clone(),
            },
            data_dir,
            challenges.clone(),
            store.clone(),
            Default::default(),
        )
        .map_err(|e| format!("[edge] acme: {e}"))?;
        let manager = CertManager::new(acme, Default::default());
        manager.set_wanted(requests(config, settings.challenge));
        front.set_acme(Some(AcmeParts { challenges, store }));
        let (stop, mut own) = crate::shutdown::channel();
        let mut daemon = shutdown.clone();
        let (forward, stopped) = crate::shutdown::channel();
        tokio::spawn(async move {
            tokio::select! {
                _ = daemon.wait() => {}
                _ = own.wait() => {}
            }
            forward.trigger();
        });
        tokio::spawn(manager.clone().run(stopped));
        *running = Some(Running {
            settings: settings.clone(),
            manager,
            stop,
        });
        Ok(())
    }

    /// Each certificate's state, for `status` and `cutover certs`.
    pub fn status(&self) -> Vec<CertStatus> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .as_ref()
            .map(|r| r.manager.status())
            .unwrap_or_default()
    }

    /// Lets `/metrics` read the certificates at each scrape: ACME's from the manager running
    /// now, the components' own as their files were when `config` was applied.
    fn publish_metrics(&self, config: &Config) {
        let manager = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running.as_ref().map(|r| r.manager.clone())
        };
        let own: Vec<CertificateSample> = own_certificates(config)
            .into_iter()
            .map(|own| CertificateSample {
                name: own.component,
                not_after: own.leaf.ok().map(|leaf| leaf.not_after),
                failures: 0,
            })
            .collect();
        crate::metrics::set_certificates(move || {
            let issued = manager
                .iter()
                .flat_map(|m| m.status())
                .map(|status| CertificateSample {
                    name: status.name,
                    not_after: status.not_after,
                    failures: status.failures,
                });
            issued.chain(own.iter().cloned()).collect()
        });
    }
}

/// The certificates ACME is asked for as `config` says (none without `[edge] acme`).
pub fn wanted(config: &Config) -> Vec<CertRequest> {
    config
        .front
        .acme
        .as_ref()
        .map(|settings| requests(config, settings.challenge))
        .unwrap_or_default()
}

/// A component's own `tls` certificate, as its file reads now.
pub struct OwnCert {
    pub component: String,
    pub hosts: Vec<String>,
    pub cert: PathBuf,
    /// Its leaf, or why the file cannot be read as a certificate.
    pub leaf: Result<Leaf, String>,
}

/// Every component's own `tls` certificate (read only; the listener loads them in `front`).
pub fn own_certificates(config: &Config) -> Vec<OwnCert> {
    config
        .components
        .iter()
        .filter_map(|c| {
            let routes = c.routes.as_ref()?;
            let files = routes.tls.as_ref()?;
            let leaf = std::fs::read(&files.cert)
                .map_err(|e| format!("cannot read {}: {e}", files.cert.display()))
                .and_then(|pem| {
                    crate::acme::read_leaf(&pem)
                        .map_err(|e| format!("{}: {e}", files.cert.display()))
                });
            Some(OwnCert {
                component: c.name.to_string(),
                hosts: routes.hosts.iter().map(|h| h.to_string()).collect(),
                cert: files.cert.clone(),
                leaf,
            })
        })
        .collect()
}

/// One certificate per component that wants one: its exact hosts.
fn requests(config: &Config, challenge: AcmeChallenge) -> Vec<CertRequest> {
    let kind = match challenge {
        AcmeChallenge::Http01 => ChallengeKind::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeKind::TlsAlpn01,
    };
    config
        .components
        .iter()
        .filter_map(|c| c.routes.as_ref())
        .filter(|routes| routes.tls.is_none())
        .filter_map(|routes| {
            let hosts: Vec<String> = routes
                .hosts
                .iter()
                .filter_map(|h| match h {
                    HostPattern::Exact(name) => Some(name.clone()),
                    HostPattern::Wildcard(_) => None,
                })
                .collect();
            (!hosts.is_empty()).then_some(CertRequest { hosts, kind })
        })
        .collect()
}
