//! `tinygpt eval`: a model's loss and perplexity over the whole validation split of a corpus.

use super::check_memory;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use tinygpt_train::activity::{self, Phase};
use tinygpt_train::memory::group_digits;
use tinygpt_train::{open_run, prepare_with, BackendKind, Corpus, MemoryEstimate, RunConfig};

#[derive(Args)]
pub struct EvalArgs {
    /// A run directory, a .ckpt file, or a Hugging Face GPT-2 directory.
    model: PathBuf,
    /// The corpus: a RON config (its data section) or a UTF-8 text file [default: the model's
    /// own config's data, Tiny Shakespeare for a Hugging Face model].
    #[arg(long, value_name = "CONFIG_OR_CORPUS")]
    data: Option<PathBuf>,
    /// Windows per forward pass [default: 4096 tokens' worth].
    #[arg(long)]
    batch_size: Option<usize>,
    /// flex, ndarray, cuda, cuda-bf16 or cuda-f16 [default: flex].
    #[arg(long)]
    backend: Option<BackendKind>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let run = open_run(&args.model)?;
    let mut config = run.config.clone();
    let origin = match &args.data {
        Some(path) if path.extension().is_some_and(|e| e == "ron") => {
            config.data = RunConfig::load(path)?.data;
            path.display().to_string()
        }
        Some(path) => {
            config.data.corpus = Corpus::File {
                path: path.clone(),
                sha256: None,
            };
            path.display().to_string()
        }
        None => match &config.data.corpus {
            Corpus::TinyShakespeare => "Tiny Shakespeare".to_string(),
            Corpus::File { path, .. } | Corpus::Url { path, .. } => path.display().to_string(),
        },
    };
    config.training.batch_size = args
        .batch_size
        .unwrap_or((4096 / run.model.block_size).max(1));
    if config.training.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let prepared = prepare_with(config, &origin, Some(run.tokenizer.clone()))?;
    let block_size = prepared.model.block_size;
    let tokens = prepared
        .splits
        .window_count(tinygpt_data::Split::Val, block_size)
        * block_size;
    let backend = args.backend.unwrap_or_default();
    check_memory(
        &MemoryEstimate::generation(&run.model, backend),
        backend,
        "evaluation",
        "The model is too large for this machine's memory",
        false,
    )?;
    let engine = tinygpt_backends::engine(backend, None)?;
    activity::enter(Phase::LoadingCheckpoint, run.step());
    let model = engine
        .load(&run)
        .with_context(|| format!("loading weights from {}", run.path.display()))?;
    activity::enter(Phase::Evaluating, run.step());
    let loss = model.split_loss(&prepared, tinygpt_data::Split::Val);
    println!(
        "{}: val loss {loss:.4}, perplexity {:.2}, over {} tokens of {origin} (the whole \
         validation split, in windows of {block_size}) on {backend}",
        run.path.display(),
        loss.exp(),
        group_digits(tokens as u64),
    );
    Ok(())
}
