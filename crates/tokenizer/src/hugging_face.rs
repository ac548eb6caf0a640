//! Hugging Face `tokenizer.json` files, as Llama-family models ship them: byte-level BPE
//! (SmolLM2, Qwen2.5) and SentencePiece-style BPE with byte fallback and a `▁` pre-tokenizer
//! (TinyLlama, Llama 2), through the `tokenizers` crate (pure Rust, no downloads).
//!
//! Beside the vocabulary, a model directory says which special tokens frame a text: the
//! post-processor in `tokenizer.json` adds `<s>` where the model expects it (TinyLlama; SmolLM2
//! adds nothing), `generation_config.json` (or `config.json`) names the end-of-sequence tokens
//! generation stops at, and `tokenizer_config.json` (or `chat_template.jinja`) holds the chat
//! template of an instruct model.

use crate::{Tokenizer, TokenizerError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// What goes wrong reading a model directory's tokenizer, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum HfTokenizerError {
    #[error(
        "{dir} has no {TOKENIZER_FILE}: a Hugging Face model directory needs one for its \
         tokens (e.g. `huggingface-cli download HuggingFaceTB/SmolLM2-135M --local-dir {dir}`)"
    )]
    Missing { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a tokenizer tinygpt can read: {message}")]
    Parse { path: PathBuf, message: String },
}

/// The special tokens and chat template of a model, from its directory's JSON files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpecialTokens {
    /// `bos_token_id`: what generation starts from without a prompt.
    pub bos_token_id: Option<usize>,
    /// `eos_token_id` (one or several): generation stops at any of them.
    pub eos_token_ids: Vec<usize>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// The Jinja template that turns chat messages into the model's prompt.
    pub chat_template: Option<String>,
    /// `tokenizer_config.json` and `generation_config.json` as read, written back on export.
    pub tokenizer_config: Option<String>,
    pub generation_config: Option<String>,
}

/// A `tokenizer.json` with its model's special tokens. Serialises with the whole file inside
/// (a checkpoint then needs no directory beside it).
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "Stored", into = "Stored")]
pub struct HfTokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    json: Arc<str>,
    special: SpecialTokens,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    hugging_face: StoredTokenizer,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredTokenizer {
    tokenizer_json: String,
    special: SpecialTokens,
}

impl TryFrom<Stored> for HfTokenizer {
    type Error = String;

    fn try_from(stored: Stored) -> Result<Self, String> {
        let StoredTokenizer {
            tokenizer_json,
            special,
        } = stored.hugging_face;
        HfTokenizer::from_json(&tokenizer_json, special)
    }
}

impl From<HfTokenizer> for Stored {
    fn from(tokenizer: HfTokenizer) -> Self {
        Stored {
            hugging_face: StoredTokenizer {
                tokenizer_json: tokenizer.json.to_string(),
                special: tokenizer.special,
            },
        }
    }
}

impl HfTokenizer {
    /// `tokenizer.json` text and the model's special tokens.
    pub fn from_json(json: &str, special: SpecialTokens) -> Result<Self, String> {
        let inner =
            tokenizers::Tokenizer::from_bytes(json.as_bytes()).map_err(|e| e.to_string())?;
        Ok(Self {
            inner: Arc::new(inner),
            json: Arc::from(json),
            special,
        })
    }

    /// The tokenizer of a model directory: `tokenizer.json` (required) and, when present,
    /// `tokenizer_config.json`, `chat_template.jinja`, `generation_config.json` and `config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, HfTokenizerError> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            return Err(HfTokenizerError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| HfTokenizerError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let optional = |name: &str| -> Result<Option<(PathBuf, String)>, HfTokenizerError> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(Some((path.clone(), read(&path)?)))
            } else {
                Ok(None)
            }
        };
        let parse = |(path, text): &(PathBuf, String)| -> Result<Value, HfTokenizerError> {
            serde_json::from_str(text).map_err(|e| HfTokenizerError::Parse {
                path: path.clone(),
                message: format!("not valid JSON: {e}"),
            })
        };
        let json = read(&path)?;
        let tokenizer_config = optional(TOKENIZER_CONFIG_FILE)?;
        let generation_config = optional(GENERATION_CONFIG_FILE)?;
        let model_config = optional("config.json")?;
        let template_file = optional(CHAT_TEMPLATE_FILE)?;
        let tokenizer_values = tokenizer_config.as_ref().map(parse).transpose()?;
        let generation_values = generation_config.as_ref().map(parse).transpose()?;
        let model_values = model_config.as_ref().map(parse).transpose()?;
        let mut special = SpecialTokens {
            tokenizer_config: tokenizer_config.as_ref().map(|(_, t)| t.clone()),
            generation_config: generation_config.as_ref().map(|(_, t)| t.clone()),
            ..SpecialTokens::default()
        };
        if let Some(config) = &tokenizer_values {
            special.bos_token = token_text(config.get("bos_token"));
            special.eos_token = token_text(config.get("eos_token"));
            special.chat_template = chat_template(config.get("chat_template"));
        }
        if let Some((_, template)) = template_file {
            special.chat_template = Some(template);
        }
        let tokenizer = Self::from_json(&json, SpecialTokens::default()).map_err(|message| {
            HfTokenizerError::Parse {
                path: path.clone(),
                message,
            }
        })?;
        // The ids: generation_config.json first (what `generate` reads), then config.json, then
        // the token texts of tokenizer_config.json.
        for values in [&generation_values, &model_values].into_iter().flatten() {
            if special.bos_token_id.is_none() {
                special.bos_token_id = values.get("bos_token_id").and_then(token_id);
            }
            if special.eos_token_ids.is_empty() {
                special.eos_token_ids = token_ids(values.get("eos_token_id"));
            }
        }
        let id_of = |text: &Option<String>| {
            text.as_deref()
                .and_then(|t| tokenizer.inner.token_to_id(t))
                .map(|id| id as usize)
        };
        if special.bos_token_id.is_none() {
            special.bos_token_id = id_of(&special.bos_token);
        }
        if special.eos_token_ids.is_empty() {
            special.eos_token_ids = id_of(&special.eos_token).into_iter().collect();
        }
        Ok(Self {
            special,
            ..tokenizer
        })
    }

    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// `tokenizer.json` as read.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Whether `id` ends a generation.
    pub fn is_end(&self, id: usize) -> bool {
        self.special.eos_token_ids.contains(&id)
    }

    /// The model's chat template rendered over `messages`, as `transformers`'
    /// `apply_chat_template` renders it (Jinja with `trim_blocks` and `lstrip_blocks`, the
    /// special tokens as variables, `raise_exception`); with `add_generation_prompt`, the text
    /// that opens the assistant's turn is added. Encode the result with [`Tokenizer::encode`]:
    /// the template writes the special tokens itself.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self.special.chat_template.as_deref().ok_or_else(|| {
            TokenizerError::Chat(
                "the model has no chat_template (in tokenizer_config.json or \
                 chat_template.jinja): it is not an instruct model; use `generate` instead"
                    .into(),
            )
        })?;
        let fail = |e: minijinja::Error| {
            let mut message = format!("the model's chat template failed: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            TokenizerError::Chat(message)
        };
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_template("chat_template", template).map_err(fail)?;
        let context = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.special.bos_token.clone().unwrap_or_default(),
            eos_token => self.special.eos_token.clone().unwrap_or_default(),
        };
        env.get_template("chat_template")
            .and_then(|t| t.render(context))
            .map_err(fail)
    }

    /// What the model's model is: "byte-level BPE" or "SentencePiece-style BPE".
    fn kind(&self) -> &'static str {
        if self.json.contains("\"ByteLevel\"") {
            "byte-level BPE"
        } else if self.json.contains("\"Metaspace\"") || self.json.contains("\"ByteFallback\"") {
            "SentencePiece-style BPE"
        } else {
            "tokenizer.json"
        }
    }

    pub fn describe(&self) -> String {
        format!("Hugging Face {}, {} tokens", self.kind(), self.vocab_size())
    }

    fn encode_with(&self, text: &str, special: bool) -> Result<Vec<usize>, TokenizerError> {
        let encoding = self
            .inner
            .encode_fast(text, special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().iter().map(|&id| id as usize).collect())
    }

    fn check(&self, ids: &[usize]) -> Result<Vec<u32>, TokenizerError> {
        let vocab_size = self.vocab_size();
        ids.iter()
            .map(|&id| {
                if id < vocab_size {
                    Ok(id as u32)
                } else {
                    Err(TokenizerError::UnknownToken { id, vocab_size })
                }
            })
            .collect()
    }
}

/// One message of a chat: `role` is `system`, `user` or `assistant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// A special token as `tokenizer_config.json` writes it: a string, or `{"content": ...}`.
fn token_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Object(map) => map.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `chat_template`: a string, or a list of named templates (the one named "default").
fn chat_template(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(template) => Some(template.clone()),
        Value::Array(named) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| named.first())
            .and_then(|t| t.get("template")?.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn token_id(value: &Value) -> Option<usize> {
    value.as_u64().map(|id| id as usize)
}

fn token_ids(value: Option<&Value>) -> Vec<usize> {
    match value {
        Some(Value::Array(ids)) => ids.iter().filter_map(token_id).collect(),
        Some(value) => token_id(value).into_iter().collect(),
        None => Vec::new(),
    }
}

impl Tokenizer for HfTokenizer {
    /// With the added (special) tokens.
    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The text's tokens alone, no special tokens added: what training on a corpus reads.
    fn encode(&self, text: &str) -> Result<Vec<usize>, TokenizerError> {
        self.encode_with(text, false)
    }

    /// As Hugging Face's `tokenizer(prompt)`: the special tokens the model's post-processor adds
    /// (TinyLlama's `<s>`) around the text.
    fn encode_prompt(&self, text: &str) -> Result<Vec<usize>, TokenizerError> {
        self.encode_with(text, true)
    }

    fn decode(&self, ids: &[usize]) -> Result<String, TokenizerError> {
        let ids = self.check(ids)?;
        self.inner
            .decode(&ids, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("kind", &self.kind())
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .finish()
    }
}

impl PartialEq for HfTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json && self.special == other.special
    }
}

impl Eq for HfTokenizer {}
