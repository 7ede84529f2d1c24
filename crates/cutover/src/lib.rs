//! cutover: zero-downtime staged deploys of web services to plain Linux servers.
//!
//! One binary: a CLI, and a daemon (`cutover serve`) that owns each component's public socket,
//! proxies to the active release, supervises release processes and keeps state in SQLite.
//!
//! # Layout
//! - [`config`]: `cutover.toml`, parsed and validated once, with located errors.
//! - [`listener`]: public sockets, bound or inherited from systemd.
//! - [`server`]: the accept loop of each public socket.
//! - [`acme`]: automatic certificates (ACME): account, orders, challenges, stored certificates,
//!   renewal.
//! - [`proxy`]: the data plane; atomic upstream switch, drain, forwarding headers, tunnels.
//! - [`site`]: static components, served by cutover itself.
//! - [`release`]: the release store on disk (atomic, verified artifacts).
//! - [`retention`]: which stored releases to keep.
//! - [`bundle`]: safe unpacking of tar/tar.gz/directory artifacts.
//! - [`store`]: durable state in SQLite; the only module that touches it.
//! - [`supervisor`]: release processes: launch, adopt after a crash, stop.
//! - [`health`]: HTTP probes and the start-up gate.
//! - [`https`]: the outbound HTTP(S) client (webhooks, hook verification).
//! - [`component`]: one component at run time (route, serving instance, deploy claim).
//! - [`deploy`]: the deploy state machine and pipelines.
//! - [`daemon`]: start-up, crash recovery, shutdown.
//! - [`watchdog`]: probes the serving instances between deploys; restarts, holds requests,
//!   rolls a crash loop back.
//! - [`control`], [`protocol`], [`status`]: the control API on a unix socket and its schema.
//! - [`sd`]: systemd's notify protocol (READY, STATUS, STOPPING, WATCHDOG).
//! - [`shutdown`]: the daemon-wide stop signal.
//! - [`services`]: PostgreSQL and Redis health with their real protocols; `docker compose up`.
//! - [`admin`]: the admin listener (`/metrics`, `/health`).
//! - [`metrics`]: Prometheus metrics for `/metrics` on the admin listener.
//! - [`migrate`]: golang-migrate compatible migrations.
//! - [`checks`]: `cutover check` and the deploy gate (services, disk, env files).
//! - [`notify`]: webhook notifications of deploy events, never blocking a deploy.
//! - [`diskspace`]: room for an artifact before it is copied; the space reserve.
//! - [`upload`]: artifacts sent over the control socket.
//! - [`fleet`]: one deploy across several hosts over SSH (`cutover fleet ...`).
//! - [`cli`]: the command line (and `cutover demo`); [`loadgen`]: load for demo and tests.

pub mod abort;
pub mod accept_gate;
pub mod access_log;
pub mod acme;
pub mod admin;
pub mod body_timeout;
pub mod bundle;
pub mod certs;
pub mod checks;
pub mod cli;
pub mod component;
pub mod config;
pub mod conn_limit;
pub mod control;
pub mod daemon;
pub mod deploy;
pub mod diskspace;
pub mod edge;
pub mod envfile;
pub mod fdlimit;
pub mod fleet;
pub mod front;
pub mod frontends;
pub mod handoff;
pub mod health;
pub mod hold;
pub mod https;
pub mod listener;
pub mod live;
pub mod loadgen;
pub mod memory;
pub mod metrics;
pub mod migrate;
pub mod notify;
pub mod ops;
pub mod protocol;
pub mod proxy;
pub mod proxy_protocol;
pub mod proxy_threads;
pub mod release;
pub mod reload;
pub mod request_log;
pub mod response;
pub mod retention;
pub mod routing;
pub mod runtime;
pub mod sd;
pub mod server;
pub mod services;
pub mod shutdown;
pub mod site;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod upload;
pub mod vocab;
pub mod watchdog;
