use super::*;
use crate::config::ComponentName;
use crate::release::ReleaseId;

fn name(s: &str) -> ComponentName {
    ComponentName::parse(s).unwrap()
}
fn rid(s: &str) -> ReleaseId {
    ReleaseId::parse(s).unwrap()
}

#[test]
fn active_and_previous_follow_switches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.component_state("backend").unwrap().active.is_none());
    store.set_active("backend", "v1").unwrap();
    store.set_active("backend", "v2").unwrap();
    let state = store.component_state("backend").unwrap();
    assert_eq!(
        (state.active.as_deref(), state.previous.as_deref()),
        (Some("v2"), Some("v1"))
    );
    // Re-activating the same release keeps the rollback target.
    store.set_active("backend", "v2").unwrap();
    assert_eq!(
        store
            .component_state("backend")
            .unwrap()
            .previous
            .as_deref(),
        Some("v1")
    );
}

#[test]
fn open_deploys_are_interrupted_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = store
        .begin_pipeline("v2", &["backend".into()], "tester")
        .unwrap();
    let d = store
        .begin_deploy(
            Some(p),
            &name("backend"),
            DeployKind::Deploy,
            Some(&rid("v1")),
            &rid("v2"),
            "tester",
        )
        .unwrap();
    store.set_phase(d, Phase::Stabilizing).unwrap();
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    let open = store.interrupt_open("daemon restarted").unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].phase, Phase::Stabilizing);
    let record = store.deploy(d).unwrap().unwrap();
    assert_eq!(record.outcome, Some(Outcome::Interrupted));
    assert_eq!(
        store.pipelines(10).unwrap()[0].outcome,
        Some(Outcome::Interrupted)
    );
    assert!(store.interrupt_open("again").unwrap().is_empty());
}

#[test]
fn a_degraded_store_reads_the_committed_state_and_says_writes_fail_for_lack_of_room() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_active("backend", "v1").unwrap();
    drop(store);
    let degraded = Store::open_degraded(dir.path()).unwrap();
    assert!(degraded.degraded());
    assert_eq!(degraded.active_release("backend").unwrap().as_str(), "v1");
    let err = degraded.set_active("backend", "v2").unwrap_err();
    assert!(err.is_disk_full(), "{err}");
}

#[test]
fn check_constraints_guard_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bad = store.with(|c| {
        c.execute(
            "INSERT INTO deploys (component, kind, to_release, who, started_at, phase) VALUES ('a', 'yolo', 'v', 'w', 0, 'done')",
            [],
        )
    });
    assert!(bad.is_err());
}
