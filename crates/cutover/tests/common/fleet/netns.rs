//! A host's network: a namespace joined to the root namespace by a veth pair, 10.231.X.1 on
//! the root side and 10.231.X.2 inside, loopback up (instances listen on 127.0.0.1 there).

use super::slot::Slot;
use std::process::Command;

/// Why a host's network could not be made; `Unsupported` when the very first step fails
/// (no `ip`, no namespace support), which is an environment a test may skip on.
pub enum NetError {
    Unsupported(String),
    Failed(String),
}

pub fn create(slot: Slot) -> Result<(), NetError> {
    let ns = slot.namespace();
    run(&["netns", "add", &ns]).map_err(NetError::Unsupported)?;
    let (root_end, host_end) = (slot.veth_root(), slot.veth_host());
    let root_cidr = format!("{}/24", slot.root_ip());
    let host_cidr = format!("{}/24", slot.host_ip());
    let steps: [&[&str]; 7] = [
        &[
            "link", "add", &root_end, "type", "veth", "peer", "name", &host_end,
        ],
        &["link", "set", &host_end, "netns", &ns],
        &["addr", "add", &root_cidr, "dev", &root_end],
        &["link", "set", &root_end, "up"],
        &["-n", &ns, "addr", "add", &host_cidr, "dev", &host_end],
        &["-n", &ns, "link", "set", &host_end, "up"],
        &["-n", &ns, "link", "set", "lo", "up"],
    ];
    for step in steps {
        run(step).map_err(NetError::Failed)?;
    }
    Ok(())
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
