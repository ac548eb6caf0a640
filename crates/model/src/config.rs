//! The model section of a config ([`ModelSpec`]) and its validated form ([`ModelConfig`]).

use crate::LanguageModel;
use burn::module::Param;
use burn::nn::EmbeddingConfig;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tinygpt_layers::footprint::linear_params;
use tinygpt_layers::{LayerConfig, LayerContext, LayerError, LayerSpec, StepShape, WeightInit};

/// The architecture as a config file writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Embedding width; defaults to the vocabulary size (the bigram model's logits table).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_embd: Option<usize>,
    /// The longest context the model sees (and the length of training windows).
    pub block_size: usize,
    /// Learned position embedding added to the token embedding.
    #[serde(default = "yes")]
    pub position_embedding: bool,
    /// The layer stack, by registered name, applied in order.
    #[serde(default)]
    pub layers: Vec<LayerSpec>,
    /// A final Linear from the last layer's width to the vocabulary.
    #[serde(default = "yes")]
    pub lm_head: bool,
    /// The lm_head shares the token embedding's weights (no weights or bias of its own), as
    /// GPT-2's: weight tying.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tie_embeddings: bool,
    /// A bias on an untied lm_head (the tutorial's has one; Llama's does not).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub lm_head_bias: bool,
    /// Rows of the embedding and logits: the tokenizer's vocabulary by default; larger to pad it
    /// (nanoGPT pads GPT-2's 50,257 to 50,304) or to match a pretrained model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    /// Default dropout probability for every layer that has dropout.
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "pytorch_init")]
    pub init: WeightInit,
    /// The projections that write into the residual stream (attention's and the MLP's output
    /// Linears) and the lm_head start at zero (the GPT speedrun's init): each block starts as
    /// the identity and the first prediction is uniform.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zero_init: bool,
    /// Before every layer, `x = a·x + b·x0` with `x0` the embedding and `a`, `b` learned per
    /// layer (from 1 and 0): every layer can read the tokens directly (the speedrun's skip).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub x0_skip: bool,
    /// Logits squashed to `cap · tanh(logits / cap)` (Gemma 2's and the speedrun's soft cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_softcap: Option<f64>,
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn pytorch_init() -> WeightInit {
    WeightInit::PyTorch
}

/// An architecture that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("model.{field} must be at least 1, got 0")]
    Zero { field: &'static str },
    #[error("model.dropout must be in [0, 1), got {0}")]
    Dropout(f64),
    #[error("model.init: the standard deviation must be positive and finite, got {0}")]
    InitStd(f64),
    #[error(
        "model.init: Zero would start every weight at zero, and a model of zeros never learns \
         different features; to start the residual projections and the head at zero, keep a \
         random init and set zero_init: true"
    )]
    ZeroInit,
    #[error("model.logit_softcap must be a positive number, got {0}")]
    Softcap(f64),
    #[error("model.layers[{index}] ({name}): {source}")]
    Layer {
        index: usize,
        name: &'static str,
        source: LayerError,
    },
    #[error(
        "without an lm_head the last layer's width ({width}) must equal the vocabulary size \
         ({vocab_size}): set lm_head: true, or make the model output vocab_size features"
    )]
    OutputWidth { width: usize, vocab_size: usize },
    #[error(
        "tie_embeddings needs lm_head: true and a last layer as wide as n_embd ({n_embd}), \
         got lm_head: {lm_head} and width {width}"
    )]
    Tying {
        lm_head: bool,
        width: usize,
        n_embd: usize,
    },
    #[error(
        "model.vocab_size ({model}) is smaller than the tokenizer's vocabulary ({tokenizer}): \
         some tokens would have no embedding; leave vocab_size out or make it at least {tokenizer}"
    )]
    VocabTooSmall { model: usize, tokenizer: usize },
}

/// One layer of a validated model: what the config said, and what it resolved to.
#[derive(Debug, Clone)]
pub struct ResolvedLayer {
    pub spec: LayerSpec,
    pub config: LayerConfig,
    pub d_input: usize,
}

/// One row of [`ModelConfig::summary`]: a part of the model, its shapes and parameter count.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSummary {
    pub name: String,
    pub detail: String,
    pub shape: String,
    pub params: u64,
}

/// A validated architecture for a given vocabulary.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub block_size: usize,
    pub position_embedding: bool,
    pub layers: Vec<ResolvedLayer>,
    pub lm_head: bool,
    pub tie_embeddings: bool,
    pub lm_head_bias: bool,
    pub init: WeightInit,
    pub zero_init: bool,
    pub x0_skip: bool,
    pub logit_softcap: Option<f64>,
}

impl ModelSpec {
    /// Checks every size and layer against a tokenizer of `vocab_size` tokens.
    pub fn resolve(&self, vocab_size: usize) -> Result<ModelConfig, ModelError> {
        let vocab_size = match self.vocab_size {
            Some(model) if model < vocab_size => {
                return Err(ModelError::VocabTooSmall {
                    model,
                    tokenizer: vocab_size,
                })
            }
            Some(model) => model,
            None => vocab_size,
        };
        let n_embd = self.n_embd.unwrap_or(vocab_size);
        for (field, value) in [
            ("n_embd", n_embd),
            ("block_size", self.block_size),
            ("vocab_size", vocab_size),
        ] {
            if value == 0 {
                return Err(ModelError::Zero { field });
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Dropout(self.dropout));
        }
        if let Some(std) = self.init.std() {
            if !(std > 0.0 && std.is_finite()) {
                return Err(ModelError::InitStd(std));
            }
        }
        if self.init == WeightInit::Zero {
            return Err(ModelError::ZeroInit);
        }
        if let Some(cap) = self.logit_softcap {
            if !(cap > 0.0 && cap.is_finite()) {
                return Err(ModelError::Softcap(cap));
            }
        }
        let specs = tinygpt_layers::expand(&self.layers).map_err(|source| ModelError::Layer {
            index: 0,
            name: "Repeat",
            source,
        })?;
        let n_layer = specs
            .iter()
            .filter(|layer| {
                matches!(
                    layer,
                    LayerSpec::Block(_) | LayerSpec::LlamaBlock(_) | LayerSpec::SpeedrunBlock(_)
                )
            })
            .count();
        let ctx = LayerContext {
            n_embd,
            block_size: self.block_size,
            dropout: self.dropout,
            init: self.init,
            residual_init: if self.zero_init {
                WeightInit::Zero
            } else {
                self.init.residual(n_layer)
            },
        };
        let mut width = n_embd;
        let mut layers = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            let config = spec
                .resolve(&ctx, width)
                .map_err(|source| ModelError::Layer {
                    index,
                    name: spec.name(),
                    source,
                })?;
            layers.push(ResolvedLayer {
                spec: spec.clone(),
                d_input: width,
                config,
            });
            width = layers[index].config.d_output();
        }
        if !self.lm_head && width != vocab_size {
            return Err(ModelError::OutputWidth { width, vocab_size });
        }
        if self.tie_embeddings && !(self.lm_head && width == n_embd) {
            return Err(ModelError::Tying {
                lm_head: self.lm_head,
                width,
                n_embd,
            });
        }
        Ok(ModelConfig {
            vocab_size,
            n_embd,
            block_size: self.block_size,
            position_embedding: self.position_embedding,
            layers,
            lm_head: self.lm_head,
            tie_embeddings: self.tie_embeddings,
            lm_head_bias: self.lm_head_bias,
            init: self.init,
            zero_init: self.zero_init,
            x0_skip: self.x0_skip,
            logit_softcap: self.logit_softcap,
        })
    }
}

impl ModelConfig {
    /// The width of the last layer's output (the lm_head's input).
    pub fn d_final(&self) -> usize {
        self.layers
            .last()
            .map_or(self.n_embd, |layer| layer.config.d_output())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> LanguageModel<B> {
        let embedding = |rows| {
            EmbeddingConfig::new(rows, self.n_embd)
                .with_initializer(self.init.embedding())
                .init(device)
        };
        LanguageModel {
            token_embedding: embedding(self.vocab_size),
            position_embedding: self.position_embedding.then(|| embedding(self.block_size)),
            layers: self
                .layers
                .iter()
                .map(|layer| layer.config.init(device))
                .collect(),
            lm_head: (self.lm_head && !self.tie_embeddings).then(|| {
                let init = if self.zero_init {
                    WeightInit::Zero
                } else {
                    self.init
                };
                init.linear(self.d_final(), self.vocab_size, self.lm_head_bias, device)
            }),
            tied_head: self.tie_embeddings,
            block_size: self.block_size,
            x0_mix: self.x0_skip.then(|| {
                let rows = self.layers.len();
                let mix: Vec<f32> = (0..rows).flat_map(|_| [1.0, 0.0]).collect();
                Param::from_tensor(Tensor::from_data(TensorData::new(mix, [rows, 2]), device))
            }),
            logit_softcap: self.logit_softcap,
        }
    }

    /// The architecture, one row per part, with parameter counts: all from the config, so a
    /// model too big to build can still be inspected.
    pub fn summary(&self) -> Vec<LayerSummary> {
        let mut rows = vec![LayerSummary {
            name: "token_embedding".into(),
            detail: format!("Embedding({}, {})", self.vocab_size, self.n_embd),
            shape: format!("[B, T] -> [B, T, {}]", self.n_embd),
            params: linear_params(self.vocab_size, self.n_embd, false),
        }];
        if self.position_embedding {
            rows.push(LayerSummary {
                name: "position_embedding".into(),
                detail: format!("Embedding({}, {})", self.block_size, self.n_embd),
                shape: format!("[T] -> [T, {}]", self.n_embd),
                params: linear_params(self.block_size, self.n_embd, false),
            });
        }
        if self.x0_skip {
            rows.push(LayerSummary {
                name: "x0_mix".into(),
                detail: format!(
                    "{} × (a, b): x = a·x + b·x0 before each layer",
                    self.layers.len()
                ),
                shape: format!("[{}, 2]", self.layers.len()),
                params: 2 * self.layers.len() as u64,
            });
        }
        for (i, layer) in self.layers.iter().enumerate() {
            rows.push(LayerSummary {
                name: format!("layers[{i}]"),
                detail: describe(&layer.spec),
                shape: format!(
                    "[B, T, {}] -> [B, T, {}]",
                    layer.d_input,
                    layer.config.d_output()
                ),
                params: layer.config.num_params(),
            });
        }
        if self.lm_head {
            let (detail, params) = if self.tie_embeddings {
                ("tied to token_embedding".to_string(), 0)
            } else {
                let bias = if self.lm_head_bias { "" } else { ", no bias" };
                (
                    format!("Linear({}, {}{bias})", self.d_final(), self.vocab_size),
                    linear_params(self.d_final(), self.vocab_size, self.lm_head_bias),
                )
            };
            rows.push(LayerSummary {
                name: "lm_head".into(),
                detail,
                shape: format!("[B, T, {}] -> [B, T, {}]", self.d_final(), self.vocab_size),
                params,
            });
        }
        rows
    }

    /// Parameters of the model [`ModelConfig::init`] would build, counted without building it.
    pub fn num_params(&self) -> u64 {
        self.summary()
            .iter()
            .fold(0u64, |sum, row| sum.saturating_add(row.params))
    }

    /// Values (f32 each) a training step of this shape keeps for the backward pass: the
    /// embeddings, every layer's (see [`tinygpt_layers::footprint`]), and the logits with the
    /// loss's exponentials and their gradient.
    pub fn activations(&self, step: &StepShape) -> f64 {
        let embeddings = if self.position_embedding { 2.0 } else { 1.0 };
        let layers: f64 = self
            .layers
            .iter()
            .map(|layer| layer.config.activations(step))
            .sum();
        step.tokens() * (embeddings * self.n_embd as f64 + 3.0 * self.vocab_size as f64) + layers
    }
}

/// A layer spec as a config would write it: `Block(n_head: 4, ffn_mult: 4)`.
fn describe(spec: &tinygpt_layers::LayerSpec) -> String {
    use ron::extensions::Extensions;
    let compact = ron::ser::PrettyConfig::new()
        .compact_structs(true)
        .compact_arrays(true)
        .extensions(Extensions::UNWRAP_VARIANT_NEWTYPES | Extensions::IMPLICIT_SOME);
    ron::ser::to_string_pretty(spec, compact)
        .map(|text| {
            // Drop the `#![enable(...)]` header lines the extensions add.
            let body: Vec<&str> = text.lines().filter(|l| !l.starts_with("#!")).collect();
            body.join(" ")
        })
        .unwrap_or_else(|_| spec.name().into())
}
