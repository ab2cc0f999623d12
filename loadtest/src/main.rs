//! `crier-load`: connects subscribers and publishers from worker threads (one mio Poll each),
//! publishes on an open-loop schedule, and reports throughput, corrected latency, losses and
//! whether the client itself was the bottleneck. This file: the order of the steps (checks,
//! `--repeat` runs, report) and the exit code; `setup`, `phases`, `report` and `output` do
//! the work.
#![deny(unsafe_code)]

mod config;
mod error;
mod net;
mod output;
mod payload;
mod phases;
mod plot;
mod procstat;
mod progress;
mod report;
mod resume;
mod schedule;
mod setup;
mod sys;
mod tracker;
mod worker;
mod ws;

use std::process::ExitCode;

use clap::Parser;

use config::Args;
use error::{SetupError, EXIT_TIMEOUT};
use report::{Context, Report};

/// The broker misbehaved: protocol errors, disconnects, misrouted messages, HTTP errors.
const EXIT_FINDINGS: u8 = 1;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crier-load: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, SetupError> {
    let setup = setup::prepare(args)?;
    let ctx = Context {
        args,
        plan: setup.plan(),
        threads: setup.threads,
        cores: setup.cores,
        machine_cores: setup.machine_cores,
    };
    let mut runs = Vec::new();
    for n in 1..=args.repeat {
        let label = (args.repeat > 1).then(|| format!("run {n}/{}", args.repeat));
        let run = phases::run_once(args, &setup, &ctx, label)?;
        let timed_out = run.timed_out;
        runs.push(run);
        if timed_out {
            break; // a broker that hung once is not measured again
        }
    }
    let timed_out = runs.iter().any(|r| r.timed_out);
    let report = Report::build(&ctx, runs);
    output::write(args, &report)?;
    Ok(ExitCode::from(if timed_out {
        EXIT_TIMEOUT
    } else if report.is_failure() {
        EXIT_FINDINGS
    } else {
        0
    }))
}
