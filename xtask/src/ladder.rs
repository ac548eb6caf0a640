//! `cargo xtask ladder`: train every tutorial stage with its own config and report the loss
//! ladder as a Markdown table and a chart of the validation curves.

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use tinygpt_plot::group_digits;

/// The tutorial's stages, in order.
pub const STAGES: [&str; 6] = [
    "bigram",
    "head",
    "multihead",
    "feedforward",
    "transformer",
    "nanogpt_cpu",
];

/// The fields of a run's `summary.json` the ladder reports.
#[derive(Debug, Deserialize)]
struct Summary {
    backend: String,
    parameters: usize,
    steps: usize,
    train_loss: f64,
    val_loss: f64,
    /// Absent in summaries written before the whole-split evaluation existed.
    val_loss_full: Option<f64>,
    wall_time_s: f64,
    tokens_per_sec: f64,
}

struct Stage {
    name: String,
    /// One summary per seed, in the order of `--seeds`.
    runs: Vec<Summary>,
    /// (step, val loss) from the first seed's metrics.csv.
    curve: Vec<(f64, f64)>,
}

/// Mean and sample standard deviation (0 for a single value).
fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The mean of one field over a stage's runs.
fn mean_of(stage: &Stage, field: fn(&Summary) -> f64) -> f64 {
    mean_sd(&stage.runs.iter().map(field).collect::<Vec<_>>()).0
}

/// `mean` alone for one run, `mean ± sd` for several.
fn show(values: &[f64]) -> String {
    match mean_sd(values) {
        (mean, _) if values.len() == 1 => format!("{mean:.4}"),
        (mean, sd) => format!("{mean:.4} ± {sd:.4}"),
    }
}

pub struct LadderArgs {
    pub backend: String,
    pub out: Option<PathBuf>,
    pub configs: Vec<String>,
    /// Seeds to train each stage with (empty: the config's own seed).
    pub seeds: Vec<u64>,
    /// Pass-through arguments for `tinygpt train` (e.g. `--max-iters`).
    pub train_args: Vec<String>,
}

impl LadderArgs {
    pub fn parse(args: Vec<String>) -> Result<Self> {
        let mut parsed = LadderArgs {
            backend: "flex".into(),
            out: None,
            configs: STAGES.iter().map(|s| s.to_string()).collect(),
            seeds: Vec::new(),
            train_args: Vec::new(),
        };
        let mut iter = args.into_iter();
        while let Some(arg) = iter.next() {
            let mut value =
                |name: &str| iter.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--backend" => parsed.backend = value("--backend")?,
                "--out" => parsed.out = Some(value("--out")?.into()),
                "--configs" => {
                    parsed.configs = value("--configs")?.split(',').map(str::to_string).collect()
                }
                "--seeds" => {
                    parsed.seeds = value("--seeds")?
                        .split(',')
                        .map(|s| s.trim().parse().with_context(|| format!("bad seed {s:?}")))
                        .collect::<Result<_>>()?
                }
                "--max-iters" => {
                    let v = value(&arg)?;
                    parsed.train_args.extend([arg, v]);
                }
                other => bail!(
                    "unknown ladder option {other:?}: use --backend B, --out DIR, \
                     --configs a,b,c, --max-iters N, --seeds S1,S2,..."
                ),
            }
        }
        Ok(parsed)
    }
}

pub fn run(root: &Path, binary: &Path, args: LadderArgs) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("runs").join(format!("ladder-{}", args.backend)));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let seeds: Vec<Option<u64>> = if args.seeds.is_empty() {
        vec![None]
    } else {
        args.seeds.iter().copied().map(Some).collect()
    };
    let mut stages = Vec::new();
    for name in &args.configs {
        let config = root.join("configs").join(format!("{name}.ron"));
        let stage_dir = out.join(name);
        if stage_dir.exists() {
            std::fs::remove_dir_all(&stage_dir).with_context(|| {
                format!("clearing the previous ladder run {}", stage_dir.display())
            })?;
        }
        let mut runs = Vec::new();
        let mut curve = None;
        for seed in &seeds {
            let run_dir = match seed {
                None => stage_dir.clone(),
                Some(seed) => stage_dir.join(format!("seed-{seed}")),
            };
            let shown = seed.map(|s| format!(" (seed {s})")).unwrap_or_default();
            eprintln!("ladder: training {name}{shown} on {}", args.backend);
            let mut command = Command::new(binary);
            command
                .arg("train")
                .arg(&config)
                .args(["--backend", &args.backend, "--quiet", "--out"])
                .arg(&run_dir)
                .args(&args.train_args)
                .current_dir(root);
            if let Some(seed) = seed {
                command.args(["--seed", &seed.to_string()]);
            }
            let status = command.status().context("running tinygpt")?;
            if !status.success() {
                bail!("training {name}{shown} failed ({status})");
            }
            let summary: Summary = serde_json::from_slice(
                &std::fs::read(run_dir.join("summary.json")).context("reading summary.json")?,
            )?;
            if curve.is_none() {
                curve = Some(read_val_curve(&run_dir.join("metrics.csv"))?);
            }
            eprintln!(
                "ladder: {name}{shown}: val loss {:.4} (whole split {}) in {:.1}s",
                summary.val_loss,
                summary
                    .val_loss_full
                    .map_or("-".into(), |v| format!("{v:.4}")),
                summary.wall_time_s
            );
            runs.push(summary);
        }
        stages.push(Stage {
            name: name.clone(),
            runs,
            curve: curve.unwrap_or_default(),
        });
    }
    let table = markdown_table(&stages);
    std::fs::write(out.join("ladder.md"), &table)?;
    let chart = out.join("ladder.png");
    draw_chart(&stages, &chart, &args.backend)?;
    println!("{table}");
    println!(
        "table: {}\nchart: {}",
        out.join("ladder.md").display(),
        chart.display()
    );
    Ok(())
}

fn read_val_curve(path: &Path) -> Result<Vec<(f64, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let step = fields.first().and_then(|v| v.parse().ok());
            let val = fields.get(2).and_then(|v| v.parse().ok());
            step.zip(val)
                .with_context(|| format!("bad metrics row {line:?}"))
        })
        .collect()
}

fn markdown_table(stages: &[Stage]) -> String {
    let mut table = String::from(
        "| config | parameters | steps | seeds | train loss | val loss (estimate) | \
         val loss (whole split) | wall time | tokens/s | backend |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for stage in stages {
        let Some(first) = stage.runs.first() else {
            continue;
        };
        let column = |f: fn(&Summary) -> Option<f64>| -> String {
            let values: Vec<f64> = stage.runs.iter().filter_map(f).collect();
            if values.len() == stage.runs.len() {
                show(&values)
            } else {
                "-".into()
            }
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} s | {:.0} | {} |\n",
            stage.name,
            group_digits(first.parameters as u64),
            group_digits(first.steps as u64),
            stage.runs.len(),
            column(|s| Some(s.train_loss)),
            column(|s| Some(s.val_loss)),
            column(|s| s.val_loss_full),
            mean_of(stage, |s| s.wall_time_s),
            mean_of(stage, |s| s.tokens_per_sec),
            first.backend
        ));
    }
    table
}

fn draw_chart(stages: &[Stage], path: &Path, backend: &str) -> Result<()> {
    tinygpt_plot::register_font();
    let max_step = stages
        .iter()
        .flat_map(|s| s.curve.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let (lo, hi) = stages
        .iter()
        .flat_map(|s| s.curve.iter().map(|p| p.1))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let root = BitMapBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("tinygpt loss ladder: validation loss on Tiny Shakespeare ({backend})"),
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(
            0.0..max_step,
            (lo - 0.05).max(0.0)..(hi + 0.05).min(lo + 2.5),
        )?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("val loss")
        .label_style(("sans-serif", 16))
        .draw()?;
    for (i, stage) in stages.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                stage.curve.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(format!(
                "{} ({})",
                stage.name,
                show(
                    &stage
                        .runs
                        .iter()
                        .map(|s| s.val_loss_full.unwrap_or(s.val_loss))
                        .collect::<Vec<_>>()
                )
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_and_summarise() {
        let args = LadderArgs::parse(vec!["--seeds".into(), "1337, 1,2".into()]).unwrap();
        assert_eq!(args.seeds, [1337, 1, 2]);
        assert!(LadderArgs::parse(vec!["--seeds".into(), "1,x".into()]).is_err());
        assert_eq!(mean_sd(&[1.0, 2.0, 3.0]), (2.0, 1.0));
        assert_eq!(show(&[2.48812]), "2.4881");
        assert_eq!(show(&[1.0, 2.0, 3.0]), "2.0000 ± 1.0000");
    }
}
