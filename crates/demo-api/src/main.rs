//! `demo-api`: a small HTTP backend standing in for a user's API server behind
//! cutover, for the demo, integration tests and benchmarks.
//!
//! Everything is configured through environment variables (`API_ADDR`,
//! `RELEASE`, `DATABASE_URL`, `REDIS_URL` and the `DEMO_*` fault knobs); it
//! shuts down gracefully on SIGTERM/SIGINT.
//!
//! # Layout
//!
//! - `config`: reads and validates the environment.
//! - `server`: accept loop, signals and graceful drain.
//! - `routes`: request routing and the plain HTTP endpoints.
//! - `websocket`: `GET /ws` upgrade and echo session.
//! - `readiness`: `/health/ready` probes of Postgres and Redis.
//! - `faults`: the `DEMO_*` crash / failure / error-rate injection.
//! - `tracker`: counts live connections and sessions for the drain.

mod config;
mod faults;
mod readiness;
mod routes;
mod server;
mod tracker;
mod visits;
mod websocket;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::Config;
use routes::App;
use server::StopSignals;

fn main() -> ExitCode {
    let started = Instant::now();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("demo-api: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("demo-api: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(config, started));
    // Don't let an abandoned DNS lookup in a readiness probe hold up the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

async fn run(config: Config, started: Instant) -> ExitCode {
    if let Some(after) = config.crash_after {
        faults::spawn_crash_timer(after);
    }
    let mut signals = match StopSignals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("demo-api: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(delay) = config.startup_delay {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = signals.recv() => {
                say(&format!("demo-api {} stopped", config.release));
                return ExitCode::SUCCESS;
            }
        }
    }

    let listener = match tokio::net::TcpListener::bind(&config.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("demo-api: cannot listen on {}: {e}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    // Report the bound address, which differs from API_ADDR when that used port 0.
    let addr = listener
        .local_addr()
        .map_or_else(|_| config.addr.clone(), |a| a.to_string());
    say(&format!("demo-api {} listening on {addr}", config.release));

    let app = Arc::new(App::new(config, started));
    server::run(listener, app.clone(), signals).await;
    say(&format!("demo-api {} stopped", app.config.release));
    ExitCode::SUCCESS
}

/// Prints a status line and flushes: callers wait for these lines on a pipe.
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not crash the server.
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}
