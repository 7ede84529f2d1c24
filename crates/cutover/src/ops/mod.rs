//! Operator tooling that generates what a person needs to run cutover on a real server and from
//! CI (issue 5): units, the workflow, the components a change touches. Nothing here runs inside
//! the daemon (webhooks are [`crate::notify`], env file checks [`crate::checks::env`]).
//!
//! Each module is a library with explicit parameters (no [`crate::config::Config`]), so the CLI
//! and the config can call it without the module knowing their types.
//!
//! # Layout
//! - [`systemd`]: the hardened `cutover.service` and one `.socket` unit per component.
//! - [`workflow`]: the GitHub Actions deploy workflow (change detection, build, SSH, deploy).
//! - [`changes`]: which components changed between two commits (`cutover changed`).
//! - [`kubernetes`]: a Deployment and a Service for one component (`cutover export kubernetes`).

pub mod changes;
pub mod kubernetes;
pub mod systemd;
pub mod workflow;
