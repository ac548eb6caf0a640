//! Training and inference around a config: prepare the data and model ([`prepare`]), train on
//! any backend ([`trainer`]), checkpoint ([`checkpoint`]) and load runs back for generation.

pub mod activity;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod grads;
pub mod import;
pub mod memory;
pub mod metrics;
pub mod schedule;
pub mod trainer;

pub use backend::{dispatch, BackendError, BackendKind, BackendTask};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointMeta};
pub use config::{AdamWSpec, ConfigError, Corpus, DataSpec, RunConfig, TrainingSpec};
pub use memory::{available_memory, judge, MemoryEstimate, Verdict};
pub use schedule::LrSchedule;
pub use trainer::{
    adamw, apply_update, estimate_loss, full_split_loss, load_model, train, LossEstimate,
    TrainOptions, TrainReport,
};

use std::path::PathBuf;
use tinygpt_data::{load_corpus, DataError, TokenSplits};
use tinygpt_model::{ModelConfig, ModelError};
use tinygpt_tokenizer::{CharTokenizer, Tokenizer, TokenizerError};

/// Everything that can stop a run, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{origin}: {source}")]
    Model { origin: String, source: ModelError },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot write to the run directory {path}: {source}")]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode or decode model weights: {0}")]
    Record(String),
    #[error("cannot continue this run: {0}")]
    Mismatch(String),
    #[error(
        "training stopped by signal {signal} after step {step}; a checkpoint was written to {}",
        run_dir.display()
    )]
    Interrupted {
        signal: i32,
        step: usize,
        run_dir: PathBuf,
    },
    #[error(
        "the loss became NaN or infinite at step {step}; training stopped and the last good \
         checkpoint was kept. Lower the learning rate or check the data."
    )]
    NonFinite { step: usize },
}

/// A config made concrete: corpus read, vocabulary fitted, tokens split, architecture validated.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub config: RunConfig,
    pub tokenizer: CharTokenizer,
    pub splits: TokenSplits,
    pub model: ModelConfig,
}

/// Reads the corpus (downloading it if needed) and checks the config against it.
/// `origin` names the config in error messages.
pub fn prepare(config: RunConfig, origin: &str) -> Result<Prepared, TrainError> {
    let text = load_corpus(&config.data.corpus.source())?;
    let tokenizer = CharTokenizer::fit(&text)?;
    let model = config
        .model
        .resolve(tokenizer.vocab_size())
        .map_err(|source| TrainError::Model {
            origin: origin.to_string(),
            source,
        })?;
    let tokens = tokenizer.encode(&text)?;
    let splits = TokenSplits::new(&tokens, config.data.train_fraction)?;
    splits.check_block_size(model.block_size)?;
    Ok(Prepared {
        config,
        tokenizer,
        splits,
        model,
    })
}

/// A trained model's config and vocabulary, read from a checkpoint.
pub struct LoadedRun {
    pub checkpoint: Checkpoint,
    pub config: RunConfig,
    pub tokenizer: CharTokenizer,
    pub model: ModelConfig,
    pub path: PathBuf,
}

/// Opens the newest checkpoint of a run directory (or a checkpoint file given directly).
pub fn open_run(path: &std::path::Path) -> Result<LoadedRun, TrainError> {
    let file = if path.is_file() {
        path.to_path_buf()
    } else {
        checkpoint::latest_checkpoint(path)?
    };
    let checkpoint = Checkpoint::read(&file)?;
    let origin = format!("{} (embedded config)", file.display());
    let config = RunConfig::parse(&checkpoint.meta.config, &origin)?;
    let tokenizer = checkpoint.meta.vocab.clone();
    let model = config
        .model
        .resolve(tokenizer.vocab_size())
        .map_err(|source| TrainError::Model { origin, source })?;
    Ok(LoadedRun {
        checkpoint,
        config,
        tokenizer,
        model,
        path: file,
    })
}
