//! `cargo xtask bench [--vs-pytorch [--no-compile]]`: median training-step time of each config on
//! each backend, as one table; with `--vs-pytorch`, PyTorch eager and `torch.compile` on the same
//! shapes, interleaved with ours, and ratios. "PyTorch" is the faster of two formulations of the
//! same model: the tutorial's gpt.py attention and nanoGPT model.py's
//! `scaled_dot_product_attention` (`reference/gpt_step.py --attention gpt|sdpa`).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;
use std::process::Command;

const CONFIGS: [(&str, usize); 4] = [
    ("bigram", 200),
    ("transformer", 50),
    ("nanogpt_cpu", 20),
    ("gpt", 3),
];

#[derive(Debug, Deserialize)]
struct Timing {
    median_ms: f64,
    tokens_per_sec: f64,
    #[serde(default)]
    gflops: f64,
    #[serde(default)]
    shape: Option<Shape>,
    #[serde(default)]
    batch_size: usize,
    #[serde(default)]
    block_size: usize,
}

#[derive(Debug, Deserialize, Clone)]
struct Shape {
    vocab_size: usize,
    n_embd: usize,
    n_head: usize,
    blocks: usize,
    dropout: f64,
    bigram: bool,
}

pub struct BenchArgs {
    backends: Vec<String>,
    vs_pytorch: bool,
    compile: bool,
    python: String,
    threads: usize,
    configs: Vec<String>,
    rounds: usize,
}

impl BenchArgs {
    pub fn parse(args: Vec<String>) -> Result<Self> {
        let mut parsed = BenchArgs {
            backends: vec!["flex".into(), "ndarray".into()],
            vs_pytorch: false,
            compile: true,
            python: std::env::var("TINYGPT_PYTHON").unwrap_or_else(|_| "python3".into()),
            threads: 2,
            configs: CONFIGS.iter().map(|(c, _)| c.to_string()).collect(),
            rounds: 1,
        };
        let mut iter = args.into_iter();
        while let Some(arg) = iter.next() {
            let mut value =
                |name: &str| iter.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--vs-pytorch" => parsed.vs_pytorch = true,
                "--no-compile" => parsed.compile = false,
                "--backends" => {
                    parsed.backends = value("--backends")?
                        .split(',')
                        .map(str::to_string)
                        .collect()
                }
                "--configs" => {
                    parsed.configs = value("--configs")?.split(',').map(str::to_string).collect()
                }
                "--python" => parsed.python = value("--python")?,
                "--threads" => parsed.threads = value("--threads")?.parse()?,
                "--rounds" => {
                    parsed.rounds = value("--rounds")?.parse()?;
                    if parsed.rounds == 0 {
                        bail!("--rounds needs at least 1");
                    }
                }
                other => bail!(
                    "unknown bench option {other:?}: use --vs-pytorch, --no-compile, \
                     --backends a,b, --configs a,b, --python PATH, --threads N, --rounds N"
                ),
            }
        }
        Ok(parsed)
    }
}

fn steps_for(config: &str) -> usize {
    CONFIGS
        .iter()
        .find(|(c, _)| *c == config)
        .map_or(10, |(_, steps)| *steps)
}

fn run_json(command: &mut Command) -> Result<Timing> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .with_context(|| format!("starting {shown}"))?;
    if !output.status.success() {
        bail!(
            "{shown} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("no output")?;
    serde_json::from_str(line).with_context(|| format!("parsing {line:?}"))
}

/// PyTorch's step on `ours`'s shapes, eager or `torch.compile`d (its warm-up steps compile): the
/// faster of gpt.py's and model.py's attention, and which one that was.
fn pytorch(
    args: &BenchArgs,
    root: &Path,
    ours: &Timing,
    steps: usize,
    compile: bool,
) -> Result<(Timing, &'static str)> {
    let gpt = pytorch_style(args, root, ours, steps, compile, "gpt")?;
    if ours.shape.as_ref().is_some_and(|s| s.bigram) {
        return Ok((gpt, "bigram"));
    }
    let sdpa = pytorch_style(args, root, ours, steps, compile, "sdpa")?;
    Ok(if sdpa.median_ms < gpt.median_ms {
        (sdpa, "model.py")
    } else {
        (gpt, "gpt.py")
    })
}

fn pytorch_style(
    args: &BenchArgs,
    root: &Path,
    ours: &Timing,
    steps: usize,
    compile: bool,
    attention: &str,
) -> Result<Timing> {
    let shape = ours
        .shape
        .clone()
        .context("tinygpt bench reported no shape")?;
    let mut command = Command::new(&args.python);
    command
        .arg(root.join("reference/gpt_step.py"))
        .args(["--device", "cpu", "--threads", &args.threads.to_string()])
        .args(["--vocab", &shape.vocab_size.to_string()])
        .args(["--block-size", &ours.block_size.to_string()])
        .args(["--batch-size", &ours.batch_size.to_string()])
        .args(["--steps", &steps.to_string(), "--warmup", "3"]);
    if shape.bigram {
        command.arg("--bigram");
    } else {
        command
            .args(["--n-embd", &shape.n_embd.to_string()])
            .args(["--n-head", &shape.n_head.to_string()])
            .args(["--n-layer", &shape.blocks.to_string()])
            .args(["--dropout", &shape.dropout.to_string()])
            .args(["--attention", attention]);
    }
    if compile {
        command.arg("--compile");
    }
    run_json(&mut command)
}

/// The round whose median step time is the median of the rounds': one shared machine's timings
/// drift by 20% and more between runs minutes apart, so one run per row can mislead.
fn median_round<T>(mut rounds: Vec<T>, time: impl Fn(&T) -> f64) -> Option<T> {
    rounds.sort_by(|a, b| time(a).total_cmp(&time(b)));
    let middle = rounds.len() / 2;
    rounds.into_iter().nth(middle)
}

pub fn run(root: &Path, binary: &Path, args: BenchArgs) -> Result<()> {
    let mut rows = Vec::new();
    for config in &args.configs {
        let steps = steps_for(config);
        let path = root.join("configs").join(format!("{config}.ron"));
        let mut ours_rounds: Vec<Vec<Timing>> = args.backends.iter().map(|_| Vec::new()).collect();
        let (mut torch, mut compiled) = (Vec::new(), Vec::new());
        // Rounds interleave every contender, so each sees the machine in every state it passed.
        for round in 1..=args.rounds {
            for (i, backend) in args.backends.iter().enumerate() {
                eprintln!("bench: {config} on {backend} ({steps} steps, round {round})");
                let ours = run_json(
                    Command::new(binary)
                        .args(["bench"])
                        .arg(&path)
                        .args(["--backend", backend, "--json", "--warmup", "3"])
                        .args(["--steps", &steps.to_string()])
                        .env("RAYON_NUM_THREADS", args.threads.to_string()),
                )?;
                // PyTorch runs right after our first backend, so both see the same machine state.
                if args.vs_pytorch && i == 0 {
                    eprintln!("bench: {config} on PyTorch eager");
                    torch.push(pytorch(&args, root, &ours, steps, false)?);
                }
                // torch.compile after the last of ours, so the two PyTorch runs bracket them.
                if args.vs_pytorch && args.compile && i + 1 == args.backends.len() {
                    eprintln!("bench: {config} on PyTorch torch.compile");
                    compiled.push(pytorch(&args, root, &ours, steps, true)?);
                }
                ours_rounds[i].push(ours);
            }
        }
        for (backend, timings) in args.backends.iter().zip(ours_rounds) {
            if let Some(t) = median_round(timings, |t| t.median_ms) {
                rows.push((config.clone(), backend.clone(), t));
            }
        }
        if let Some((t, style)) = median_round(torch, |(t, _)| t.median_ms) {
            rows.push((config.clone(), format!("pytorch ({style})"), t));
        }
        if let Some((t, style)) = median_round(compiled, |(t, _)| t.median_ms) {
            rows.push((config.clone(), format!("pytorch-compile ({style})"), t));
        }
    }
    let mut table = String::from(
        "| config | backend | median ms/step | tokens/s | GFLOP/s | vs PyTorch eager | vs torch.compile |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for (config, backend, t) in &rows {
        let ratio_to = |reference: &str| {
            let theirs = rows
                .iter()
                .find(|(c, b, _)| c == config && b.starts_with(&format!("{reference} (")))
                .map(|(_, _, r)| r.median_ms);
            match theirs {
                Some(r) if !backend.starts_with("pytorch") => format!("{:.2}×", r / t.median_ms),
                _ => String::new(),
            }
        };
        let (eager, compiled) = (ratio_to("pytorch"), ratio_to("pytorch-compile"));
        let gflops = if t.gflops > 0.0 {
            format!("{:.1}", t.gflops)
        } else {
            String::new()
        };
        table.push_str(&format!(
            "| {config} | {backend} | {:.3} | {:.0} | {gflops} | {eager} | {compiled} |\n",
            t.median_ms, t.tokens_per_sec
        ));
    }
    println!("{table}");
    println!("(ratio = PyTorch's median / ours: above 1 means tinygpt is faster)");
    if args.rounds > 1 {
        println!(
            "(each row is the median of {} interleaved rounds, by median ms/step)",
            args.rounds
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_round_is_reported() {
        assert_eq!(median_round(vec![3.0, 1.0, 2.0], |t| *t), Some(2.0));
        // With an even count, the upper of the two middle rounds.
        assert_eq!(median_round(vec![4.0, 1.0, 3.0, 2.0], |t| *t), Some(3.0));
        assert_eq!(median_round(Vec::<f64>::new(), |t| *t), None);
        let args = |list: &[&str]| BenchArgs::parse(list.iter().map(|s| s.to_string()).collect());
        assert_eq!(args(&["--rounds", "3"]).unwrap().rounds, 3);
        assert_eq!(args(&[]).unwrap().rounds, 1);
        assert!(args(&["--rounds", "0"]).is_err());
    }
}
