//! The certificates cutover keeps: what is wanted (from the config, at start and on reload),
//! each one's status, and the renewal loop. Each certificate is ordered on its own task, so a
//! host whose order fails or hangs never delays another's; a failure backs off (1 minute
//! doubling to 6 hours by default) while the certificate already stored keeps being served.

use super::resolver::CertResolver;
use super::schedule::{next_attempt, renew_at, Backoff, Due};
use super::store::CertStore;
use super::{Acme, ChallengeKind};
use crate::shutdown::Shutdown;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// The time the schedule reads; tests move it instead of waiting months.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// One certificate to keep: its hosts (the first names it) and how to prove them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    pub hosts: Vec<String>,
    pub kind: ChallengeKind,
}

impl CertRequest {
    /// Its name: the first host, lower case (also its directory under `certs/`).
    pub fn name(&self) -> String {
        self.hosts
            .first()
            .map(|h| h.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct RenewOptions {
    pub clock: Arc<dyn Clock>,
    pub backoff: Backoff,
    /// The longest the loop sleeps before reading the clock again (a suspended machine or a
    /// clock moved by hand is noticed within this).
    pub max_sleep: Duration,
}

impl Default for RenewOptions {
    fn default() -> RenewOptions {
        RenewOptions {
            clock: Arc::new(SystemClock),
            backoff: Backoff::default(),
            max_sleep: Duration::from_secs(600),
        }
    }
}

/// One certificate as `status`, `cutover certs` and metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    pub name: String,
    pub hosts: Vec<String>,
    pub challenge: ChallengeKind,
    /// The certificate served now, if any covers these hosts.
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
    /// Two thirds into its lifetime.
    pub renew_at: Option<SystemTime>,
    /// When the loop starts the next order (the past: as soon as it can).
    pub next_attempt: SystemTime,
    /// An order for it is running now.
    pub issuing: bool,
    /// Consecutive failed orders; 0 once one succeeds.
    pub failures: u32,
    /// Why the last order failed (or why the stored one could not be loaded), until one
    /// succeeds.
    pub last_error: Option<String>,
    pub last_attempt: Option<SystemTime>,
    pub last_issued: Option<SystemTime>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct CertManager {
    inner: Arc<Inner>,
}

struct Inner {
    acme: Acme,
    options: RenewOptions,
    wanted: Mutex<BTreeMap<String, Managed>>,
    /// Raised when the wanted set changes, so the loop looks at it at once.
    changed: Notify,
}

struct Managed {
    request: CertRequest,
    /// Bumped when the request changes: an order started for the old one records nothing.
    generation: u64,
    in_flight: bool,
    failures: u32,
    last_failure: Option<SystemTime>,
    last_error: Option<String>,
    last_attempt: Option<SystemTime>,
    last_issued: Option<SystemTime>,
}

impl Managed {
    fn new(request: CertRequest, generation: u64) -> Managed {
        Managed {
            request,
            generation,
            in_flight: false,
            failures: 0,
            last_failure: None,
            last_error: None,
            last_attempt: None,
            last_issued: None,
        }
    }
}

impl CertManager {
    pub fn new(acme: Acme, options: RenewOptions) -> CertManager {
        CertManager {
            inner: Arc::new(Inner {
                acme,
                options,
                wanted: Mutex::new(BTreeMap::new()),
                changed: Notify::new(),
            }),
        }
    }

    pub fn acme(&self) -> &Acme {
        &self.inner.acme
    }

    pub fn store(&self) -> &CertStore {
        self.inner.acme.store()
    }

    /// The https listener's certificate resolver for these certificates and their challenges.
    pub fn resolver(&self) -> CertResolver {
        CertResolver::new(self.acme().challenges().clone(), self.store().clone())
    }

    /// The certificates to keep, at start and on each reload. A new one (or one whose hosts or
    /// challenge changed) starts afresh; one no longer wanted is forgotten (its files stay, and
    /// the store keeps serving it until the next start).
    pub fn set_wanted(&self, requests: Vec<CertRequest>) {
        {
            let mut wanted = self.wanted();
            let mut next = BTreeMap::new();
            for request in requests {
                let name = request.name();
                let managed = match wanted.remove(&name) {
                    Some(old) if old.request == request => old,
                    Some(old) => {
                        let mut fresh = Managed::new(request, old.generation + 1);
                        // The old order still runs; a second one for the same host would
                        // answer its challenges too.
                        fresh.in_flight = old.in_flight;
                        fresh
                    }
                    None => Managed::new(request, 0),
                };
                next.insert(name, managed);
            }
            *wanted = next;
        }
        self.inner.changed.notify_one();
    }

    /// Every wanted certificate, by name.
    pub fn status(&self) -> Vec<CertStatus> {
        let wanted = self.wanted();
        wanted
            .iter()
            .map(|(name, managed)| self.status_of(name, managed))
            .collect()
    }

    /// The renewal loop, until `shutdown`; orders still running then are dropped (their
    /// challenges withdrawn, nothing stored).
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut attempts = JoinSet::new();
        loop {
            let now = self.now();
            for (name, generation) in self.claim_due(now) {
                let this = self.clone();
                attempts.spawn(async move { this.attempt(&name, generation).await });
            }
            let wait = self.until_next(now);
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.changed.notified() => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
            }
        }
        attempts.abort_all();
    }

    fn now(&self) -> SystemTime {
        self.inner.options.clock.now()
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Managed>> {
        self.inner
            .wanted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn next_attempt_of(&self, name: &str, managed: &Managed) -> SystemTime {
        let due = Due {
            valid: self.covering(name, &managed.request),
            failures: managed.failures,
            last_failure: managed.last_failure,
        };
        next_attempt(&due, &self.inner.options.backoff)
    }

    /// The stored certificate's validity when it covers every host of `request`.
    fn covering(&self, name: &str, request: &CertRequest) -> Option<(SystemTime, SystemTime)> {
        let stored = self.store().get(name)?;
        let covers = request
            .hosts
            .iter()
            .all(|host| stored.hosts.contains(&host.to_ascii_lowercase()));
        covers.then_some((stored.not_before, stored.not_after))
    }

    /// Marks each due certificate as being ordered; returns them with their generation.
    fn claim_due(&self, now: SystemTime) -> Vec<(String, u64)> {
        let mut wanted = self.wanted();
        let mut due = Vec::new();
        for (name, managed) in wanted.iter_mut() {
            if !managed.in_flight && self.next_attempt_of(name, managed) <= now {
                managed.in_flight = true;
                managed.last_attempt = Some(now);
                due.push((name.clone(), managed.generation));
            }
        }
        due
    }

    /// How long the loop may sleep: until the earliest next attempt, at most `max_sleep`.
    fn until_next(&self, now: SystemTime) -> Duration {
        let wanted = self.wanted();
        wanted
            .iter()
            .filter(|(_, managed)| !managed.in_flight)
            .map(|(name, managed)| {
                let at = self.next_attempt_of(name, managed);
                at.duration_since(now).unwrap_or_default()
            })
            .min()
            .unwrap_or(self.inner.options.max_sleep)
            .min(self.inner.options.max_sleep)
    }

    async fn attempt(&self, name: &str, generation: u64) {
        let request = match self.wanted().get(name) {
            Some(managed) => managed.request.clone(),
            None => return,
        };
        let result = self.inner.acme.issue(&request.hosts, request.kind).await;
        let now = self.now();
        let mut wanted = self.wanted();
        let Some(managed) = wanted.get_mut(name) else {
            return;
        };
        managed.in_flight = false;
        if managed.generation != generation {
            return;
        }
        match result {
            Ok(_) => {
                managed.failures = 0;
                managed.last_failure = None;
                managed.last_error = None;
                managed.last_issued = Some(now);
            }
            Err(error) => {
                managed.failures = managed.failures.saturating_add(1);
                managed.last_failure = Some(now);
                let retry_in = self.inner.options.backoff.after(managed.failures);
                tracing::warn!(
                    certificate = %name,
                    failures = managed.failures,
                    retry_in = %humantime::format_duration(retry_in),
                    "certificate order failed: {error}"
                );
                managed.last_error = Some(error.to_string());
            }
        }
        drop(wanted);
        // The loop's sleep was computed without this certificate: let it look again.
        self.inner.changed.notify_one();
    }

    fn status_of(&self, name: &str, managed: &Managed) -> CertStatus {
        let valid = self.covering(name, &managed.request);
        let last_error = managed
            .last_error
            .clone()
            .or_else(|| self.store().load_error(name));
        CertStatus {
            name: name.to_owned(),
            hosts: managed.request.hosts.clone(),
            challenge: managed.request.kind,
            not_before: valid.map(|(from, _)| from),
            not_after: valid.map(|(_, to)| to),
            renew_at: valid.map(|(from, to)| renew_at(from, to)),
            next_attempt: self.next_attempt_of(name, managed),
            issuing: managed.in_flight,
            failures: managed.failures,
            last_error,
            last_attempt: managed.last_attempt,
            last_issued: managed.last_issued,
        }
    }
}
