//! TLS material for tests: a throwaway CA of the test's own that issues leaf certificates, and
//! fingerprints to tell which leaf a handshake got.

use rustls::pki_types::{pem::PemObject, CertificateDer};
use sha2::{Digest, Sha256};
use std::path::Path;

/// A certificate for `hosts` signed by a new throwaway CA: (ca.pem, cert.pem, key.pem) in `dir`.
pub fn certificate(dir: &Path, hosts: &[&str]) {
    TestCa::new(dir).issue(dir, hosts);
}

/// SHA-256 of a certificate's DER: which leaf a handshake got.
pub type Fingerprint = [u8; 32];

pub fn fingerprint(der: &[u8]) -> Fingerprint {
    Sha256::digest(der).into()
}

/// The fingerprint of the first certificate in a PEM file (the leaf of a chain).
pub fn leaf_of_pem_file(path: &Path) -> Fingerprint {
    let pem = std::fs::read(path).unwrap();
    let leaf = CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a certificate in the file")
        .unwrap();
    fingerprint(&leaf)
}

/// A throwaway CA that issues the test's certificates: a renewal is a new leaf (new key) from
/// the same CA, as a real one would be, so clients trusting the CA accept both.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    /// A new CA; its certificate is written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Issuer and subject must differ, or a client takes the leaf for self-signed.
        params
            .distinguished_name
            .push(DnType::CommonName, "cutover test CA");
        let cert = params.self_signed(&key).unwrap();
        write_whole(&dir.join("ca.pem"), &cert.pem());
        TestCa { cert, key }
    }

    /// A leaf for `hosts` with a key of its own, written to `dir/cert.pem` and `dir/key.pem`
    /// (each file replaced whole: the daemon may read them at any moment). Returns the leaf's
    /// fingerprint.
    pub fn issue(&self, dir: &Path, hosts: &[&str]) -> Fingerprint {
        let leaf = self.leaf(hosts);
        write_whole(&dir.join("key.pem"), &leaf.key_pem);
        write_whole(&dir.join("cert.pem"), &leaf.cert_pem);
        leaf.fingerprint
    }

    /// A leaf for `hosts` with a key of its own, not written anywhere.
    pub fn leaf(&self, hosts: &[&str]) -> Leaf {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, hosts[0]);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: fingerprint(cert.der()),
        }
    }
}

/// A certificate and its key, as PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: Fingerprint,
}

/// Replaces `path` by `text` in one rename: a reader sees the old file or the new, never half.
pub fn write_whole(path: &Path, text: &str) {
    let new = path.with_extension("pem.new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}
