//! `tinygpt plot`: runs side by side, one curve each, by step, seconds or tokens seen, on any
//! metric of their `metrics.csv` (or the final whole-split `val_loss_full`).

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use tinygpt_plot::{Compare, Run, XAxis};
use tinygpt_train::RunConfig;

#[derive(Args)]
pub struct PlotArgs {
    /// Run directories (or their metrics.csv), any number.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// The chart to write: .png or .svg.
    #[arg(short, long, default_value = "plot.png")]
    output: PathBuf,
    /// The x axis: step, seconds or tokens.
    #[arg(long, default_value = "step")]
    x: XAxis,
    /// The metric: a column of metrics.csv (train_loss, val_loss, lr, tokens_per_sec) or
    /// val_loss_full (one point per run, when it has ended).
    #[arg(long, default_value = "val_loss")]
    metric: String,
    /// A logarithmic y axis.
    #[arg(long)]
    log_y: bool,
}

/// Tokens an optimizer step reads, from the run's `config.ron`.
fn tokens_per_step(dir: &Path) -> Option<f64> {
    let config = RunConfig::load(&dir.join("config.ron")).ok()?;
    let t = &config.training;
    Some((t.batch_size * t.gradient_accumulation_steps * config.model.block_size) as f64)
}

pub fn run(args: PlotArgs) -> Result<()> {
    let mut runs = Vec::with_capacity(args.runs.len());
    for path in &args.runs {
        let mut run = Run::read(path)?;
        run.tokens_per_step = tokens_per_step(&run.dir);
        runs.push(run);
    }
    let x_name = args.x_name();
    let options = Compare {
        x: args.x,
        metric: args.metric,
        log_y: args.log_y,
    };
    tinygpt_plot::compare(&runs, &options, &args.output)
        .with_context(|| format!("drawing {}", args.output.display()))?;
    println!(
        "wrote {} ({} of {} run{} by {})",
        args.output.display(),
        options.metric,
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        x_name
    );
    Ok(())
}

impl PlotArgs {
    fn x_name(&self) -> &'static str {
        match self.x {
            XAxis::Step => "step",
            XAxis::Seconds => "seconds",
            XAxis::Tokens => "tokens",
        }
    }
}
