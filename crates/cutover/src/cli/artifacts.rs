//! `--artifact` for `cutover deploy`: which component each path belongs to, and sending the
//! files to the daemon (a directory as a tar archive).

use super::client::Client;
use crate::config::Config;
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `--artifact PATH` (one component) or `--artifact COMPONENT=PATH`, made absolute.
pub(super) fn parse(
    config: &Config,
    components: &[String],
    given: &[String],
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let targets: Vec<String> = if crate::protocol::names_all(components) {
        config
            .components
            .iter()
            .map(|c| c.name.to_string())
            .collect()
    } else {
        components.to_vec()
    };
    let mut artifacts = BTreeMap::new();
    for item in given {
        let (name, path) = match item.split_once('=') {
            Some((name, path)) if config.component(name).is_some() => (name.to_owned(), path),
            _ => match targets.as_slice() {
                [only] => (only.clone(), item.as_str()),
                _ => anyhow::bail!(
                    "--artifact {item}: with several components, write COMPONENT=PATH (components: {})",
                    targets.join(", ")
                ),
            },
        };
        let path =
            std::path::absolute(path).with_context(|| format!("bad artifact path {path}"))?;
        if artifacts.insert(name.clone(), path).is_some() {
            anyhow::bail!("two artifacts given for {name}");
        }
    }
    Ok(artifacts)
}

/// Sends one artifact to the daemon: a file as it is, a directory as a tar archive (links kept
/// as links, for the daemon to check).
pub(super) async fn upload(client: &Client, path: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow::anyhow!("artifact {} does not exist", path.display())
        }
        _ => anyhow::anyhow!("cannot read artifact {}: {e}", path.display()),
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact".into());
    if meta.is_dir() {
        let tar = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
        let dir = path.to_owned();
        let file = tar.reopen()?;
        tokio::task::spawn_blocking(move || crate::bundle::pack_directory(&dir, file)).await??;
        return Ok(client
            .upload(tar.path(), &format!("{name}.tar"), 0o644)
            .await?);
    }
    Ok(client
        .upload(path, &name, meta.permissions().mode() & 0o777)
        .await?)
}
