//! The certificates under `data_dir/certs/<name>/{cert.pem,key.pem}`, loaded at start, replaced
//! by each issuance, and looked up by SNI name on every handshake (one atomic load of an index
//! from lower-case DNS name, `*.example.com` included, to its certificate).

use super::der;
use super::error::{io_err, AcmeError};
use super::files::{private_dir, write_private};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// One certificate as served.
#[derive(Clone)]
pub struct StoredCert {
    /// Its directory under `certs/`: the first host it was ordered for.
    pub name: String,
    /// The DNS names it covers (its subjectAltName), lower case.
    pub hosts: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The chain (leaf first) and its signing key, ready for rustls.
    pub certified: Arc<CertifiedKey>,
}

impl std::fmt::Debug for StoredCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCert")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Cheap to clone; every clone sees the same certificates.
#[derive(Clone)]
pub struct CertStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("dir", &self.inner.dir)
            .field("certs", &self.certs().keys().collect::<Vec<_>>())
            .finish()
    }
}

struct Inner {
    dir: PathBuf,
    /// By name (directory); the source of truth for `index`.
    certs: Mutex<BTreeMap<String, StoredCert>>,
    /// By DNS name, rebuilt from `certs` after each change; read on every handshake.
    index: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// Directories found at load that could not be used, with why (a reissue replaces them).
    load_errors: Mutex<BTreeMap<String, String>>,
}

impl CertStore {
    /// Loads every certificate under `data_dir/certs`. One that cannot be used (missing file,
    /// key not matching, not PEM) is left out and reported by [`Self::load_error`]; only an
    /// unreadable `certs` directory fails the load.
    pub fn load(data_dir: &Path) -> Result<CertStore, AcmeError> {
        let dir = data_dir.join("certs");
        let mut certs = BTreeMap::new();
        let mut load_errors = BTreeMap::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io_err("list", &dir))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') || !entry.path().is_dir() {
                        continue;
                    }
                    match read_dir_cert(&entry.path(), &name) {
                        Ok(cert) => {
                            certs.insert(name, cert);
                        }
                        Err(why) => {
                            tracing::warn!(certificate = %name, "stored certificate not loaded: {why}");
                            load_errors.insert(name, why);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("list", &dir)(e)),
        }
        let store = CertStore {
            inner: Arc::new(Inner {
                dir,
                certs: Mutex::new(BTreeMap::new()),
                index: ArcSwap::from_pointee(HashMap::new()),
                load_errors: Mutex::new(load_errors),
            }),
        };
        store.update(|all| *all = certs);
        Ok(store)
    }

    /// `data_dir/certs`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The certificate for a ClientHello's SNI name: the exact name, else a `*.` wildcard for
    /// its parent (one label deep, as TLS clients match).
    pub fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        let index = self.inner.index.load();
        if let Some(found) = index.get(&name) {
            return Some(found.clone());
        }
        let (_, parent) = name.split_once('.')?;
        index.get(&format!("*.{parent}")).cloned()
    }

    /// The certificate stored under `name`.
    pub fn get(&self, name: &str) -> Option<StoredCert> {
        self.certs().get(name).cloned()
    }

    /// Every stored certificate, by name.
    pub fn list(&self) -> Vec<StoredCert> {
        self.certs().values().cloned().collect()
    }

    /// Why the certificate under `name` was not loaded at start, until one replaces it.
    pub fn load_error(&self, name: &str) -> Option<String> {
        self.load_errors().get(name).cloned()
    }

    /// Checks the PEMs, writes them under `certs/<name>/` (0600, each file atomically; the key
    /// first, so a crash in between leaves a pair that fails to load and is issued again, never
    /// a certificate served with the wrong key), then serves them.
    pub(super) fn save(
        &self,
        name: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<StoredCert, AcmeError> {
        let cert = parse(name, chain_pem.as_bytes(), key_pem.as_bytes()).map_err(|reason| {
            AcmeError::Certificate {
                hosts: name.to_owned(),
                reason: format!("the issued certificate is not usable: {reason}"),
            }
        })?;
        let dir = self.inner.dir.join(name);
        private_dir(&dir)?;
        write_private(&dir.join(KEY_FILE), key_pem.as_bytes())?;
        write_private(&dir.join(CERT_FILE), chain_pem.as_bytes())?;
        self.update(|all| {
            all.insert(name.to_owned(), cert.clone());
        });
        self.load_errors().remove(name);
        Ok(cert)
    }

    /// Changes the certificates and publishes the new index, under one lock so that two
    /// changes never lose one another.
    fn update(&self, change: impl FnOnce(&mut BTreeMap<String, StoredCert>)) {
        let mut certs = self.certs();
        change(&mut certs);
        // A name in two certificates: the one valid longest wins.
        let mut index: HashMap<String, (SystemTime, Arc<CertifiedKey>)> = HashMap::new();
        for cert in certs.values() {
            for host in &cert.hosts {
                let newer = index
                    .get(host)
                    .is_none_or(|(not_after, _)| cert.not_after > *not_after);
                if newer {
                    index.insert(host.clone(), (cert.not_after, cert.certified.clone()));
                }
            }
        }
        let index = index.into_iter().map(|(h, (_, c))| (h, c)).collect();
        self.inner.index.store(Arc::new(index));
    }

    fn certs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StoredCert>> {
        self.inner
            .certs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn load_errors(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.inner
            .load_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn read_dir_cert(dir: &Path, name: &str) -> Result<StoredCert, String> {
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    parse(name, &read(CERT_FILE)?, &read(KEY_FILE)?)
}

/// A chain and key as rustls serves them, with the leaf's validity and names.
pub(super) fn parse(name: &str, chain_pem: &[u8], key_pem: &[u8]) -> Result<StoredCert, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{CERT_FILE} is not PEM certificates: {e}"))?;
    let leaf = chain
        .first()
        .ok_or_else(|| format!("{CERT_FILE} holds no certificate"))?;
    let fields = der::cert_fields(leaf.as_ref()).map_err(|e| format!("{CERT_FILE}: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("{KEY_FILE} is not a PEM private key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{KEY_FILE}: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(format!("{KEY_FILE} is not the key of {CERT_FILE}")),
    }
    Ok(StoredCert {
        name: name.to_owned(),
        hosts: fields
            .dns_names
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        not_before: fields.not_before,
        not_after: fields.not_after,
        certified: Arc::new(certified),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn saved_certificates_are_0600_served_by_name_and_loaded_again() {
        let data = tempfile::tempdir().unwrap();
        let store = CertStore::load(data.path()).unwrap();
        assert!(store.list().is_empty());
        let (cert, key) = self_signed(&["api.example.com", "*.apps.example.com"]);
        store.save("api.example.com", &cert, &key).unwrap();
        for file in ["cert.pem", "key.pem"] {
            let path = data.path().join("certs/api.example.com").join(file);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
        assert!(store.lookup("API.example.com").is_some());
        assert!(store.lookup("one.apps.example.com").is_some());
        assert!(store.lookup("deep.one.apps.example.com").is_none());
        assert!(store.lookup("apps.example.com").is_none());
        assert!(store.lookup("other.example.com").is_none());

        let again = CertStore::load(data.path()).unwrap();
        let loaded = again.get("api.example.com").unwrap();
        assert_eq!(loaded.hosts, ["api.example.com", "*.apps.example.com"]);
        assert_eq!(
            loaded.certified.cert,
            store.get("api.example.com").unwrap().certified.cert
        );
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let store = CertStore::load(data.path()).unwrap();
        let (cert, _) = self_signed(&["a.example"]);
        let (_, other_key) = self_signed(&["a.example"]);
        let err = store.save("a.example", &cert, &other_key).unwrap_err();
        assert!(err.to_string().contains("not the key"), "{err}");
        assert!(!data.path().join("certs/a.example").exists());
    }

    #[test]
    fn an_unusable_directory_is_reported_and_the_others_load() {
        let data = tempfile::tempdir().unwrap();
        let store = CertStore::load(data.path()).unwrap();
        let (cert, key) = self_signed(&["good.example"]);
        store.save("good.example", &cert, &key).unwrap();
        std::fs::create_dir_all(data.path().join("certs/broken.example")).unwrap();
        std::fs::write(data.path().join("certs/broken.example/cert.pem"), "junk").unwrap();

        let again = CertStore::load(data.path()).unwrap();
        assert!(again.lookup("good.example").is_some());
        let why = again.load_error("broken.example").unwrap();
        assert!(why.contains("key.pem"), "{why}");
        assert_eq!(again.load_error("good.example"), None);
    }
}
