//! Where the report goes: stdout (text, or one JSON line with --json), the --hdr percentile
//! file and the --plot SVG.

use crate::config::Args;
use crate::error::SetupError;
use crate::plot;
use crate::report::Report;

pub(crate) fn write(args: &Args, report: &Report) -> Result<(), SetupError> {
    if let Some(path) = &args.hdr {
        write_file(path, plot::hdr_percentile_text(&report.histogram))?;
    }
    if let Some(path) = &args.plot {
        write_file(
            path,
            plot::latency_svg(&report.histogram, &plot_title(args)),
        )?;
    }
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

fn write_file(path: &str, contents: String) -> Result<(), SetupError> {
    std::fs::write(path, contents).map_err(|error| SetupError::WriteOutput {
        path: path.to_string(),
        error,
    })
}

fn plot_title(args: &Args) -> String {
    let rate = if args.max {
        "max rate".to_string()
    } else {
        format!("{} msg/s", args.rate)
    };
    format!(
        "crier-load: {} subscribers, {} topics, {} publishers, {rate}, {} B",
        args.subscribers, args.topics, args.publishers, args.size
    )
}
