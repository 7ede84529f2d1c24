use super::containment::safe_mode;
use super::*;
use std::os::unix::fs::PermissionsExt;

fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        // Set the raw name so hostile paths are not normalized away by the builder.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn unpack_bytes(bytes: &[u8]) -> Result<tempfile::TempDir, BundleError> {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("site.tar");
    fs::write(&archive, bytes).unwrap();
    unpack(&archive, &dir.path().join("out"), Limits::default()).map(|_| dir)
}

#[test]
fn unpacks_plain_and_gzip_archives() {
    let bytes = tar_with(&[
        ("index.html", tar::EntryType::Regular, b"<h1>hi</h1>", None),
        (
            "assets/app.js",
            tar::EntryType::Regular,
            b"console.log(1)",
            None,
        ),
        (
            "latest",
            tar::EntryType::Symlink,
            b"",
            Some("assets/app.js"),
        ),
    ]);
    let dir = unpack_bytes(&bytes).unwrap();
    assert_eq!(
        fs::read(dir.path().join("out/assets/app.js")).unwrap(),
        b"console.log(1)"
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &bytes).unwrap();
    let dir = unpack_bytes(&gz.finish().unwrap()).unwrap();
    assert_eq!(
        fs::read(dir.path().join("out/index.html")).unwrap(),
        b"<h1>hi</h1>"
    );
    let manifest = manifest(&dir.path().join("out")).unwrap();
    assert_eq!(
        manifest.keys().collect::<Vec<_>>(),
        ["assets/app.js", "index.html"]
    );
}

#[test]
fn refuses_entries_that_escape() {
    let cases: &[(&str, tar::EntryType, Option<&str>, &str)] = &[
        ("../evil", tar::EntryType::Regular, None, "contains `..`"),
        (
            "/etc/evil",
            tar::EntryType::Regular,
            None,
            "is an absolute path",
        ),
        (
            "a/../../evil",
            tar::EntryType::Regular,
            None,
            "contains `..`",
        ),
        (
            "up",
            tar::EntryType::Symlink,
            Some("../../etc/passwd"),
            "points outside",
        ),
        (
            "abs",
            tar::EntryType::Symlink,
            Some("/etc/passwd"),
            "points outside",
        ),
        (
            "hard",
            tar::EntryType::Link,
            Some("/etc/passwd"),
            "is an absolute path",
        ),
        ("dev", tar::EntryType::Char, None, "special file"),
    ];
    for (path, kind, link, why) in cases {
        let err = unpack_bytes(&tar_with(&[(path, *kind, b"x", *link)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{path}: {err}");
    }
    // Links to "." cannot be chained to climb out (their text depth is not their real depth).
    let err = unpack_bytes(&tar_with(&[
        ("up", tar::EntryType::Symlink, b"", Some(".")),
        (
            "evil",
            tar::EntryType::Symlink,
            b"",
            Some("up/up/up/up/../../../../state.db"),
        ),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("points outside"), "{err}");
    let err = unpack_bytes(&tar_with(&[
        ("esc", tar::EntryType::Symlink, b"", Some("up")),
        ("esc/deep/x", tar::EntryType::Regular, b"x", None),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("symlinked directory"), "{err}");
    let err = unpack_bytes(&tar_with(&[(
        "sibling",
        tar::EntryType::Symlink,
        b"",
        Some("../x"),
    )]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("points outside"), "{err}");
    // A symlinked directory planted first cannot be written through.
    let err = unpack_bytes(&tar_with(&[
        ("d", tar::EntryType::Symlink, b"", Some(".")),
        ("d/x", tar::EntryType::Regular, b"x", None),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("symlinked directory"), "{err}");
}

#[test]
fn copies_directories_and_refuses_escaping_links() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("site");
    fs::create_dir_all(src.join("assets")).unwrap();
    fs::write(src.join("index.html"), "hi").unwrap();
    fs::write(src.join("assets/a.css"), "body{}").unwrap();
    unpack(&src, &dir.path().join("out"), Limits::default()).unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("out/assets/a.css")).unwrap(),
        "body{}"
    );
    std::os::unix::fs::symlink("/etc/passwd", src.join("leak")).unwrap();
    let err = unpack(&src, &dir.path().join("out2"), Limits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("points outside"), "{err}");
}

#[test]
fn hard_links_stay_links_and_their_errors_name_the_target() {
    use std::os::unix::fs::MetadataExt;
    let dir = unpack_bytes(&tar_with(&[
        ("a", tar::EntryType::Regular, b"data", None),
        ("b", tar::EntryType::Link, b"", Some("a")),
    ]))
    .unwrap();
    let (a, b) = (
        fs::metadata(dir.path().join("out/a")).unwrap(),
        fs::metadata(dir.path().join("out/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "a hard link was unpacked as a copy");
    let err = unpack_bytes(&tar_with(&[(
        "b",
        tar::EntryType::Link,
        b"",
        Some("missing"),
    )]))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("\"b\"")
            && err.contains("hard link to \"missing\"")
            && err.contains("not a file unpacked before it"),
        "{err}"
    );
    let err = unpack_bytes(&tar_with(&[("h", tar::EntryType::Link, b"", Some("../x"))]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hard link to \"../x\"") && err.contains("`..`"),
        "{err}"
    );
}

#[test]
fn modes_lose_special_and_foreign_write_bits() {
    assert_eq!(safe_mode(0o7777), 0o755);
    assert_eq!(safe_mode(0o666), 0o644);
    assert_eq!(safe_mode(0o4755), 0o755);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o7777);
    header.set_size(1);
    header.set_path("run").unwrap();
    header.set_cksum();
    builder.append(&header, &b"x"[..]).unwrap();
    let dir = unpack_bytes(&builder.into_inner().unwrap()).unwrap();
    let mode = fs::metadata(dir.path().join("out/run"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
}

#[test]
fn limits_stop_bombs_early() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("bomb.tar");
    fs::write(
        &archive,
        tar_with(&[
            ("a", tar::EntryType::Regular, &[0u8; 600], None),
            ("b", tar::EntryType::Regular, &[0u8; 600], None),
        ]),
    )
    .unwrap();
    let small = Limits {
        max_bytes: 1000,
        max_entries: 10,
    };
    let err = unpack(&archive, &dir.path().join("out"), small)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more than 1000 B bytes") || err.contains("more than"),
        "{err}"
    );
    assert!(err.contains("bundle_max_size"), "{err}");
    let few = Limits {
        max_bytes: 1 << 20,
        max_entries: 1,
    };
    let err = unpack(&archive, &dir.path().join("out2"), few)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more than 1 entries") && err.contains("bundle_max_entries"),
        "{err}"
    );
    // A directory is judged before a byte is copied.
    let src = dir.path().join("site");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), vec![0u8; 2000]).unwrap();
    let err = unpack(&src, &dir.path().join("out3"), small)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bundle_max_size"), "{err}");
    assert!(!dir.path().join("out3/big").exists());
}
