//! What a bundle looks like once unpacked, for messages: the most common packaging mistake is
//! an archive of a directory (`tar -czf app.tar.gz app`), whose files then all sit one level
//! below `{release_dir}`.

use super::ReleaseError;
use crate::bundle::BundleError;
use std::path::Path;

/// The program a process component's command names inside a bundle must be there and be
/// executable; when it is missing from a bundle that holds a single directory, say so.
pub fn check_bundle_program(bundle_dir: &Path, program: &Path) -> Result<(), ReleaseError> {
    match super::check_program(program) {
        Err(ReleaseError::Missing(missing)) => {
            let Some(top) = single_top_level_dir(bundle_dir) else {
                return Err(ReleaseError::Missing(missing));
            };
            let relative = program.strip_prefix(bundle_dir).unwrap_or(program);
            let inside = Path::new(&top).join(relative);
            let found_inside = bundle_dir.join(&inside).is_file();
            Err(BundleError::OneTopLevelDirectory {
                program: missing,
                top,
                suggestion: found_inside.then(|| inside.display().to_string()),
            }
            .into())
        }
        other => other,
    }
}

/// The name of the only entry of `dir`, when that entry is a directory.
pub fn single_top_level_dir(dir: &Path) -> Option<String> {
    let mut entries = std::fs::read_dir(dir).ok()?;
    let only = entries.next()?.ok()?;
    if entries.next().is_some() || !only.file_type().ok()?.is_dir() {
        return None;
    }
    Some(only.file_name().to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_of_one_directory_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path();
        std::fs::create_dir_all(bundle.join("app/bin")).unwrap();
        let start = bundle.join("app/bin/start");
        std::fs::write(&start, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&start, std::fs::Permissions::from_mode(0o755)).unwrap();
        let error = check_bundle_program(bundle, &bundle.join("bin/start"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("only top-level entry is the directory app/"),
            "{error}"
        );
        assert!(error.contains("`{release_dir}/app/bin/start`"), "{error}");

        // Two entries: nothing to guess, the plain message.
        std::fs::write(bundle.join("README"), "").unwrap();
        let error = check_bundle_program(bundle, &bundle.join("bin/start"))
            .unwrap_err()
            .to_string();
        assert!(error.ends_with("bin/start does not exist"), "{error}");
    }
}
