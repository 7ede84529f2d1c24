//! The README's first command: `cutover demo` runs the main job end to end and reports what
//! the load clients saw.

mod common;

use common::*;

#[test]
fn the_demo_deploys_refuses_rolls_back_and_drops_nothing() {
    demo_api(); // fails clearly if the workspace was not built
    let out = std::process::Command::new(CUTOVER)
        .arg("demo")
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}\n{}", text(&out.stderr));
    for line in [
        "deploy v1          succeeded    (as expected)",
        "deploy v2          succeeded    (as expected)",
        "deploy v3-broken   failed       (as expected)",
        "rollback           succeeded    (as expected)",
        "active release now: v1",
    ] {
        assert!(shown.contains(line), "missing {line:?} in:\n{shown}");
    }
    let summary = shown
        .lines()
        .find(|l| l.contains("requests,") && l.contains("failed"))
        .unwrap();
    assert!(summary.trim_end().ends_with(" 0 failed"), "{summary}");
}
