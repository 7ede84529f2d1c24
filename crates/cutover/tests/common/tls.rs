//! TLS material for tests: certificates signed by a throwaway CA of the test's own.

use std::path::Path;

/// A certificate for `hosts` signed by a throwaway CA: (ca.pem, cert.pem, key.pem) in `dir`.
pub fn certificate(dir: &Path, hosts: &[&str]) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Issuer and subject must differ, or a client takes the leaf for self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cutover test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, hosts[0]);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    // Each file whole or not at all: the daemon may read them at any moment.
    for (name, text) in [
        ("ca.pem", ca.pem()),
        ("cert.pem", cert.pem()),
        ("key.pem", key.serialize_pem()),
    ] {
        std::fs::write(dir.join(format!("{name}.new")), text).unwrap();
        std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).unwrap();
    }
}
