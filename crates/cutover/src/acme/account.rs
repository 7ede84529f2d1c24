//! The ACME account: created on first use, its URL and private key kept in
//! `data_dir/acme/account.json` (0600), reused by every later order and every later start.

use super::error::AcmeError;
use super::files::{private_dir, write_private};
use super::AcmeConfig;
use instant_acme::{Account, AccountCredentials, HttpClient, NewAccount};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Serialize, Deserialize)]
struct AccountFile {
    /// The directory the account belongs to: another directory (a changed config, staging to
    /// production) needs another account.
    directory: String,
    /// instant-acme's own form: the account URL and its PKCS#8 key.
    credentials: AccountCredentials,
}

/// The stored account when it belongs to `config.directory`, else a new one (stored before it
/// is returned, so a crash right after never orphans it).
pub(super) async fn load_or_create(
    config: &AcmeConfig,
    path: &Path,
    http: Box<dyn HttpClient>,
) -> Result<Account, AcmeError> {
    let account_err = |source| AcmeError::Account {
        directory: config.directory.clone(),
        source,
    };
    if let Some(stored) = read(path)? {
        if stored.directory == config.directory {
            return Account::builder_with_http(http)
                .from_credentials(stored.credentials)
                .await
                .map_err(account_err);
        }
        tracing::info!(
            old = %stored.directory,
            new = %config.directory,
            "the ACME directory changed; creating an account there"
        );
    }
    let contact = config.email.as_ref().map(|email| format!("mailto:{email}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = Account::builder_with_http(http)
        .create(&new, config.directory.clone(), None)
        .await
        .map_err(account_err)?;
    let file = AccountFile {
        directory: config.directory.clone(),
        credentials,
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| AcmeError::AccountFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    write_private(path, &json)?;
    tracing::info!(directory = %config.directory, id = %account.id(), "ACME account created");
    Ok(account)
}

fn read(path: &Path) -> Result<Option<AccountFile>, AcmeError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AcmeError::AccountFile {
                path: path.to_path_buf(),
                reason: format!("cannot read it: {e}"),
            })
        }
    };
    // A file that does not parse is not replaced: it may hold the only copy of a key.
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AcmeError::AccountFile {
            path: path.to_path_buf(),
            reason: format!("not an account file ({e}); move it away to create a new account"),
        })
}
