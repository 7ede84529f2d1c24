//! `[daemon]` and `[edge]`, and what `serve` would fail on, caught by `validate` (issue 12):
//! public addresses that overlap, a control socket path it cannot bind.

use super::*;

#[test]
fn connection_limits_have_defaults_and_are_checked() {
    let config = parse(&format!("[daemon]\n{}", component("a", "127.0.0.1:9", ""))).unwrap();
    assert_eq!(config.daemon.max_connections, None);
    assert_eq!(
        config.daemon.body_read_timeout.get(),
        Duration::from_secs(30)
    );
    let set = parse(&format!(
        "[daemon]\nmax_connections = 500\nbody_read_timeout = \"5s\"\n{}",
        component("a", "127.0.0.1:9", "")
    ))
    .unwrap();
    assert_eq!(set.daemon.max_connections, Some(500));
    assert_eq!(set.daemon.body_read_timeout.get(), Duration::from_secs(5));
    check_error(
        &format!(
            "[daemon]\nmax_connections = 0\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: daemon.max_connections: must be at least 1 (leave it out to \
         derive it from the fd limit)",
    );
    check_error(
        &format!(
            "[daemon]\nbody_read_timeout = \"0s\"\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: daemon.body_read_timeout: must be more than 0s",
    );
}

#[test]
fn proxy_threads_default_to_none_and_are_checked() {
    let config = parse(&format!("[daemon]\n{}", component("a", "127.0.0.1:9", ""))).unwrap();
    assert_eq!(config.daemon.proxy_threads, None);
    let set = parse(&format!(
        "[daemon]\nproxy_threads = 4\n{}",
        component("a", "127.0.0.1:9", "")
    ))
    .unwrap();
    assert_eq!(set.daemon.proxy_threads, Some(4));
    check_error(
        &format!(
            "[daemon]\nproxy_threads = 0\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: daemon.proxy_threads: must be at least 1 (leave it out for \
         half the CPUs, at least 1)",
    );
    check_error(
        &format!(
            "[daemon]\nproxy_threads = 1000\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: daemon.proxy_threads: must be at most 256",
    );
}

#[test]
fn duplicate_listen_is_rejected() {
    check_error(
        "[components.a]\nlisten = \"127.0.0.1:9\"\ncommand = [\"x\"]\n\
         [components.b]\nlisten = \"127.0.0.1:9\"\ncommand = [\"x\"]\n",
        "/srv/app/cutover.toml:5:1: components.b.listen: 127.0.0.1:9 is already the listen address of a",
    );
}

#[test]
fn overlapping_listen_addresses_are_rejected() {
    check_error(
        &format!(
            "{}{}",
            component("a", "0.0.0.0:9", ""),
            component("b", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:5:1: components.b.listen: 127.0.0.1:9 overlaps 0.0.0.0:9, the \
         listen address of a (one port, and an unspecified address takes it on every address)",
    );
    // [::] is dual-stack on Linux: it takes IPv4 addresses too.
    check_error(
        &format!(
            "{}{}",
            component("a", "127.0.0.1:9", ""),
            component("b", "[::]:9", "")
        ),
        "/srv/app/cutover.toml:5:1: components.b.listen: [::]:9 overlaps 127.0.0.1:9, the \
         listen address of a (one port, and an unspecified address takes it on every address)",
    );
    // Different ports, or two specific addresses, are fine.
    parse(&format!(
        "{}{}{}",
        component("a", "0.0.0.0:9", ""),
        component("b", "127.0.0.1:10", ""),
        component("c", "127.0.0.2:10", "")
    ))
    .unwrap();
}

#[test]
fn admin_listen_may_not_take_a_component_address() {
    check_error(
        &format!(
            "[daemon]\nadmin_listen = \"0.0.0.0:9\"\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: daemon.admin_listen: 0.0.0.0:9 overlaps 127.0.0.1:9, the \
         listen address of a (one port, and an unspecified address takes it on every address)",
    );
    check_error(
        &format!(
            "[daemon]\nadmin_listen = \"127.0.0.1:9\"\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: daemon.admin_listen: 127.0.0.1:9 is already the listen \
         address of a",
    );
}

#[test]
fn control_socket_longer_than_sun_path_is_rejected() {
    let long = format!("/run/{}/control.sock", "d".repeat(100));
    check_error(
        &format!(
            "[daemon]\ncontrol_socket = \"{long}\"\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        &format!(
            "/srv/app/cutover.toml:2:1: daemon.control_socket: control socket path {long} is \
             {} bytes; a unix socket path holds at most 107",
            long.len()
        ),
    );
    // The default socket lives in data_dir: then data_dir is what to shorten.
    let data_dir = format!("/var/lib/{}", "d".repeat(100));
    let err = parse(&format!(
        "[daemon]\ndata_dir = \"{data_dir}\"\n{}",
        component("a", "127.0.0.1:9", "")
    ))
    .unwrap_err();
    assert!(
        err.starts_with("/srv/app/cutover.toml:2:1: daemon.data_dir: control socket path "),
        "{err}"
    );
}

#[test]
fn control_socket_on_an_existing_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.toml");
    let text = format!(
        "[daemon]\ncontrol_socket = \"cutover.toml\"\n{}",
        component("a", "127.0.0.1:9", "")
    );
    std::fs::write(&path, &text).unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:2:1: daemon.control_socket: {} exists and is not a socket; a control socket \
             needs a path of its own",
            path.display(),
            path.display()
        )
    );
    // A link is judged as a link, never followed (even to a socket).
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let text = text.replace("cutover.toml\"", "link.sock\"");
    std::fs::write(&path, &text).unwrap();
    assert!(Config::load(&path)
        .unwrap_err()
        .to_string()
        .contains("is not a socket"));
    // A socket (a stale one, or the running daemon's) is fine.
    let socket = dir.path().join("live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::write(&path, text.replace("link.sock\"", "live.sock\"")).unwrap();
    Config::load(&path).unwrap();
}

#[test]
fn a_config_without_components_is_an_error() {
    check_error(
        "[daemon]\ndata_dir = \".cutover\"\n",
        "/srv/app/cutover.toml:1:1: components: no components configured; add a \
         [components.NAME] table with at least `listen` and `command`",
    );
}

#[test]
fn edge_trusted_proxies_are_networks() {
    let config = parse(&format!(
        "[edge]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"fd00::/8\"]\n{}",
        component("a", "127.0.0.1:9", "")
    ))
    .unwrap();
    assert!(config.edge.trusts("10.9.8.7".parse().unwrap()));
    assert!(config.edge.trusts("192.0.2.7".parse().unwrap()));
    assert!(!config.edge.trusts("192.0.2.8".parse().unwrap()));
    check_error(
        &format!(
            "[edge]\ntrusted_proxies = [\"10.0.0.0/33\"]\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: edge.trusted_proxies: invalid network \"10.0.0.0/33\"; write a \
         CIDR like \"10.0.0.0/8\" or an address like \"192.0.2.7\"",
    );
}
