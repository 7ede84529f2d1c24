//! The shared `[edge]` listeners: `http` and `https` serve every component that names `hosts`,
//! routed by host and path prefix ([`crate::routing`]). The https one terminates TLS (rustls:
//! the certificate by SNI, ALPN `h2` and `http/1.1`, session tickets) and speaks HTTP/2 to
//! clients that ask for it; requests go on to the components as HTTP/1.1.
//!
//! On the http listener, a host that has a certificate is redirected to https (308); the
//! others are served there. The https listener adds `Strict-Transport-Security` when `[edge]
//! hsts` says so.

use crate::config::{FrontConfig, HostRoutes, TlsFiles};
use crate::proxy::{ProxyBody, Route};
use crate::routing::{RouteSpec, RouteTable};
use crate::site::SiteRoute;
use arc_swap::ArcSwap;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// What answers a routed request: a component, by kind.
#[derive(Clone)]
pub struct Target {
    pub component: Arc<str>,
    pub answer: Answer,
    /// The component's own access log (`access_log = true`).
    pub log: Arc<crate::request_log::LogSlot>,
}

#[derive(Clone)]
pub enum Answer {
    Proxy(Arc<Route>),
    Static(Arc<SiteRoute>),
}

impl Target {
    /// The release answering now (for the access log).
    fn release(&self) -> Option<Arc<str>> {
        match &self.answer {
            Answer::Proxy(route) => route.current().map(|u| Arc::from(u.release.as_str())),
            Answer::Static(site) => site.current().map(|s| Arc::from(s.release.as_str())),
        }
    }
}

/// One component's entry, as the daemon knows it.
pub struct Routable<'a> {
    pub routes: &'a HostRoutes,
    pub target: Target,
}

/// The state both shared listeners read per request; swapped whole by a reload.
pub struct Front {
    table: ArcSwap<RouteTable<Target>>,
    settings: ArcSwap<FrontConfig>,
    certs: Arc<Certificates>,
    /// `[edge] access_log`: every request on the shared listeners.
    log: crate::request_log::LogSlot,
}

impl Front {
    pub fn new() -> Arc<Front> {
        Arc::new(Front {
            table: ArcSwap::from_pointee(RouteTable::default()),
            settings: ArcSwap::from_pointee(FrontConfig::default()),
            certs: Arc::new(Certificates::default()),
            log: Default::default(),
        })
    }

    /// Whether the http listener takes HTTP/2 by prior knowledge (`[edge] h2c`).
    pub fn accepts_h2c(&self) -> bool {
        self.settings.load().h2c
    }

    pub fn proxy_protocol(&self) -> bool {
        self.settings.load().proxy_protocol
    }

    /// Opens (or closes) `data_dir/logs/access.log` as `[edge] access_log` says.
    pub fn set_access_log(&self, config: &crate::config::Config) {
        let path = config.daemon.data_dir.join("logs").join("access.log");
        let wanted = config.front.access_log.then_some(path.as_path());
        self.log.set(wanted, config.daemon.log_max_size);
    }

    /// Installs the routes of `components` (and the default one) and loads their certificate
    /// files. A certificate that cannot be loaded is reported and its hosts are served without
    /// it (the others keep theirs).
    pub fn install<'a>(
        &self,
        settings: &FrontConfig,
        components: impl IntoIterator<Item = (&'a str, Routable<'a>)>,
    ) -> Vec<String> {
        let mut specs = Vec::new();
        let mut default = None;
        let mut problems = Vec::new();
        let mut certs = HashMap::new();
        let mut own = Vec::new();
        for (name, routable) in components {
            if settings
                .default_component
                .as_ref()
                .is_some_and(|d| d.as_str() == name)
            {
                default = Some(routable.target.clone());
            }
            if let Some(files) = &routable.routes.tls {
                own.push(OwnCert {
                    files: files.clone(),
                    hosts: routable
                        .routes
                        .hosts
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    stamp: stamp(files),
                });
                match load_certified_key(files) {
                    Ok(key) => {
                        let key = Arc::new(key);
                        for host in &routable.routes.hosts {
                            certs.insert(host.to_string(), key.clone());
                        }
                    }
                    Err(e) => problems.push(format!("{name}: {e}")),
                }
            }
            for host in &routable.routes.hosts {
                specs.push(RouteSpec {
                    host: host.clone(),
                    prefix: routable.routes.path_prefix.clone(),
                    strip: routable.routes.strip_prefix,
                    target: routable.target.clone(),
                });
            }
        }
        self.table.store(Arc::new(RouteTable::new(specs, default)));
        self.settings.store(Arc::new(settings.clone()));
        self.certs.by_name.store(Arc::new(certs));
        *self.certs.own.lock().unwrap_or_else(|p| p.into_inner()) = own;
        problems
    }

    /// Loads again the components' certificate files that changed on disk since they were
    /// read (a certificate renewed by another tool): new handshakes get the new one, open
    /// connections keep theirs. A file that no longer loads leaves the old certificate served.
    pub fn reload_changed_certificates(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut own = self.certs.own.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_name = None;
        for cert in own.iter_mut() {
            let now = stamp(&cert.files);
            if now == cert.stamp {
                continue;
            }
            cert.stamp = now;
            match load_certified_key(&cert.files) {
                Ok(key) => {
                    let map = by_name.get_or_insert_with(|| (**self.certs.by_name.load()).clone());
                    let key = Arc::new(key);
                    for host in &cert.hosts {
                        map.insert(host.clone(), key.clone());
                    }
                    tracing::info!(cert = %cert.files.cert.display(), "certificate file changed: loaded again");
                }
                Err(e) => problems.push(e),
            }
        }
        if let Some(map) = by_name {
            self.certs.by_name.store(Arc::new(map));
        }
        problems
    }

    /// Lets the listeners answer ACME challenges and serve issued certificates (`None`: no
    /// ACME any more).
    pub fn set_acme(&self, parts: Option<AcmeParts>) {
        self.certs.acme.store(Arc::new(parts));
    }

    /// The TLS settings of the https listener.
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.certs.clone());
        // `acme-tls/1` only ever meets the challenge certificate (see `Certificates`).
        config.alpn_protocols = vec![
            b"h2".to_vec(),
            b"http/1.1".to_vec(),
            crate::acme::ACME_TLS_ALPN.to_vec(),
        ];
        // Resumption: TLS 1.3 tickets, and the default in-memory session cache for TLS 1.2.
        if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
            config.ticketer = ticketer;
        }
        Arc::new(config)
    }

    /// Routes one request that arrived on a shared listener (`tls`: the https one).
    pub async fn handle(
        &self,
        mut req: Request<crate::body_timeout::RequestBody>,
        peer: &crate::edge::Peer,
        tls: bool,
    ) -> Response<ProxyBody> {
        let Some(host) = crate::request_log::request_host(&req) else {
            return crate::response::plain(
                StatusCode::BAD_REQUEST,
                "cutover: no host in the request",
            );
        };
        if !tls {
            if let Some(answer) = self.acme_http01(req.uri().path()) {
                return answer;
            }
        }
        let settings = self.settings.load();
        if !tls && settings.https.is_some() && self.certs.has(&host) {
            return redirect_to_https(&req, &host, settings.https.map(|a| a.port()));
        }
        let table = self.table.load();
        let Some(routed) = table.lookup(&host, req.uri().path()) else {
            return crate::response::plain(
                StatusCode::NOT_FOUND,
                &format!("cutover: no component serves {host}"),
            );
        };
        let target = routed.target.clone();
        let (request_id, trusted) = crate::request_log::tag(&mut req, peer);
        let logs: Vec<_> = [self.log.get(), target.log.get()]
            .into_iter()
            .flatten()
            .collect();
        let seen = || crate::request_log::Seen {
            host: host.clone(),
            component: target.component.clone(),
            release: target.release(),
            request_id: request_id.clone(),
            trusted,
        };
        let logged = crate::request_log::begin(logs, &req, peer, seen);
        if let Some(prefix) = routed.strip {
            let stripped = crate::routing::strip_prefix(
                req.uri().path_and_query().map_or("/", |p| p.as_str()),
                prefix,
            );
            if let Ok(uri) = stripped.parse::<Uri>() {
                *req.uri_mut() = uri;
            }
        }
        drop(table);
        as_http11(&mut req, &host);
        let mut response = match &target.answer {
            Answer::Proxy(route) => crate::proxy::handle(route, req, peer).await,
            Answer::Static(site) => crate::site::handle(site, req).await,
        };
        response
            .headers_mut()
            .insert(crate::access_log::REQUEST_ID, request_id);
        if tls {
            if let Some(hsts) = settings
                .hsts
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                response
                    .headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
            }
        }
        match logged {
            Some(pending) => pending.finish(response),
            None => response,
        }
    }
}

impl Front {
    /// `GET /.well-known/acme-challenge/<token>` while an order waits for that token: the key
    /// authorization, exactly (before any route or redirect).
    fn acme_http01(&self, path: &str) -> Option<Response<ProxyBody>> {
        let token = path.strip_prefix("/.well-known/acme-challenge/")?;
        let acme = self.certs.acme.load();
        let answer = acme.as_ref().as_ref()?.challenges.http01(token)?;
        use http_body_util::BodyExt;
        let body = http_body_util::Full::new(bytes::Bytes::from(answer))
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut response = Response::new(body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        Some(response)
    }
}

/// Components speak HTTP/1.1: an HTTP/2 request goes on as one, with its authority as Host.
fn as_http11<B>(req: &mut Request<B>, host: &str) {
    if req.version() == Version::HTTP_2 {
        *req.version_mut() = Version::HTTP_11;
        if !req.headers().contains_key(header::HOST) {
            let authority = req.uri().authority().map(|a| a.as_str().to_owned());
            if let Ok(value) = HeaderValue::from_str(authority.as_deref().unwrap_or(host)) {
                req.headers_mut().insert(header::HOST, value);
            }
        }
        if let Some(path) = req.uri().path_and_query().cloned() {
            *req.uri_mut() = Uri::from(path);
        }
    }
}

fn redirect_to_https<B>(req: &Request<B>, host: &str, port: Option<u16>) -> Response<ProxyBody> {
    let port = match port {
        Some(443) | None => String::new(),
        Some(port) => format!(":{port}"),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    let mut response = crate::response::plain(
        StatusCode::PERMANENT_REDIRECT,
        &format!("cutover: see {location}"),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Certificates by host name (exact, or `*.example.com`), picked by SNI: a component's own
/// first, then one issued by ACME; the TLS-ALPN-01 challenge certificate for a CA's check.
#[derive(Default)]
pub struct Certificates {
    by_name: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    acme: ArcSwap<Option<AcmeParts>>,
    /// The components' own files, with when they were last read.
    own: std::sync::Mutex<Vec<OwnCert>>,
}

struct OwnCert {
    files: TlsFiles,
    hosts: Vec<String>,
    stamp: Option<(std::time::SystemTime, std::time::SystemTime)>,
}

/// When the certificate and key files were last changed.
fn stamp(files: &TlsFiles) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((modified(&files.cert)?, modified(&files.key)?))
}

/// What the listeners read of ACME: the open challenges and the issued certificates.
#[derive(Clone)]
pub struct AcmeParts {
    pub challenges: crate::acme::Challenges,
    pub store: crate::acme::CertStore,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("names", &self.by_name.load().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Certificates {
    fn find(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.own(host).or_else(|| {
            let acme = self.acme.load();
            acme.as_ref().as_ref()?.store.lookup(host)
        })
    }

    fn own(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let all = self.by_name.load();
        if let Some(key) = all.get(host) {
            return Some(key.clone());
        }
        // `a.b.example.com` is covered by `*.b.example.com`, then `*.example.com`.
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(key) = all.get(&format!("*.{parent}")) {
                return Some(key.clone());
            }
            rest = parent;
        }
        None
    }

    fn has(&self, host: &str) -> bool {
        self.find(host).is_some()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        if crate::acme::is_acme_tls_alpn(&hello) {
            // A CA's TLS-ALPN-01 check: the challenge certificate or nothing, never a real one.
            let acme = self.acme.load();
            return acme.as_ref().as_ref()?.challenges.tls_alpn01(&name);
        }
        self.find(&name)
    }
}

/// A certificate chain and its key from PEM files.
fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let cert_pem = read(&files.cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|e| format!("{}: not a PEM private key: {e}", files.key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: unsupported key: {e}", files.key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    // Two files cannot be replaced in one step: a renewal read between the two writes pairs
    // the new key with the old certificate (or the reverse), which no handshake could use.
    // Refused, the pair loaded before is served until both files agree.
    // (A key type whose public half rustls cannot tell is given the benefit of the doubt.)
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(e) => Err(format!(
            "{} does not belong to the certificate in {}: {e}",
            files.key.display(),
            files.cert.display()
        )),
    }
}
