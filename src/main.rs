//! The `crier` binary: parse the configuration, start the server, wait for SIGINT/SIGTERM,
//! drain, exit. No broker logic lives here.

use std::process::ExitCode;

use crier::auth;
use crier::config::{self, ConfigError};
use crier::server;
use crier::sys;

fn main() -> ExitCode {
    let loaded = match config::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(ConfigError::CommandLine(e)) => {
            // clap chooses stdout for --help/--version, stderr (and exit code 2) otherwise.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(e) => {
            eprintln!("crier: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if loaded.print_config {
        print!("{}", loaded.config.to_toml());
        return ExitCode::SUCCESS;
    }
    if let Some(file) = &loaded.file {
        eprintln!("crier: configuration read from {}", file.display());
    }
    let config = loaded.config;
    // Key files are read once, here; a broken one stops start-up like a bad option does.
    if let Err(e) = auth::load_policy(&config) {
        eprintln!("crier: {e}");
        return ExitCode::from(2);
    }
    if let Some(warning) = auth::open_access_warning(&config) {
        eprintln!("crier: {warning}");
    }
    // Blocked before any thread starts, so every thread inherits the mask and the signals
    // arrive only at `wait_for_shutdown_signal`.
    if let Err(e) = sys::block_shutdown_signals() {
        eprintln!("crier: cannot block SIGINT/SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    let drain_delay = config.drain_delay;
    let summary = format!(
        "max message {} B, max backlog {} B ({:?} slow consumers), handshake timeout {:?}, ping interval {:?}, drain delay {:?}, drain timeout {:?}",
        config.max_message_bytes,
        config.max_backlog_bytes,
        config.slow_consumer,
        config.handshake_timeout,
        config.ping_interval,
        config.drain_delay,
        config.drain_timeout,
    );
    let supervision = server::Supervision {
        on_shard_failure: server::OnShardFailure::ExitProcess,
        fault: injected_fault(),
    };
    let handle = match server::start_supervised(config, supervision) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("crier: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = handle.file_limit();
    eprintln!(
        "crier {} listening on {} with {} threads; open files {} (hard {}), max connections {}; {summary}; sends: {}",
        env!("CARGO_PKG_VERSION"),
        handle.local_addr(),
        handle.threads(),
        limit.soft,
        limit.hard,
        handle.max_connections(),
        handle.sends(),
    );
    if let Some(addr) = handle.metrics_addr() {
        eprintln!("crier: /metrics on {addr} only (--metrics-listen)");
    }
    match sys::wait_for_shutdown_signal() {
        Ok(signal) if !drain_delay.is_zero() => {
            handle.stop_being_ready();
            eprintln!(
                "crier: signal {signal} received; /readyz answers 503, still serving for {drain_delay:?} (drain delay; a second signal skips it)"
            );
            match sys::wait_for_shutdown_signal_within(drain_delay) {
                Ok(Some(signal)) => eprintln!("crier: signal {signal} received; draining now"),
                Ok(None) => eprintln!("crier: drain delay over; draining"),
                Err(e) => eprintln!("crier: waiting for signals failed ({e}); draining"),
            }
        }
        Ok(signal) => eprintln!("crier: signal {signal} received; draining"),
        Err(e) => eprintln!("crier: waiting for signals failed ({e}); draining"),
    }
    handle.shutdown();
    match handle.join() {
        Ok(()) => {
            eprintln!("crier: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crier: a shard failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Debug builds only: `CRIER_FAULT=panic-shard=N` or `stall-shard=N` makes a shard misbehave,
/// so the tests can check what the binary does then (tests/shard_failure.rs).
#[cfg(debug_assertions)]
fn injected_fault() -> server::Fault {
    std::env::var("CRIER_FAULT")
        .ok()
        .and_then(|text| server::Fault::parse(&text))
        .unwrap_or_default()
}

#[cfg(not(debug_assertions))]
fn injected_fault() -> server::Fault {
    server::Fault::None
}
