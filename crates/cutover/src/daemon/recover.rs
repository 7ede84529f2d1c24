//! Bringing each component back to what it served: after a start or a crash (the committed
//! active release: adopt its surviving instance or start it), or after `cutover upgrade` (adopt
//! the instance the previous daemon handed over, which must pass its health probe).

use crate::component::{ComponentRuntime, Plane};
use crate::config::ComponentKind;
use crate::deploy::recovery;
use crate::deploy::{self, Shared};
use crate::handoff::HandedInstance;
use crate::health;
use crate::release::ReleaseId;
use crate::store::InstanceRecord;
use crate::supervisor;
use crate::vocab::InstanceState;
use std::sync::Arc;

/// Brings a component back to its committed active release after a start or crash.
pub(super) async fn recover(
    shared: &Shared,
    component: &ComponentRuntime,
    live: &[InstanceRecord],
) {
    let store = &shared.store;
    let active = store.active_release(component.name());
    let config = component.config();
    let process = match &config.kind {
        ComponentKind::Process(process) => process,
        ComponentKind::Static(_) => return load_active_site(shared, component),
        ComponentKind::Hook(_) => return,
    };
    let live: Vec<&InstanceRecord> = live
        .iter()
        .filter(|r| r.component == component.name())
        .collect();
    let releases: Vec<&str> = live.iter().map(|r| r.release.as_str()).collect();
    let active_str = active.as_ref().map(ReleaseId::as_str);
    let plan = recovery::plan(active_str, &releases);
    let mut adopted = None;
    if let (Some(i), Some(release)) = (plan.adopt, &active) {
        let record = live[i];
        if let Some(instance) = supervisor::adopt(record, &component.config().name, release) {
            let probe = health::probe(instance.addr, process, process.health.timeout.get()).await;
            if probe.ok {
                tracing::info!(component = component.name(), release = %release, pid = instance.pid,
                    "adopted the instance that outlived the previous daemon");
                let _ = store.set_instance_state(record.id, InstanceState::Serving);
                adopted = Some(instance);
            } else {
                tracing::warn!(
                    component = component.name(),
                    pid = record.pid,
                    "surviving instance is unhealthy ({probe}); replacing it"
                );
            }
        }
    }
    let orphans = plan.stop.iter().copied();
    let unadopted = plan.adopt.filter(|_| adopted.is_none());
    for record in orphans.chain(unadopted).map(|i| live[i]) {
        if supervisor::kill_orphan(record) {
            tracing::info!(component = component.name(), release = %record.release, pid = record.pid,
                "killed an instance left over from an interrupted deploy");
        }
        let _ = store.set_instance_state(record.id, InstanceState::Stopped);
    }
    let serving = match (
        recovery::after_probe(&plan, active_str, adopted.is_some()),
        active,
    ) {
        (recovery::Serves::Adopted(_), _) => adopted,
        (recovery::Serves::StartActive, Some(release)) => {
            match deploy::start_healthy(shared, component, &release, |_| {}, |_, _| {}).await {
                Ok((instance, after)) => {
                    let _ = store.set_instance_state(instance.id, InstanceState::Serving);
                    tracing::info!(component = component.name(), release = %release, "started; healthy after {after:?}");
                    Some(instance)
                }
                Err(e) => {
                    tracing::error!(component = component.name(), release = %release, "cannot start the active release: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    if let Some(instance) = serving {
        component.switch_to(Some(component.new_serving(instance)));
    }
}

/// Serves the static release committed as active (nothing to adopt: the files are on disk).
fn load_active_site(shared: &Shared, component: &ComponentRuntime) {
    let (ComponentKind::Static(site_config), Plane::Static(route)) =
        (&component.config().kind, &component.plane)
    else {
        return;
    };
    if let Some(release) = shared.store.active_release(component.name()) {
        match deploy::load_site(shared, &component.config(), site_config, &release) {
            Ok(site) => {
                route.switch(Some(Arc::new(site)));
            }
            Err(e) => {
                tracing::error!(component = component.name(), release = %release, "cannot serve the active release: {e}")
            }
        }
    }
}

/// Takes over the instance the previous daemon served `component` with. Any doubt (gone, pid
/// reused, failing its probe) fails the upgrade: the old daemon still serves through it, and
/// replacing it is a deploy's job, not an upgrade's.
pub(super) async fn adopt_handed(
    shared: &Shared,
    component: &ComponentRuntime,
    handed: &[HandedInstance],
) -> anyhow::Result<()> {
    load_active_site(shared, component);
    let ComponentKind::Process(process) = &component.config().kind else {
        return Ok(());
    };
    let Some(instance) = handed.iter().find(|i| i.component == component.name()) else {
        return Ok(());
    };
    let release = ReleaseId::parse(&instance.release).map_err(anyhow::Error::msg)?;
    let record = InstanceRecord {
        id: instance.id,
        component: instance.component.clone(),
        release: instance.release.clone(),
        pid: instance.pid,
        start_ticks: instance.start_ticks,
        port: instance.port,
        log_path: instance.log_path.display().to_string(),
        state: InstanceState::Serving,
        started_at: 0,
    };
    let Some(adopted) = supervisor::adopt(&record, &component.config().name, &release) else {
        anyhow::bail!(
            "{}: instance pid {} of release {release} is gone",
            component.name(),
            instance.pid
        );
    };
    let health = &process.health;
    let probe = health::probe(adopted.addr, process, health.timeout.get()).await;
    if !probe.ok {
        anyhow::bail!(
            "{}: instance pid {} of release {release} fails its health probe ({probe})",
            component.name(),
            instance.pid
        );
    }
    tracing::info!(component = component.name(), release = %release, pid = adopted.pid, "adopted from the previous daemon");
    component.switch_to(Some(component.new_serving(adopted)));
    Ok(())
}
