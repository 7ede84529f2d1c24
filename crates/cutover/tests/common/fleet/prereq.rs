//! What a fleet needs of this machine: root, iproute2 and OpenSSH.

use std::path::{Path, PathBuf};

/// What a fleet needs of this machine, or what is missing.
pub fn check() -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (network namespaces and sshd need it)".into());
    }
    let mut missing = Vec::new();
    for (program, package) in [
        ("ip", "iproute2"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
    ] {
        if which(program).is_none() {
            missing.push(format!("{program} ({package})"));
        }
    }
    if !Path::new(super::ssh::SSHD).is_file() {
        missing.push(format!("{} (openssh-server)", super::ssh::SSHD));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing {}; scripts/test installs them",
            missing.join(", ")
        ))
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
