//! Static components: what cutover's file server answers, and atomic switches under load.

mod common;

use common::*;
use cutover::loadgen::{ClientKind, Load};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FRONTEND: &str = r#"
kind = "static"
spa_fallback = "index.html"
cache = [ { glob = "assets/**", control = "public, max-age=31536000, immutable" } ]
"#;

fn start() -> Daemon {
    Daemon::start_with_config(&format!(
        "[daemon]\ndata_dir = \".cutover\"\n[components.frontend]\nlisten = \"127.0.0.1:0\"\n{FRONTEND}"
    ))
}

/// Raw request; returns (status, header block, body bytes).
fn request(addr: SocketAddr, head: &str) -> (u16, String, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "{head}\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    (status, headers, raw[split + 4..].to_vec())
}

/// A header's value, by case-insensitive name.
fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// A site as a .tar.gz with an index, assets (and precompressed siblings) and a sub-directory.
fn site_archive(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join(format!("site-{version}.tar.gz"));
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        tar.append_data(&mut header, name, data).unwrap();
    };
    add(
        "index.html",
        format!("<h1>site {version}</h1>\n").as_bytes(),
    );
    add("docs/index.html", b"<h1>docs</h1>\n");
    add("assets/app.js", b"console.log('0123456789');\n");
    let mut gz_js = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz_js.write_all(b"console.log('0123456789');\n").unwrap();
    add("assets/app.js.gz", &gz_js.finish().unwrap());
    // Not real brotli: the server only picks the sibling by name; the test compares bytes.
    add("assets/app.js.br", b"BROTLI-BYTES");
    add(
        "assets/logo.svg",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    );
    tar.into_inner().unwrap().finish().unwrap();
    path
}

#[test]
fn serves_files_like_a_real_static_server() {
    let daemon = start();
    let site = site_archive(daemon.dir.path(), "v1");
    let out = daemon.cli(&[
        "deploy",
        "frontend",
        "--release",
        "v1",
        "--artifact",
        site.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let addr = daemon.public;

    let (status, headers, body) = request(addr, "GET / HTTP/1.1");
    assert_eq!(status, 200);
    assert_eq!(body, b"<h1>site v1</h1>\n");
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
    assert_eq!(header(&headers, "x-release"), Some("v1"));
    let etag = header(&headers, "etag").unwrap().to_owned();
    let modified = header(&headers, "last-modified").unwrap().to_owned();
    assert_eq!(
        modified, "Tue, 14 Nov 2023 22:13:20 GMT",
        "the archive's mtime is kept"
    );

    // Conditional GET.
    let (status, _, body) = request(addr, &format!("GET / HTTP/1.1\r\nIf-None-Match: {etag}"));
    assert_eq!((status, body.len()), (304, 0));
    let (status, _, _) = request(
        addr,
        &format!("GET / HTTP/1.1\r\nIf-Modified-Since: {modified}"),
    );
    assert_eq!(status, 304);
    let (status, _, _) = request(addr, "GET / HTTP/1.1\r\nIf-None-Match: \"other\"");
    assert_eq!(status, 200);

    // HEAD: headers, no body.
    let (status, headers, body) = request(addr, "HEAD /assets/app.js HTTP/1.1");
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(header(&headers, "content-length"), Some("27"));
    assert_eq!(
        header(&headers, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(header(&headers, "content-type")
        .unwrap()
        .contains("javascript"));

    // Range.
    let (status, headers, body) = request(addr, "GET /assets/app.js HTTP/1.1\r\nRange: bytes=0-6");
    assert_eq!((status, body.as_slice()), (206, b"console".as_slice()));
    assert_eq!(header(&headers, "content-range"), Some("bytes 0-6/27"));
    let (status, _, body) = request(addr, "GET /assets/app.js HTTP/1.1\r\nRange: bytes=-3");
    assert_eq!((status, body.as_slice()), (206, b");\n".as_slice()));
    let (status, headers, _) = request(addr, "GET /assets/app.js HTTP/1.1\r\nRange: bytes=500-");
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "content-range"), Some("bytes */27"));
    let (status, _, body) = request(
        addr,
        "GET /assets/app.js HTTP/1.1\r\nRange: bytes=0-6\r\nIf-Range: \"stale\"",
    );
    assert_eq!(
        (status, body.len()),
        (200, 27),
        "a stale If-Range gets the whole file"
    );

    // Precompressed siblings.
    let (_, headers, body) = request(
        addr,
        "GET /assets/app.js HTTP/1.1\r\nAccept-Encoding: gzip, br",
    );
    assert_eq!(header(&headers, "content-encoding"), Some("br"));
    assert_eq!(body, b"BROTLI-BYTES");
    assert_eq!(header(&headers, "vary"), Some("accept-encoding"));
    let (_, headers, body) = request(addr, "GET /assets/app.js HTTP/1.1\r\nAccept-Encoding: gzip");
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    let mut plain = String::new();
    flate2::read::GzDecoder::new(body.as_slice())
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, "console.log('0123456789');\n");
    let (_, headers, _) = request(
        addr,
        "GET /assets/app.js HTTP/1.1\r\nAccept-Encoding: br;q=0, identity",
    );
    assert_eq!(header(&headers, "content-encoding"), None);

    // Directories, SPA fallback, 404, methods.
    let (status, headers, _) = request(addr, "GET /docs HTTP/1.1");
    assert_eq!(status, 301);
    assert_eq!(header(&headers, "location"), Some("/docs/"));
    let (status, headers, _) = request(addr, "GET //docs HTTP/1.1");
    assert_eq!(
        (status, header(&headers, "location")),
        (301, Some("/docs/")),
        "no protocol-relative redirect"
    );
    assert_eq!(request(addr, "GET /docs/ HTTP/1.1").2, b"<h1>docs</h1>\n");
    let (status, _, body) = request(addr, "GET /account/settings HTTP/1.1");
    assert_eq!(
        (status, body.as_slice()),
        (200, b"<h1>site v1</h1>\n".as_slice()),
        "SPA fallback"
    );
    assert_eq!(
        request(addr, "GET /assets/missing.js HTTP/1.1").0,
        404,
        "no fallback for files"
    );
    assert_eq!(request(addr, "POST / HTTP/1.1\r\nContent-Length: 0").0, 405);

    // Traversal attempts never leave the release.
    for path in [
        "/../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%2f..%2f..%2fetc%2fpasswd",
        "/..%5c..%5cetc%5cpasswd",
        "/%00",
    ] {
        let (status, _, body) = request(addr, &format!("GET {path} HTTP/1.1"));
        assert!(
            !String::from_utf8_lossy(&body).contains("root:"),
            "{path} leaked a file"
        );
        assert!(status == 400 || status == 404, "{path}: {status}");
    }
}

#[test]
fn a_site_switch_under_load_is_atomic() {
    let daemon = start();
    let dir = daemon.dir.path().to_owned();
    let v1 = site_archive(&dir, "v1");
    let v2 = site_archive(&dir, "v2");
    let deploy = |release: &str, artifact: &Path| {
        let out = daemon.cli(&[
            "deploy",
            "frontend",
            "--release",
            release,
            "--artifact",
            artifact.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stdout));
    };
    deploy("v1", &v1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let load = runtime.block_on(async {
        Load::start(
            daemon.public,
            "/",
            &[
                ClientKind::KeepAlive,
                ClientKind::KeepAlive,
                ClientKind::NewConnection,
                ClientKind::KeepAlive,
            ],
        )
    });
    for i in 0..10 {
        if i % 2 == 0 {
            deploy("v2", &v2);
        } else {
            deploy("v1", &v1);
        }
    }
    let report = runtime.block_on(load.stop());
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert!(report.by_release.get("v1").copied().unwrap_or(0) > 0);
    assert!(report.by_release.get("v2").copied().unwrap_or(0) > 0);
}

#[test]
fn a_response_in_progress_completes_from_the_old_release() {
    let daemon = start();
    let dir = daemon.dir.path().to_owned();
    let big = dir.join("big-v1");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(big.join("index.html"), "v1").unwrap();
    std::fs::write(big.join("big.bin"), vec![b'1'; 8 << 20]).unwrap();
    let small = dir.join("small-v2");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("index.html"), "v2").unwrap();
    std::fs::write(small.join("big.bin"), vec![b'2'; 16]).unwrap();
    let deploy = |release: &str, artifact: &Path| {
        let out = daemon.cli(&[
            "deploy",
            "frontend",
            "--release",
            release,
            "--artifact",
            artifact.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stdout));
    };
    deploy("v1", &big);
    // Start reading the 8 MiB file slowly, switch to v2 mid-way, then finish reading.
    let mut stream = std::net::TcpStream::connect(daemon.public).unwrap();
    write!(
        stream,
        "GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = vec![0u8; 4096];
    stream.read_exact(&mut first).unwrap();
    deploy("v2", &small);
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let raw: Vec<u8> = first.into_iter().chain(rest).collect();
    let body = &raw[raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let body_ones = body.iter().filter(|b| **b == b'1').count();
    assert_eq!(body_ones, 8 << 20, "the whole v1 file arrived");
    assert_eq!(get(daemon.public, "/").2, "v2");
}
