//! instant-acme's HTTP client: hyper-util with rustls (ring) over HTTPS only, trusting the
//! roots in `ca_file` when given (a private or test ACME server such as Pebble), else the
//! system's. Each request, its body included, is bounded by a timeout, so an ACME server that
//! stops answering fails the order instead of holding it.

use super::error::AcmeError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub(super) struct AcmeHttp {
    client: Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    timeout: Duration,
}

impl AcmeHttp {
    pub(super) fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<AcmeHttp, AcmeError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match ca_file {
            Some(path) => builder.with_tls_config(tls_trusting(path)?),
            None => builder.with_native_roots().map_err(|e| AcmeError::CaFile {
                path: "(the system's certificate store)".into(),
                reason: e.to_string(),
            })?,
        };
        let connector = builder.https_only().enable_http1().wrap_connector(http);
        Ok(AcmeHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }
}

fn tls_trusting(path: &Path) -> Result<rustls::ClientConfig, AcmeError> {
    let fail = |reason: String| AcmeError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(format!("cannot read it: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("not PEM certificates: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| fail(format!("not a usable root: {e}")))?;
    }
    if roots.is_empty() {
        return Err(fail("holds no certificate".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let target = format!("{} {}", req.method(), req.uri());
        let timeout = self.timeout;
        let sent = self.client.request(req);
        Box::pin(async move {
            let answer = async {
                let response = sent.await.map_err(|e| other(&target, &e))?;
                let (parts, body) = response.into_parts();
                let body = body.collect().await.map_err(|e| other(&target, &e))?;
                let full = Full::new(body.to_bytes());
                Ok(BytesResponse::from(http::Response::from_parts(parts, full)))
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(result) => result,
                Err(_) => Err(instant_acme::Error::Other(
                    format!(
                        "{target}: no answer within {}",
                        humantime::format_duration(timeout)
                    )
                    .into(),
                )),
            }
        })
    }
}

/// hyper-util's errors say little at the top ("client error (Connect)"); the causes say why.
fn other(target: &str, error: &(dyn std::error::Error + 'static)) -> instant_acme::Error {
    let mut message = format!("{target}: {error}");
    let mut cause = error.source();
    while let Some(e) = cause {
        message.push_str(&format!(": {e}"));
        cause = e.source();
    }
    instant_acme::Error::Other(message.into())
}
