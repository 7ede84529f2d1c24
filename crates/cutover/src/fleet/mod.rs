//! `cutover fleet ...`: one deploy across several hosts over SSH, in waves, health-gated on
//! every host by that host's own daemon, with cross-host rollback.
//!
//! The operator's machine (or CI) runs the fleet commands; each host runs `cutover serve` as
//! for a single host. Every step on a host is a plain `cutover` command run through the system
//! `ssh` (`ssh.rs`, one multiplexed connection per host), so a host behaves exactly as when
//! someone logs in and deploys by hand, and a cut connection or a killed run leaves each host
//! consistent on its own (its daemon finishes or rolls back the deploy it was given).
//!
//! - `plan.rs`: the pure decisions (waves, host and run outcomes, what to roll back).
//! - `run.rs`: a deploy carried out (preflight, lock, upload, waves, rollback of the moved);
//!   `wave.rs`: one wave's hosts deploying at once, held before each switch until all are
//!   healthy under `strategy = "all_healthy_then_switch"`;
//!   `rollback.rs`: `fleet rollback`; `status.rs`: `fleet status` and the mixed-state check.
//! - `remote.rs`: each command a host is asked to run; `ssh.rs`: the transport.
//! - `receive.rs` and `host_lock.rs`: the host side of the upload and of the lock
//!   (`cutover fleet receive`, `cutover fleet lock`, run over ssh by the operator side).
//! - `history.rs`: the operator side's SQLite record of runs; `events.rs`: what a run reports;
//!   `artifacts.rs`: the files sent, with their digests.

pub mod artifacts;
pub mod events;
pub mod history;
pub mod host_lock;
pub mod plan;
pub mod receive;
pub mod remote;
pub mod rollback;
pub mod run;
pub mod ssh;
pub mod status;
mod wave;
