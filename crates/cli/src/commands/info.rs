//! `tinygpt info`: a config's or a model's architecture layer by layer, and the memory its jobs
//! need, all from the config (no weights are built).

use super::{is_model_path, load_prepared};
use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use tinygpt_train::memory::{group_digits, human_bytes};
use tinygpt_train::{available_memory, open_run, BackendKind, MemoryEstimate};

#[derive(Args)]
pub struct InfoArgs {
    /// A RON config (configs/transformer.ron), a run directory, a .ckpt file, or a Hugging
    /// Face GPT-2 directory (config.json + model.safetensors).
    config: PathBuf,
    /// The backend to estimate memory for [default: flex].
    #[arg(long)]
    backend: Option<BackendKind>,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let path = &args.config;
    let backend = args.backend.unwrap_or_default();
    let (model, batch, tokenizer) = if is_model_path(path) {
        let run = open_run(path)?;
        (run.model, run.config.training.batch_size, run.tokenizer)
    } else {
        let prepared = load_prepared(path)?;
        let batch = prepared.config.training.batch_size;
        (prepared.model, batch, prepared.tokenizer)
    };
    let model = &model;
    // Written, not println!'d: `tinygpt info ... | head` closes the pipe early, which is fine.
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let rows = model.summary();
    let name_width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let detail_width = rows.iter().map(|r| r.detail.len()).max().unwrap_or(0);
    let shape_width = rows.iter().map(|r| r.shape.len()).max().unwrap_or(0);
    writeln!(
        out,
        "{}: vocab {} ({}), n_embd {}, block_size {}",
        path.display(),
        model.vocab_size,
        tokenizer.describe(),
        model.n_embd,
        model.block_size
    )?;
    for row in &rows {
        writeln!(
            out,
            "  {:name_width$}  {:detail_width$}  {:shape_width$}  {:>12}",
            row.name,
            row.detail,
            row.shape,
            group_digits(row.params)
        )?;
    }
    writeln!(
        out,
        "total parameters: {}",
        group_digits(model.num_params())
    )?;
    let training = MemoryEstimate::training(model, batch, backend);
    let generation = MemoryEstimate::generation(model, backend);
    writeln!(
        out,
        "memory on {backend}: training (batch {batch} x {}) about {}: {}",
        model.block_size,
        human_bytes(training.total()),
        training.breakdown()
    )?;
    writeln!(
        out,
        "memory on {backend}: generation about {}",
        human_bytes(generation.total())
    )?;
    if backend.is_cpu() {
        match available_memory() {
            Some(available) => writeln!(
                out,
                "this machine: {} ({})",
                human_bytes(available.bytes as f64),
                available.limited_by
            )?,
            None => writeln!(out, "this machine: its available memory is unknown here")?,
        }
    }
    Ok(())
}
