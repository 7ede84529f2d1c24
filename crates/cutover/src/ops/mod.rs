//! Operator tooling: what a person needs to run cutover on a real server and from CI (issue 5).
//!
//! Each module is a library with explicit parameters (no [`crate::config::Config`]), so the CLI,
//! the config and the daemon can call it without the module knowing their types.
//!
//! # Layout
//! - [`systemd`]: the hardened `cutover.service` and one `.socket` unit per component.
//! - [`workflow`]: the GitHub Actions deploy workflow (change detection, build, SSH, deploy).
//! - [`changes`]: which components changed between two commits (`cutover changed`).
//! - [`notify`]: webhook notifications of deploy events, never blocking a deploy.
//! - [`envcheck`]: env file checks (required keys, permissions, placeholders) with masked values.

pub mod changes;
pub mod envcheck;
pub mod notify;
pub mod systemd;
pub mod workflow;
