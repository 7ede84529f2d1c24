//! A host's cutover.toml, kept as TOML data: the `[daemon]` dirs of that host, and one
//! `backend` component on the host's public address. Changes (`set_env`) edit the data and
//! the whole file is written again, so no test depends on how the text happens to look.

use std::net::SocketAddr;
use std::path::Path;
use toml::{Table, Value};

#[derive(Clone)]
pub struct HostConfig {
    table: Table,
}

impl HostConfig {
    /// `component`: the backend's TOML lines (e.g. `common::FAST_COMPONENT`).
    pub fn new(data_dir: &Path, listen: SocketAddr, component: &str) -> Result<Self, String> {
        let mut backend: Table = component
            .parse()
            .map_err(|e| format!("the component lines are not TOML: {e}"))?;
        backend.insert("listen".into(), listen.to_string().into());
        let mut components = Table::new();
        components.insert("backend".into(), backend.into());
        let mut table = Table::new();
        table.insert("daemon".into(), daemon_table(data_dir).into());
        table.insert("components".into(), components.into());
        Ok(HostConfig { table })
    }

    /// Adds (or replaces) `KEY = "value"` in the backend's `env`.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let backend = self
            .components_mut()
            .get_mut("backend")
            .and_then(Value::as_table_mut)
            .expect("components.backend is a table");
        let env = backend.entry("env").or_insert(Table::new().into());
        env.as_table_mut()
            .expect("components.backend.env is a table")
            .insert(key.into(), value.into());
    }

    /// The operator's config: these components, its own `data_dir`, and a `[fleet]` table of
    /// `fleet` plus the keys in `fleet_extra` (TOML lines; they win over `fleet`).
    pub fn operator(
        &self,
        data_dir: &Path,
        fleet: Table,
        fleet_extra: &str,
    ) -> Result<String, String> {
        let extra: Table = fleet_extra
            .parse()
            .map_err(|e| format!("fleet_extra is not TOML: {e}"))?;
        let mut fleet = fleet;
        fleet.extend(extra);
        let mut table = self.table.clone();
        table.insert("daemon".into(), daemon_table(data_dir).into());
        table.insert("fleet".into(), fleet.into());
        toml::to_string(&table).map_err(|e| e.to_string())
    }

    pub fn render(&self) -> String {
        toml::to_string(&self.table).expect("a TOML table renders")
    }

    /// Writes the file whole (a temp file renamed over it: a reader never sees half of it).
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let temp = path.with_extension("toml.new");
        std::fs::write(&temp, self.render())
            .and_then(|()| std::fs::rename(&temp, path))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    fn components_mut(&mut self) -> &mut Table {
        self.table
            .get_mut("components")
            .and_then(Value::as_table_mut)
            .expect("components is a table")
    }
}

fn daemon_table(data_dir: &Path) -> Table {
    let mut daemon = Table::new();
    daemon.insert("data_dir".into(), data_dir.display().to_string().into());
    daemon.insert(
        "control_socket".into(),
        data_dir.join("control.sock").display().to_string().into(),
    );
    daemon
}
