//! Commands run inside a host's namespace, and stopping the long-lived ones.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `ip netns exec NS PROGRAM`: the network namespace, plus a mount namespace in which the
/// entries of /etc/netns/NS are bound over /etc (the host's own config directory).
pub fn in_namespace(ns: &str, program: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, program]);
    command
}

/// Like `in_namespace`, for a server: it gets SIGTERM if the thread that started it dies, so a
/// test process killed before its teardown leaves no daemon or sshd running (`ip` execs the
/// program, which keeps the parent-death signal).
pub fn server_in_namespace(ns: &str, program: &str) -> Command {
    let mut command = in_namespace(ns, program);
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// SIGTERM, then SIGKILL if `child` is still there after `grace`; always reaps it.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "fleet teardown: pid {} ignored SIGTERM for {grace:?}; killing it",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
}
