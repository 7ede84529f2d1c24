//! `[fleet]`: its strategy, and the keys that strategy gives no meaning to.

use super::*;

const COMPONENT: &str = "[components.api]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\n";

fn fleet_of(lines: &str) -> Result<Config, String> {
    parse(&format!(
        "{COMPONENT}[fleet]\nhosts = [\"web1\", \"web2\"]\n{lines}"
    ))
}

#[test]
fn waves_is_the_default_strategy_and_all_healthy_is_spelled_out() {
    let waves = fleet_of("").unwrap().fleet.unwrap();
    assert_eq!(waves.strategy, Strategy::Waves);
    assert_eq!((waves.canary, waves.max_parallel), (1, 2));
    let all = fleet_of("strategy = \"all_healthy_then_switch\"\n")
        .unwrap()
        .fleet
        .unwrap();
    assert_eq!(all.strategy, Strategy::AllHealthyThenSwitch);
}

#[test]
fn an_unknown_strategy_and_a_canary_it_would_ignore_are_located() {
    check_error(
        &format!("{COMPONENT}[fleet]\nhosts = [\"web1\"]\nstrategy = \"blue_green\"\n"),
        "/srv/app/cutover.toml:6:1: fleet.strategy: unknown strategy \"blue_green\": use \"waves\" or \"all_healthy_then_switch\"",
    );
    check_error(
        &format!(
            "{COMPONENT}[fleet]\nhosts = [\"web1\", \"web2\"]\nstrategy = \"all_healthy_then_switch\"\ncanary = 1\n"
        ),
        "/srv/app/cutover.toml:7:1: fleet.canary: has no meaning with strategy = \"all_healthy_then_switch\": every host deploys at once and none switches before all are healthy",
    );
}
