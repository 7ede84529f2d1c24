//! Instance logs: the files a release's stdout and stderr go to (so an instance outlives a
//! daemon crash), kept bounded while the daemon runs, and read back for `cutover logs`.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Spawns the task that keeps instance logs bounded: it checks every live instance's log every
/// 10 s.
pub fn rotate_logs(
    store: crate::store::Store,
    max: crate::live::LiveCount,
    mut shutdown: crate::shutdown::Shutdown,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
                _ = shutdown.wait() => return,
            }
            for instance in store.live_instances().unwrap_or_default() {
                let path = Path::new(&instance.log_path);
                match rotate_log(path, max.get()) {
                    Ok(true) => tracing::info!(log = %path.display(), "rotated instance log"),
                    Ok(false) => {}
                    Err(e) => tracing::debug!(log = %path.display(), "cannot rotate: {e}"),
                }
            }
        }
    });
}

/// Rotates an instance log that grew past `max`: copy to `<log>.1`, then truncate in place.
/// Copy-then-truncate because the instance holds the file open in append mode (and must keep
/// it across a daemon crash): its next write lands at the new end. Lines written between the
/// copy and the truncation are lost; that is the price of never signalling the app.
pub fn rotate_log(path: &Path, max: u64) -> io::Result<bool> {
    if fs::metadata(path)?.len() <= max {
        return Ok(false);
    }
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    fs::copy(path, &rotated)?;
    fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// The last `lines` lines of a file, reading at most 64 KiB from its end.
pub fn tail_lines(path: &Path, lines: usize) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail_lines(&path, 2).unwrap(), "c\nd");
        assert_eq!(tail_lines(&path, 10).unwrap(), "a\nb\nc\nd");
    }
}
