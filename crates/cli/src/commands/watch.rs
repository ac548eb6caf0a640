//! `tinygpt watch` and `tinygpt train --live`: a run's loss curves as a terminal chart,
//! redrawn as its `metrics.csv` grows. The view only reads that file, from another thread or
//! process, so stopping it never stops or slows the run.

use anyhow::Result;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tinygpt_plot::{text_chart, Run, SUMMARY_FILE};

#[derive(Args)]
pub struct WatchArgs {
    /// The run directory to follow (what `tinygpt train` prints, e.g. runs/transformer).
    run: PathBuf,
    /// Seconds between looks at its metrics.csv.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

/// The plot's width for this terminal: `COLUMNS` less the labels when set, else 60 columns.
fn chart_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .map_or(60, |c| c.saturating_sub(12).clamp(20, 160))
}

/// Redraws `run_dir`'s chart on stderr whenever a row is added, until `stop` is set (or, with
/// `until_done`, the run has written its summary). On a terminal the chart replaces itself;
/// elsewhere each new state is printed below the last.
pub fn follow(run_dir: &Path, stop: &AtomicBool, interval: Duration, until_done: bool) {
    let terminal = std::io::stderr().is_terminal();
    let mut shown = 0;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let done = until_done && run_dir.join(SUMMARY_FILE).is_file();
        if let Ok(run) = Run::read(run_dir) {
            if run.rows.len() != shown || done || stopping {
                shown = run.rows.len();
                let chart = text_chart(&run, chart_width(), 12);
                let mut err = std::io::stderr().lock();
                if terminal {
                    let _ = write!(err, "\x1b[H\x1b[J");
                }
                let _ = write!(err, "{chart}");
                let _ = err.flush();
            }
        }
        if stopping || done {
            return;
        }
        std::thread::sleep(interval);
    }
}

pub fn run(args: WatchArgs) -> Result<()> {
    // Said at once, not after a silent wait: a path that is not a run yet may still become one.
    if !args.run.is_dir() {
        anyhow::bail!(
            "{} is not a directory: give the run directory `tinygpt train` prints",
            args.run.display()
        );
    }
    let interval = Duration::from_secs_f64(args.interval.max(0.05));
    eprintln!(
        "watching {} (Ctrl-C stops the view, not the run)",
        args.run.display()
    );
    follow(&args.run, &AtomicBool::new(false), interval, true);
    Ok(())
}
