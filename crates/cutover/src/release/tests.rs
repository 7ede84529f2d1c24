use super::artifact::{check_runnable, read_up_to};
use super::*;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

fn component() -> ComponentName {
    ComponentName::parse("backend").unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn release_ids_are_path_safe() {
    assert!(ReleaseId::parse("3f9c2e1").is_ok());
    assert!(ReleaseId::parse("v1.2.3-rc_1").is_ok());
    for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
        assert!(ReleaseId::parse(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn stores_atomically_and_is_idempotent_for_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ReleaseStore::new(tmp.path());
    let src = write(tmp.path(), "api", b"#!/bin/sh\necho hi\n", 0o755);
    let id = ReleaseId::parse("v1").unwrap();
    let stored = store.store_file(&component(), &id, &src, true).unwrap();
    assert_eq!(stored.size, 18);
    assert_eq!(stored.sha256, sha256_file(&src).unwrap());
    assert_eq!(store.get(&component(), &id).unwrap(), stored);
    let again = store.store_file(&component(), &id, &src, true).unwrap();
    assert_eq!(again, stored);
    let mode = fs::metadata(store.artifact_path(&component(), &id))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // No temporary directories are left behind.
    let names: Vec<_> = fs::read_dir(tmp.path().join("releases/backend"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["v1"]);

    let other = write(tmp.path(), "api2", b"#!/bin/sh\necho other\n", 0o755);
    let err = store
        .store_file(&component(), &id, &other, true)
        .unwrap_err();
    assert!(matches!(err, ReleaseError::Conflict { .. }), "{err}");
}

#[test]
fn refuses_bad_artifacts_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ReleaseStore::new(tmp.path());
    let id = ReleaseId::parse("v1").unwrap();
    let check = |path: &Path| {
        store
            .store_file(&component(), &id, path, true)
            .unwrap_err()
            .to_string()
    };

    assert!(check(&tmp.path().join("nope")).ends_with("does not exist"));
    assert!(check(&write(tmp.path(), "empty", b"", 0o755)).ends_with("is empty"));
    assert!(check(&write(tmp.path(), "noexec", b"#!/bin/sh\n", 0o644))
        .contains("is not executable (mode 644)"));
    assert!(check(&write(
        tmp.path(),
        "text",
        b"hello world, not a program",
        0o755
    ))
    .contains("neither an ELF executable nor a script"));

    let mut arm = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0".to_vec();
    let foreign = if std::env::consts::ARCH == "aarch64" {
        62u16
    } else {
        183u16
    };
    arm.extend_from_slice(&foreign.to_le_bytes());
    arm.extend_from_slice(&[0; 40]);
    let msg = check(&write(tmp.path(), "foreign", &arm, 0o755));
    assert!(
        msg.contains("is built for") && msg.contains("but this machine is"),
        "{msg}"
    );
    assert!(!tmp.path().join("releases/backend/v1").exists());
}

#[test]
fn accepts_this_machines_own_executables() {
    let exe = std::env::current_exe().unwrap();
    let mut head = [0u8; 20];
    let n = read_up_to(&mut File::open(&exe).unwrap(), &mut head).unwrap();
    check_runnable(&exe, &head[..n]).unwrap();
}
