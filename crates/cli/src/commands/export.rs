//! `tinygpt export`: write a model as a Hugging Face directory that `transformers` loads.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use tinygpt_train::memory::group_digits;
use tinygpt_train::{open_run, BackendKind};

#[derive(Args)]
pub struct ExportArgs {
    /// A run directory or .ckpt file of a GPT-2- or Llama-shaped model (or a Hugging Face
    /// directory).
    model: PathBuf,
    /// The directory to write config.json and model.safetensors to.
    #[arg(long, value_name = "DIR")]
    hf: PathBuf,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let run = open_run(&args.model)?;
    // The weights are only copied: the CPU backend whose tensors read back cheapest.
    let engine = tinygpt_backends::engine(BackendKind::NdArray, None)?;
    let model = engine
        .load(&run)
        .with_context(|| format!("loading weights from {}", run.path.display()))?;
    model.export_hf(&run.tokenizer, &args.hf)?;
    println!(
        "wrote {} and {} to {} ({} parameters); load it with \
         AutoModelForCausalLM.from_pretrained({:?})",
        tinygpt_train::hf::CONFIG_FILE,
        tinygpt_train::hf::WEIGHTS_FILE,
        args.hf.display(),
        group_digits(run.model.num_params()),
        args.hf.display().to_string()
    );
    Ok(())
}
