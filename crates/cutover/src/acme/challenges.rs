//! What the public listeners answer while an order is open: the HTTP-01 key authorizations (by
//! token) and the TLS-ALPN-01 certificates (by server name, RFC 8737). [`Acme::issue`]
//! publishes them and withdraws them when the order is done, however it ends.
//!
//! [`Acme::issue`]: super::Acme::issue

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ClientHello;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// The ALPN protocol of TLS-ALPN-01. The https listener must list it in its `alpn_protocols`
/// (or rustls refuses the CA's handshake) and close a connection that negotiated it.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Whether the ClientHello offers exactly `acme-tls/1`, as a CA's TLS-ALPN-01 check does; only
/// then is the challenge certificate served (RFC 8737, section 3).
pub fn is_acme_tls_alpn(hello: &ClientHello<'_>) -> bool {
    hello.alpn().is_some_and(|mut protocols| {
        protocols.next() == Some(ACME_TLS_ALPN) && protocols.next().is_none()
    })
}

/// The challenges being answered right now, shared by the issuer and the listeners. Cheap to
/// clone; lookups take a read lock on small maps.
#[derive(Clone, Default)]
pub struct Challenges {
    inner: Arc<RwLock<Maps>>,
}

#[derive(Default)]
struct Maps {
    /// token -> key authorization (`token.thumbprint`).
    http01: HashMap<String, String>,
    /// lower-case server name -> its challenge certificate.
    tls_alpn01: HashMap<String, Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let maps = self.read();
        f.debug_struct("Challenges")
            .field("http01", &maps.http01.len())
            .field("tls_alpn01", &maps.tls_alpn01.len())
            .finish()
    }
}

impl Challenges {
    pub fn new() -> Challenges {
        Challenges::default()
    }

    /// The body to answer `GET /.well-known/acme-challenge/<token>` with, while it is open.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.read().http01.get(token).cloned()
    }

    /// The certificate to present to a ClientHello for `server_name` whose ALPN is exactly
    /// `acme-tls/1` (see [`is_acme_tls_alpn`]).
    pub fn tls_alpn01(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.to_ascii_lowercase();
        self.read().tls_alpn01.get(&name).cloned()
    }

    /// How many challenges are open (a finished order leaves none behind).
    pub fn open(&self) -> usize {
        let maps = self.read();
        maps.http01.len() + maps.tls_alpn01.len()
    }

    pub(super) fn publish_http01(&self, token: &str, key_authorization: &str) -> Published {
        self.write()
            .http01
            .insert(token.to_owned(), key_authorization.to_owned());
        Published {
            challenges: self.clone(),
            entry: Entry::Http01(token.to_owned()),
        }
    }

    /// Publishes a fresh self-signed certificate for `host` carrying `digest` (the SHA-256 of the
    /// key authorization) in the critical acmeIdentifier extension.
    pub(super) fn publish_tls_alpn01(
        &self,
        host: &str,
        digest: &[u8],
    ) -> Result<Published, String> {
        let name = host.to_ascii_lowercase();
        let certified = challenge_certificate(&name, digest)?;
        self.write().tls_alpn01.insert(name.clone(), certified);
        Ok(Published {
            challenges: self.clone(),
            entry: Entry::TlsAlpn01(name),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One published challenge; dropping it withdraws it.
pub(super) struct Published {
    challenges: Challenges,
    entry: Entry,
}

enum Entry {
    Http01(String),
    TlsAlpn01(String),
}

impl Drop for Published {
    fn drop(&mut self) {
        let mut maps = self.challenges.write();
        match &self.entry {
            Entry::Http01(token) => {
                maps.http01.remove(token);
            }
            Entry::TlsAlpn01(name) => {
                maps.tls_alpn01.remove(name);
            }
        }
    }
}

/// RFC 8737, section 3: self-signed, one DNS name (the host), and the acmeIdentifier extension.
fn challenge_certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    if digest.len() != 32 {
        return Err(format!(
            "a key authorization digest has 32 bytes, not {}",
            digest.len()
        ));
    }
    let failed = |e: rcgen::Error| format!("cannot make the tls-alpn-01 certificate: {e}");
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(failed)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("cannot use the tls-alpn-01 key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31.
    const ACME_IDENTIFIER: &[u8] = &[0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1F];

    #[test]
    fn http01_answers_while_published_and_not_after() {
        let challenges = Challenges::new();
        assert_eq!(challenges.http01("tok"), None);
        let published = challenges.publish_http01("tok", "tok.thumb");
        assert_eq!(
            challenges.clone().http01("tok").as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(challenges.open(), 1);
        drop(published);
        assert_eq!(challenges.http01("tok"), None);
        assert_eq!(challenges.open(), 0);
    }

    #[test]
    fn tls_alpn01_certificate_follows_rfc_8737() {
        let challenges = Challenges::new();
        let digest = [7u8; 32];
        let published = challenges
            .publish_tls_alpn01("API.example.com", &digest)
            .unwrap();
        let certified = challenges.tls_alpn01("api.EXAMPLE.com").unwrap();
        assert_eq!(certified.cert.len(), 1);
        let der = certified.cert[0].as_ref();
        let fields = super::super::der::cert_fields(der).unwrap();
        assert_eq!(fields.dns_names, ["api.example.com"]);
        let extensions = super::super::der::extensions(der).unwrap();
        let acme = extensions
            .iter()
            .find(|e| e.oid == ACME_IDENTIFIER)
            .expect("the acmeIdentifier extension");
        assert!(acme.critical);
        // The extension's value is an OCTET STRING holding the digest.
        let mut expected = vec![0x04, 32];
        expected.extend_from_slice(&digest);
        assert_eq!(acme.value, expected.as_slice());
        drop(published);
        assert!(challenges.tls_alpn01("api.example.com").is_none());
    }

    #[test]
    fn a_wrong_digest_length_is_refused() {
        let err = Challenges::new()
            .publish_tls_alpn01("a.example", &[0; 20])
            .err()
            .unwrap();
        assert!(err.contains("32 bytes"), "{err}");
    }
}
