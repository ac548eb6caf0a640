//! Training and inference around a config: prepare the data and model ([`prepare`]), train on
//! any backend ([`trainer`]), checkpoint ([`checkpoint`]) and load runs back for generation.

pub mod activity;
pub mod backend;
pub mod bench;
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod grads;
pub mod import;
pub mod memory;
pub mod metrics;
pub mod muon;
pub mod parallel;
pub mod schedule;
pub mod trainer;

/// Hugging Face model directories (GPT-2 and the Llama family), in and out.
pub use tinygpt_formats as hf;

pub use backend::{BackendError, BackendKind, Devices};
pub use budget::TimeBudget;
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointMeta};
pub use config::{
    AdamWSpec, ConfigError, Corpus, DataSpec, InitFrom, MuonSpec, RunConfig, TrainingSpec,
};
pub use memory::{available_memory, judge, MemoryEstimate, Verdict};
pub use muon::RunOptimizer;
pub use parallel::{Cluster, ClusterError};
pub use schedule::{LrSchedule, Progress};
pub use trainer::{
    estimate_loss, full_split_loss, load_model, train, train_parallel, LossEstimate, RunSummary,
    TrainOptions, TrainReport,
};

use burn::tensor::backend::Backend;
use std::path::{Path, PathBuf};
use tinygpt_data::{load_corpus, DataError, TokenSplits};
use tinygpt_model::{LanguageModel, ModelConfig, ModelError};
use tinygpt_tokenizer::{AnyTokenizer, Tokenizer, TokenizerError, TokenizerSpec};

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
    #[error(transparent)]
    HuggingFace(#[from] hf::HfError),
    #[error(
        "{dir} holds no model: it has no checkpoint (checkpoints/step-*.ckpt, as `tinygpt train` \
         writes) and no {config} (a Hugging Face model directory holds {config} and {weights}, \
         e.g. `huggingface-cli download gpt2 {config} {weights} --local-dir {dir}`)",
        dir = dir.display(),
        config = hf::CONFIG_FILE,
        weights = hf::WEIGHTS_FILE
    )]
    NotAModel { dir: PathBuf },
    #[error(
        "the text contains characters the model's vocabulary lacks: {chars} (it has {vocab_size} \
         characters)"
    )]
    UnknownChars { chars: String, vocab_size: usize },
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
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("data-parallel training failed during {during}: {detail}")]
    Collective {
        during: &'static str,
        detail: String,
    },
    #[error(
        "the replicas' weights differ after training (by up to {difference:e}): the peers did \
         not apply the same updates; please report this with the command that ran"
    )]
    ReplicasDiverged { difference: f64 },
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
    pub tokenizer: AnyTokenizer,
    pub splits: TokenSplits,
    pub model: ModelConfig,
    /// The run `training.init_from: Run(...)` names, read once for its tokenizer and weights.
    pub init_run: Option<std::sync::Arc<LoadedRun>>,
}

/// Reads the corpus (downloading it if needed) and checks the config against it.
/// `origin` names the config in error messages. A run that starts from another tinygpt run
/// keeps that run's tokenizer.
pub fn prepare(config: RunConfig, origin: &str) -> Result<Prepared, TrainError> {
    let init_run = match &config.training.init_from {
        Some(InitFrom::Run { path, .. }) => Some(std::sync::Arc::new(open_run(path)?)),
        _ => None,
    };
    let tokenizer = match (&config.training.init_from, &init_run) {
        (_, Some(run)) => Some(run.tokenizer.clone()),
        (Some(InitFrom::HuggingFace { path, .. }), None) => {
            Some(pretrained_tokenizer(path, config.data.tokenizer)?)
        }
        _ => None,
    };
    Ok(Prepared {
        init_run,
        ..prepare_with(config, origin, tokenizer)?
    })
}

/// [`prepare`] with a given tokenizer (a trained model's) instead of the config's.
pub fn prepare_with(
    config: RunConfig,
    origin: &str,
    tokenizer: Option<AnyTokenizer>,
) -> Result<Prepared, TrainError> {
    let text = load_corpus(&config.data.corpus.source())?;
    let tokenizer = match tokenizer {
        Some(tokenizer) => tokenizer,
        None => AnyTokenizer::for_corpus(config.data.tokenizer, &text)?.ok_or_else(|| {
            TrainError::Mismatch(
                "data.tokenizer: Pretrained takes the tokenizer of training.init_from, and \
                 there is none"
                    .into(),
            )
        })?,
    };
    let unknown = tokenizer.unknown_chars(&text);
    if !unknown.is_empty() {
        let listed: Vec<String> = unknown.iter().take(20).map(|c| format!("{c:?}")).collect();
        return Err(TrainError::UnknownChars {
            chars: listed.join(", "),
            vocab_size: tokenizer.vocab_size(),
        });
    }
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
        init_run: None,
    })
}

/// The tokenizer of the Hugging Face directory `init_from` names, as `data.tokenizer` asks:
/// `Pretrained` takes the model's own, `Gpt2` is GPT-2's BPE (right for a GPT-2 only).
fn pretrained_tokenizer(dir: &Path, spec: TokenizerSpec) -> Result<AnyTokenizer, TrainError> {
    let hf_config = hf::HfConfig::read(dir)?;
    match (spec, &hf_config) {
        (TokenizerSpec::Pretrained, _) | (TokenizerSpec::Gpt2, hf::HfConfig::Gpt2(_)) => {
            Ok(hf_config.tokenizer(dir)?)
        }
        (TokenizerSpec::Gpt2, hf::HfConfig::Llama(config)) => Err(TrainError::Mismatch(format!(
            "{} is a {} with its own tokenizer.json, not GPT-2's tokens: set data: (tokenizer: \
             Pretrained, ...)",
            dir.display(),
            config.architecture
        ))),
        (TokenizerSpec::Char, _) => Err(TrainError::Mismatch(
            "a pretrained model reads its own tokens, not characters: set data: (tokenizer: \
             Pretrained, ...)"
                .into(),
        )),
    }
}

/// A trained model's config and vocabulary, read from a checkpoint or a Hugging Face directory.
#[derive(Debug)]
pub struct LoadedRun {
    pub weights: Weights,
    pub config: RunConfig,
    pub tokenizer: AnyTokenizer,
    pub model: ModelConfig,
    pub path: PathBuf,
}

/// Where a loaded model's weights are.
// One per loaded model: boxing the checkpoint would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Weights {
    Checkpoint(Checkpoint),
    /// A Hugging Face directory's `model.safetensors`, read when the model is built.
    HuggingFace,
}

impl LoadedRun {
    /// The checkpoint, for a tinygpt run.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match &self.weights {
            Weights::Checkpoint(checkpoint) => Some(checkpoint),
            Weights::HuggingFace => None,
        }
    }

    /// Optimizer steps behind these weights (0 for a Hugging Face model: unknown here).
    pub fn step(&self) -> usize {
        self.checkpoint().map_or(0, |c| c.meta.step)
    }

    /// The backend that trained it, when known.
    pub fn backend(&self) -> Option<&str> {
        self.checkpoint().map(|c| c.meta.backend.as_str())
    }

    /// Builds the model with its weights on backend `B`.
    pub fn load_model<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<LanguageModel<B>, TrainError> {
        match &self.weights {
            Weights::Checkpoint(checkpoint) => load_model(&self.model, &checkpoint.model, device),
            Weights::HuggingFace => Ok(hf::load_model(&self.path, &self.model, device)?),
        }
    }
}

/// Opens the newest checkpoint of a run directory, a checkpoint file given directly, or a Hugging
/// Face directory (`config.json` and weights; GPT-2 or the Llama family).
pub fn open_run(path: &Path) -> Result<LoadedRun, TrainError> {
    if hf::is_hf_dir(path) {
        return open_hf(path);
    }
    if path.is_dir() && !path.join(checkpoint::CHECKPOINT_DIR).is_dir() {
        return Err(TrainError::NotAModel {
            dir: path.to_path_buf(),
        });
    }
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
        weights: Weights::Checkpoint(checkpoint),
        config,
        tokenizer,
        model,
        path: file,
    })
}

fn open_hf(dir: &Path) -> Result<LoadedRun, TrainError> {
    let hf_config = hf::HfConfig::read(dir)?;
    let tokenizer = hf_config.tokenizer(dir)?;
    let config = RunConfig {
        model: hf_config.model_spec(None, 0.0),
        data: DataSpec {
            tokenizer: match hf_config {
                hf::HfConfig::Gpt2(_) => TokenizerSpec::Gpt2,
                hf::HfConfig::Llama(_) => TokenizerSpec::Pretrained,
            },
            ..DataSpec::default()
        },
        training: TrainingSpec::for_pretrained(),
    };
    // The checkpoint's vocabulary is the model's, even one smaller than the tokenizer's (a test
    // model): only training on GPT-2 tokens needs all of them.
    let model = config
        .model
        .resolve(hf_config.vocab_size())
        .map_err(|source| TrainError::Model {
            origin: dir.join(hf::CONFIG_FILE).display().to_string(),
            source,
        })?;
    Ok(LoadedRun {
        weights: Weights::HuggingFace,
        config,
        tokenizer,
        model,
        path: dir.to_path_buf(),
    })
}
