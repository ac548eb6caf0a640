//! The run config: one RON file declaring the architecture, the data and the training run.

use crate::budget::TimeBudget;
use crate::schedule::LrSchedule;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tinygpt_data::CorpusSource;
use tinygpt_model::ModelSpec;
use tinygpt_tokenizer::TokenizerSpec;

/// A whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSpec,
    #[serde(default)]
    pub data: DataSpec,
    pub training: TrainingSpec,
}

/// A config as written: the model section may be left out when `training.init_from` names a
/// pretrained model, whose architecture it then is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenConfig {
    #[serde(default)]
    model: Option<ModelSpec>,
    #[serde(default)]
    data: DataSpec,
    training: TrainingSpec,
}

/// Which text to train on and how to split it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSpec {
    pub corpus: Corpus,
    /// Share of the tokens used for training; the rest validates.
    pub train_fraction: f64,
    /// `Char` (the default: the corpus's characters) or `Gpt2` (GPT-2's BPE).
    #[serde(skip_serializing_if = "is_char")]
    pub tokenizer: TokenizerSpec,
}

fn is_char(spec: &TokenizerSpec) -> bool {
    *spec == TokenizerSpec::Char
}

impl Default for DataSpec {
    fn default() -> Self {
        Self {
            corpus: Corpus::TinyShakespeare,
            train_fraction: 0.9,
            tokenizer: TokenizerSpec::Char,
        }
    }
}

/// Weights a run starts from instead of a random init (fine-tuning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InitFrom {
    /// A Hugging Face directory (`config.json` and weights): GPT-2 or the Llama family.
    HuggingFace {
        path: PathBuf,
        /// A shorter context than the checkpoint's (its first position embeddings are kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block_size: Option<usize>,
        /// The model's dropout while fine-tuning.
        #[serde(default)]
        dropout: f64,
    },
    /// A tinygpt run directory (its newest checkpoint) or `.ckpt` file.
    Run {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block_size: Option<usize>,
        #[serde(default)]
        dropout: f64,
    },
}

impl InitFrom {
    pub fn path(&self) -> &Path {
        match self {
            InitFrom::HuggingFace { path, .. } | InitFrom::Run { path, .. } => path,
        }
    }

    /// The architecture of the weights, with this section's context and dropout.
    pub fn model_spec(&self) -> Result<ModelSpec, String> {
        match self {
            InitFrom::HuggingFace {
                path,
                block_size,
                dropout,
            } => {
                let config = crate::hf::HfConfig::read(path).map_err(|e| e.to_string())?;
                Ok(config.model_spec(*block_size, *dropout))
            }
            InitFrom::Run {
                path,
                block_size,
                dropout,
            } => {
                let run = crate::open_run(path).map_err(|e| e.to_string())?;
                let mut spec = run.config.model;
                spec.block_size = block_size.unwrap_or(spec.block_size);
                spec.dropout = *dropout;
                Ok(spec)
            }
        }
    }
}

/// Where the corpus comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Corpus {
    /// Tiny Shakespeare at `data/tinyshakespeare/input.txt`, downloaded and verified on first use.
    TinyShakespeare,
    /// A local UTF-8 text file.
    File {
        path: PathBuf,
        #[serde(default)]
        sha256: Option<String>,
    },
    /// A text file downloaded from `url` to `path` on first use.
    Url {
        url: String,
        path: PathBuf,
        #[serde(default)]
        sha256: Option<String>,
    },
}

/// Where Tiny Shakespeare is cached, relative to the working directory.
pub const TINY_SHAKESPEARE_PATH: &str = "data/tinyshakespeare/input.txt";

impl Corpus {
    pub fn source(&self) -> CorpusSource {
        match self {
            Corpus::TinyShakespeare => CorpusSource::tiny_shakespeare(TINY_SHAKESPEARE_PATH),
            Corpus::File { path, sha256 } => CorpusSource {
                path: path.clone(),
                url: None,
                sha256: sha256.clone(),
            },
            Corpus::Url { url, path, sha256 } => CorpusSource {
                path: path.clone(),
                url: Some(url.clone()),
                sha256: sha256.clone(),
            },
        }
    }
}

/// The optimisation run, as the tutorial's hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    pub batch_size: usize,
    /// Optimizer steps to train; with a `time_budget`, the steps a `Cosine` schedule is written
    /// in (the budget, not this, ends the run).
    #[serde(default)]
    pub max_iters: usize,
    /// Train until this much training time is spent (`"10m"`): evaluations, checkpoints and the
    /// sample are not counted. Schedules stretch to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_budget: Option<TimeBudget>,
    /// The learning rate of AdamW (with `muon`, of the embeddings, head, norms and scalars).
    pub learning_rate: f64,
    /// Estimate train/val loss (and checkpoint) every this many steps.
    pub eval_interval: usize,
    /// Batches averaged per loss estimate.
    pub eval_iters: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub optimizer: AdamWSpec,
    /// Muon for the hidden matrices (every 2-D weight inside the layer stack); AdamW
    /// (`optimizer`) keeps the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muon: Option<MuonSpec>,
    /// How the learning rate moves over the run (constant by default).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Clip gradients to this global L2 norm (as `torch.nn.utils.clip_grad_norm_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    /// Micro-batches of `batch_size` whose gradients are summed into one optimizer step.
    #[serde(default = "default_accumulation")]
    pub gradient_accumulation_steps: usize,
    /// Characters generated at the end of training.
    #[serde(default = "default_sample_tokens")]
    pub sample_tokens: usize,
    /// How many step checkpoints to keep (the best one is kept besides).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Start from pretrained weights (fine-tuning); the model section may then be left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
}

impl TrainingSpec {
    /// What a pretrained model without a tinygpt config (a Hugging Face directory) is evaluated
    /// and sampled with.
    pub fn for_pretrained() -> Self {
        Self {
            batch_size: 4,
            max_iters: 0,
            time_budget: None,
            learning_rate: 3e-5,
            eval_interval: 1,
            eval_iters: 1,
            seed: default_seed(),
            optimizer: AdamWSpec::default(),
            muon: None,
            lr_schedule: LrSchedule::default(),
            grad_clip: None,
            gradient_accumulation_steps: 1,
            sample_tokens: default_sample_tokens(),
            keep_checkpoints: default_keep(),
            init_from: None,
        }
    }
}

fn default_accumulation() -> usize {
    1
}
fn default_seed() -> u64 {
    1337
}
fn default_sample_tokens() -> usize {
    500
}
fn default_keep() -> usize {
    3
}

/// AdamW with PyTorch's defaults (Burn's differ: eps 1e-5, weight decay 1e-4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWSpec {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Decay only parameters of two or more dimensions (matrices and embeddings), not biases
    /// and LayerNorm, as nanoGPT groups them. The tutorial decays everything.
    pub decay_matrices_only: bool,
}

impl Default for AdamWSpec {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decay_matrices_only: false,
        }
    }
}

/// Muon (MomentUm Orthogonalized by Newton-Schulz, Keller Jordan's): SGD with Nesterov momentum
/// whose update is orthogonalised by a quintic Newton-Schulz iteration, for 2-D hidden weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MuonSpec {
    /// Peak learning rate of the Muon group; the schedule scales it as it scales
    /// `learning_rate`.
    pub lr: f64,
    pub momentum: f64,
    /// Nesterov momentum (the reference's default).
    pub nesterov: bool,
    /// Newton-Schulz iterations.
    pub ns_steps: usize,
    /// Decoupled weight decay of the Muon group (`lr · weight_decay · W` each step).
    pub weight_decay: f64,
}

impl Default for MuonSpec {
    fn default() -> Self {
        Self {
            lr: 0.02,
            momentum: 0.95,
            nesterov: true,
            ns_steps: 5,
            weight_decay: 0.0,
        }
    }
}

/// A config that cannot be read or cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl RunConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses RON text; `origin` names it in errors. Layer and corpus settings may be written
    /// without the extra parentheses (`Block(n_head: 4)`), and optional values without `Some`.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let written: WrittenConfig =
            ron_options()
                .from_str(text)
                .map_err(|e| ConfigError::Syntax {
                    path: origin.to_string(),
                    line: e.position.line,
                    column: e.position.col,
                    message: e.code.to_string(),
                })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        let model =
            match (written.model, &written.training.init_from) {
                (Some(model), _) => model,
                (None, Some(init_from)) => init_from
                    .model_spec()
                    .map_err(|e| invalid(format!("training.init_from: {e}")))?,
                (None, None) => return Err(invalid(
                    "the config has no model section: describe the architecture, or start from \
                     a pretrained model with training.init_from"
                        .into(),
                )),
            };
        let config = RunConfig {
            model,
            data: written.data,
            training: written.training,
        };
        config.check().map_err(|message| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// The config as RON, for checkpoints and run directories.
    pub fn to_ron(&self) -> String {
        let pretty = ron::ser::PrettyConfig::default().extensions(RON_EXTENSIONS);
        ron::ser::to_string_pretty(self, pretty).expect("a run config always serialises")
    }

    /// Checks what can be checked without the corpus.
    fn check(&self) -> Result<(), String> {
        let t = &self.training;
        let positive = [
            ("batch_size", t.batch_size),
            ("eval_interval", t.eval_interval),
            ("eval_iters", t.eval_iters),
            ("keep_checkpoints", t.keep_checkpoints),
            ("gradient_accumulation_steps", t.gradient_accumulation_steps),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(format!("training.{field} must be at least 1, got 0"));
            }
        }
        if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
            return Err(format!(
                "training.learning_rate must be a positive number, got {}",
                t.learning_rate
            ));
        }
        t.lr_schedule.check(t.learning_rate)?;
        match t.time_budget {
            None if t.max_iters == 0 => {
                return Err("training needs max_iters (steps) or time_budget (e.g. \"10m\")".into())
            }
            Some(_) if t.max_iters == 0 && t.lr_schedule.counts_steps_of_the_run() => {
                return Err(
                    "training.lr_schedule: a Cosine schedule is written in steps; under a \
                     time_budget set max_iters to the steps it is written for (it then \
                     stretches over the budget), or use Wsd, which needs none"
                        .into(),
                )
            }
            _ => {}
        }
        if let Some(muon) = &t.muon {
            if !(muon.lr > 0.0 && muon.lr.is_finite()) {
                return Err(format!(
                    "training.muon.lr must be a positive number, got {}",
                    muon.lr
                ));
            }
            if !(0.0..1.0).contains(&muon.momentum) {
                return Err(format!(
                    "training.muon.momentum must be in [0, 1), got {}",
                    muon.momentum
                ));
            }
            if muon.ns_steps == 0 {
                return Err("training.muon.ns_steps must be at least 1, got 0".into());
            }
            if !(muon.weight_decay >= 0.0 && muon.weight_decay.is_finite()) {
                return Err(format!(
                    "training.muon.weight_decay must be zero or positive, got {}",
                    muon.weight_decay
                ));
            }
        }
        if let Some(clip) = t.grad_clip {
            if !(clip > 0.0 && clip.is_finite()) {
                return Err(format!(
                    "training.grad_clip must be a positive number, got {clip}"
                ));
            }
        }
        let o = &t.optimizer;
        for (field, value) in [("beta1", o.beta1), ("beta2", o.beta2)] {
            if !(0.0..1.0).contains(&value) {
                return Err(format!(
                    "training.optimizer.{field} must be in [0, 1), got {value}"
                ));
            }
        }
        if !(o.eps > 0.0 && o.eps.is_finite()) {
            return Err(format!(
                "training.optimizer.eps must be positive, got {}",
                o.eps
            ));
        }
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            return Err(format!(
                "training.optimizer.weight_decay must be zero or positive, got {}",
                o.weight_decay
            ));
        }
        if matches!(t.init_from, Some(InitFrom::HuggingFace { .. }))
            && self.data.tokenizer == TokenizerSpec::Char
        {
            return Err(
                "training.init_from: a Hugging Face model reads its own tokens, not \
                 characters: set data: (tokenizer: Pretrained, ...) (Gpt2 works for a GPT-2 too)"
                    .into(),
            );
        }
        if t.init_from.is_none() && self.data.tokenizer == TokenizerSpec::Pretrained {
            return Err(
                "data.tokenizer: Pretrained takes the tokenizer of training.init_from, and \
                 there is none: use Char or Gpt2, or start from a pretrained model"
                    .into(),
            );
        }
        let f = self.data.train_fraction;
        if !(f > 0.0 && f < 1.0) {
            return Err(format!(
                "data.train_fraction must be strictly between 0 and 1, got {f}"
            ));
        }
        // Sizes that do not depend on the vocabulary are checked now, so `info` and `train` fail
        // before touching the corpus; the full check runs once the vocabulary is known.
        match self.model.resolve(PLACEHOLDER_VOCAB) {
            Ok(_) | Err(tinygpt_model::ModelError::OutputWidth { .. }) => {}
            // Without n_embd the widths follow the vocabulary: layers are checked later.
            Err(tinygpt_model::ModelError::Layer { .. }) if self.model.n_embd.is_none() => {}
            Err(other) => return Err(other.to_string()),
        }
        Ok(())
    }
}

/// Any vocabulary size works for the early check when n_embd is set: no layer depends on it.
const PLACEHOLDER_VOCAB: usize = 65;

/// `Block(n_head: 4)` rather than `Block((n_head: 4))`, and `Some` may be left out.
pub const RON_EXTENSIONS: ron::extensions::Extensions =
    ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES
        .union(ron::extensions::Extensions::IMPLICIT_SOME);

fn ron_options() -> ron::Options {
    ron::Options::default().with_default_extension(RON_EXTENSIONS)
}
