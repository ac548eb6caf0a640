//! Model files in and out: Hugging Face model directories, as the hub serves them and as
//! `save_pretrained` writes them, read into a tinygpt model and written from one.
//!
//! Two architecture families: GPT-2 ([`gpt2`]: `GPT2LMHeadModel`) and the Llama family
//! ([`llama`]: `LlamaForCausalLM`, `Qwen2ForCausalLM`, `MistralForCausalLM` without a sliding
//! window — SmolLM2, Qwen2.5, TinyLlama). A directory holds `config.json`, the weights as
//! `model.safetensors` or as shards listed in `model.safetensors.index.json`, and for the Llama
//! family its own `tokenizer.json`.

pub mod gpt2;
pub mod llama;
mod tensors;

pub use gpt2::HfGpt2Config;
pub use llama::LlamaConfig;
pub use tensors::{write_atomic, SafetensorsDtype};

use burn::tensor::backend::Backend;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tinygpt_layers::LayerConfig;
use tinygpt_model::{LanguageModel, ModelConfig, ModelSpec};
use tinygpt_tokenizer::{AnyTokenizer, HfTokenizer, HfTokenizerError};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint: which `model-0000N-of-0000M.safetensors` holds each tensor.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The architectures tinygpt reads, as `config.json`'s `architectures` names them.
pub const SUPPORTED: &str =
    "GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM";

/// What goes wrong reading or writing a Hugging Face directory, each saying which file.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error(
        "{dir} has no {CONFIG_FILE}: a Hugging Face model directory holds {CONFIG_FILE} and \
         {WEIGHTS_FILE} (e.g. `huggingface-cli download gpt2 {CONFIG_FILE} {WEIGHTS_FILE} \
         --local-dir {dir}`)"
    )]
    NoConfig { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error(
        "{path} describes a {model_type:?} model ({architectures}); tinygpt reads GPT-2 and the \
         Llama family: {SUPPORTED}"
    )]
    Architecture {
        path: PathBuf,
        model_type: String,
        architectures: String,
    },
    #[error("{path}: {option} is not supported by tinygpt ({why})")]
    Unsupported {
        path: PathBuf,
        option: String,
        why: String,
    },
    #[error(
        "{dir} has neither {WEIGHTS_FILE} nor {INDEX_FILE}: download the weights too (e.g. \
         `huggingface-cli download <model> --include '*.safetensors*' --local-dir {dir}`)"
    )]
    NoWeights { dir: PathBuf },
    #[error("{path} is not a valid safetensors file (truncated or corrupted?): {message}")]
    Weights { path: PathBuf, message: String },
    #[error(
        "{path} has no tensor {name:?}: is it a checkpoint of the model {CONFIG_FILE} describes?"
    )]
    Missing { path: PathBuf, name: String },
    #[error("{path}: tensor {name:?} has shape {found:?}, the model in {CONFIG_FILE} needs {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: tensor {name:?} has dtype {dtype}; tinygpt reads F32, F16, BF16 and F64")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{path} holds tensors the model in {CONFIG_FILE} does not have: {names}")]
    Extra { path: PathBuf, names: String },
    #[error("cannot export to Hugging Face's format: {0}")]
    NotExportable(String),
    #[error(transparent)]
    Tokenizer(#[from] HfTokenizerError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// True when `dir` looks like a Hugging Face model directory (it has a `config.json`).
pub fn is_hf_dir(dir: &Path) -> bool {
    dir.is_dir() && dir.join(CONFIG_FILE).is_file()
}

/// A directory's `config.json`, read as the family its `model_type` names.
#[derive(Debug, Clone, PartialEq)]
pub enum HfConfig {
    Gpt2(HfGpt2Config),
    Llama(LlamaConfig),
}

impl HfConfig {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self, HfError> {
        let (text, path) = read_config(dir)?;
        Self::parse(&text, &path)
    }

    /// `config.json`'s text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, HfError> {
        let json = parse_json(text, path)?;
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
        match model_type {
            "gpt2" => Ok(HfConfig::Gpt2(HfGpt2Config::from_json(&json, path)?)),
            "llama" | "qwen2" | "mistral" => {
                Ok(HfConfig::Llama(LlamaConfig::from_json(&json, path)?))
            }
            _ => Err(HfError::Architecture {
                path: path.to_path_buf(),
                model_type: model_type.to_string(),
                architectures: architectures(&json),
            }),
        }
    }

    /// The architecture as a tinygpt config writes it; `block_size` crops the context,
    /// `dropout` is the model's while fine-tuning.
    pub fn model_spec(&self, block_size: Option<usize>, dropout: f64) -> ModelSpec {
        match self {
            HfConfig::Gpt2(config) => config.model_spec(block_size, dropout),
            HfConfig::Llama(config) => config.model_spec(block_size, dropout),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            HfConfig::Gpt2(config) => config.vocab_size,
            HfConfig::Llama(config) => config.vocab_size,
        }
    }

    /// The model's tokenizer: GPT-2's BPE (compiled in) for a GPT-2, the directory's own
    /// `tokenizer.json` for the Llama family.
    pub fn tokenizer(&self, dir: &Path) -> Result<AnyTokenizer, HfError> {
        Ok(match self {
            HfConfig::Gpt2(_) => AnyTokenizer::Gpt2(Default::default()),
            HfConfig::Llama(_) => AnyTokenizer::HuggingFace(HfTokenizer::from_dir(dir)?),
        })
    }
}

/// `dir/config.json`'s text and path.
fn read_config(dir: &Path) -> Result<(String, PathBuf), HfError> {
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(HfError::NoConfig {
            dir: dir.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|source| HfError::Read {
        path: path.clone(),
        source,
    })?;
    Ok((text, path))
}

fn parse_json(text: &str, path: &Path) -> Result<Value, HfError> {
    serde_json::from_str(text).map_err(|e| HfError::BadConfig {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

/// `config.json`'s `architectures`, joined, for error messages.
fn architectures(json: &Value) -> String {
    json.get("architectures")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "no architectures listed".into())
}

/// Whether a model is built of Llama-family layers (and so reads and writes that layout).
fn is_llama_shaped(config: &ModelConfig) -> bool {
    config
        .layers
        .iter()
        .any(|layer| matches!(layer.config, LayerConfig::LlamaBlock(_)))
}

/// Builds the model of `config` (from [`HfConfig::model_spec`]) with the weights of `dir`.
pub fn load_model<B: Backend>(
    dir: &Path,
    config: &ModelConfig,
    device: &B::Device,
) -> Result<LanguageModel<B>, HfError> {
    if is_llama_shaped(config) {
        llama::load_model(dir, config, device)
    } else {
        gpt2::load_model(dir, config, device)
    }
}

/// Writes a Hugging Face directory that `transformers`' `from_pretrained` loads with the same
/// logits: GPT-2's layout for a GPT-2-shaped model, Llama's (or Qwen2's) for a Llama-shaped one.
pub fn export<B: Backend>(
    model: &LanguageModel<B>,
    config: &ModelConfig,
    tokenizer: &AnyTokenizer,
    dir: &Path,
) -> Result<(), HfError> {
    if let AnyTokenizer::Char(chars) = tokenizer {
        return Err(HfError::NotExportable(format!(
            "this is a character-level model ({} characters); a Hugging Face model reads \
             subword tokens, so only runs trained with GPT-2's tokens (tokenizer: Gpt2) or a \
             pretrained model's (tokenizer: Pretrained) can be exported",
            tinygpt_tokenizer::Tokenizer::vocab_size(chars)
        )));
    }
    if is_llama_shaped(config) {
        llama::export(model, config, tokenizer, dir)
    } else {
        gpt2::export(model, config, tokenizer, dir)
    }
}

/// Writes `bytes` to `dir/name`, creating `dir`.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), HfError> {
    std::fs::create_dir_all(dir).map_err(|source| HfError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(name);
    write_atomic(&path, bytes).map_err(|source| HfError::Write { path, source })
}
