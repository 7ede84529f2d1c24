//! `GET /visits` and `POST /visits`: the one endpoint that uses the database, through the
//! `visits` table that `migrations/` creates. Shipped in the same bundle as the binary, the
//! migrations and the code that needs them always match.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// One lazily (re)opened connection: enough for a demo, and it survives a database restart.
pub struct Visits {
    url: Option<String>,
    client: Mutex<Option<Client>>,
}

impl Visits {
    pub fn from_env() -> Visits {
        Visits {
            url: std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()),
            client: Mutex::new(None),
        }
    }

    /// Records a visit by `release` (when `record`) and returns the number of visits so far.
    pub async fn count(&self, release: &str, record: bool) -> Result<i64, String> {
        let Some(url) = &self.url else {
            return Err("DATABASE_URL is not set".into());
        };
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            let connect = tokio_postgres::connect(url, NoTls);
            let (client, connection) = tokio::time::timeout(Duration::from_secs(2), connect)
                .await
                .map_err(|_| "database connect timed out".to_string())?
                .map_err(|e| {
                    format!(
                        "database connect failed: {}",
                        e.as_db_error()
                            .map_or_else(|| "unreachable".into(), |d| d.message().to_owned())
                    )
                })?;
            tokio::spawn(connection);
            *slot = Some(client);
        }
        let client = slot.as_ref().expect("connected above");
        if record {
            client
                .execute("INSERT INTO visits (release) VALUES ($1)", &[&release])
                .await
                .map_err(|e| e.to_string())?;
        }
        let row = client
            .query_one("SELECT count(*) FROM visits", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    }
}
