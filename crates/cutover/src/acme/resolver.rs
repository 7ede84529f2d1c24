//! The https listener's choice of certificate: the TLS-ALPN-01 challenge certificate when the
//! ClientHello asks for exactly `acme-tls/1`, else the stored certificate for its SNI name.

use super::challenges::{is_acme_tls_alpn, Challenges};
use super::store::CertStore;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct CertResolver {
    challenges: Challenges,
    store: CertStore,
}

impl CertResolver {
    pub fn new(challenges: Challenges, store: CertStore) -> CertResolver {
        CertResolver { challenges, store }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        if is_acme_tls_alpn(&hello) {
            // Never a real certificate here: the CA must see the challenge one or nothing.
            return self.challenges.tls_alpn01(name);
        }
        self.store.lookup(name)
    }
}
