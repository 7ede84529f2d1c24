//! The other direction: a directory artifact packed into a tar archive, to send it to a daemon
//! (over the control socket, or over ssh to a fleet host) as one file.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

/// Writes `dir`'s contents (at the archive's top, links kept as links for the receiving daemon
/// to check) into `file`, and syncs it.
pub fn pack_directory(dir: &Path, file: File) -> io::Result<()> {
    let mut builder = tar::Builder::new(BufWriter::new(file));
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    builder
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
}
