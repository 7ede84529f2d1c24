//! The outbound HTTP(S) client for webhooks and hook verification URLs: hyper-util's client with
//! rustls (ring) for TLS, trusting the system's certificate store (rustls-native-certs, which
//! honours `SSL_CERT_FILE` and `SSL_CERT_DIR` like OpenSSL does).

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

pub type Connector = HttpsConnector<HttpConnector>;

/// A client for http:// and https:// URLs, without connection reuse (its calls are rare).
pub fn client<B>(connect_timeout: Duration) -> Result<Client<Connector, B>, String>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("cannot load the system's TLS certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector))
}
