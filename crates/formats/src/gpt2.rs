//! Hugging Face GPT-2 directories: `config.json` + `model.safetensors`, as the hub serves `gpt2`,
//! `gpt2-medium`, `gpt2-large`, `gpt2-xl` and their fine-tunes, read into a tinygpt model and
//! written from one.
//!
//! Layouts: Hugging Face's GPT-2 stores its Linears as `Conv1D`, weights `[in, out]`, which is
//! Burn's `Linear` layout already (no transpose, unlike `nn.Linear`); `c_attn` holds queries, keys
//! and values side by side, head by head within each, which is tinygpt's fused `qkv`; the head
//! is tied to `wte`, so there is no `lm_head.weight`. Files saved by `save_pretrained` prefix
//! every name with `transformer.`; the hub's original `gpt2` files do not, and carry the
//! attention mask as `attn.bias` / `attn.masked_bias` buffers, which are not parameters.

use crate::tensors::{f32_values, serialize, Tensors, WeightFiles};
use crate::{write_file, HfError, CONFIG_FILE, WEIGHTS_FILE};
use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use tinygpt_layers::{
    Activation, BlockSpec, Layer, LayerConfig, LayerNorm, LayerNormSpec, LayerSpec, WeightInit,
};
use tinygpt_model::{LanguageModel, ModelConfig, ModelSpec};
use tinygpt_tokenizer::AnyTokenizer;

/// The settings of a Hugging Face GPT-2 `config.json` that shape the model.
#[derive(Debug, Clone, PartialEq)]
pub struct HfGpt2Config {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub n_positions: usize,
    pub vocab_size: usize,
    /// The feed-forward width (`n_inner`; 4 × n_embd when null).
    pub n_inner: usize,
    pub layer_norm_epsilon: f64,
    pub activation: Activation,
    pub initializer_range: f64,
}

impl HfGpt2Config {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self, HfError> {
        let (text, path) = crate::read_config(dir)?;
        Self::parse(&text, &path)
    }

    /// `config.json`'s text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, HfError> {
        Self::from_json(&crate::parse_json(text, path)?, path)
    }

    pub(crate) fn from_json(json: &Value, path: &Path) -> Result<Self, HfError> {
        let bad = |message: String| HfError::BadConfig {
            path: path.to_path_buf(),
            message,
        };
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type != "gpt2" {
            return Err(HfError::Architecture {
                path: path.to_path_buf(),
                model_type: model_type.to_string(),
                architectures: crate::architectures(json),
            });
        }
        let size = |field: &str| -> Result<usize, HfError> {
            match json.get(field).and_then(Value::as_u64) {
                Some(value) if value > 0 => Ok(value as usize),
                _ => Err(bad(format!("{field} must be a positive integer"))),
            }
        };
        let (n_layer, n_head, n_embd) = (size("n_layer")?, size("n_head")?, size("n_embd")?);
        if !n_embd.is_multiple_of(n_head) {
            return Err(bad(format!(
                "n_head = {n_head} does not divide n_embd = {n_embd}"
            )));
        }
        let n_inner = match json.get("n_inner") {
            None | Some(Value::Null) => 4 * n_embd,
            Some(_) => size("n_inner")?,
        };
        if !n_inner.is_multiple_of(n_embd) {
            return Err(bad(format!(
                "n_inner = {n_inner} is not a multiple of n_embd = {n_embd}, which tinygpt's \
                 feed-forward needs"
            )));
        }
        let activation_name = json
            .get("activation_function")
            .and_then(Value::as_str)
            .unwrap_or("gelu_new");
        let activation = Activation::from_hugging_face(activation_name).ok_or_else(|| {
            bad(format!(
                "activation_function {activation_name:?} is not one tinygpt has (gelu_new, gelu, relu)"
            ))
        })?;
        for (flag, default) in [
            ("scale_attn_weights", true),
            ("scale_attn_by_inverse_layer_idx", false),
            ("reorder_and_upcast_attn", false),
            ("add_cross_attention", false),
            ("tie_word_embeddings", true),
        ] {
            let value = json.get(flag).and_then(Value::as_bool).unwrap_or(default);
            if value != default {
                return Err(bad(format!(
                    "{flag}: {value} is a GPT-2 variant tinygpt does not implement"
                )));
            }
        }
        let float =
            |field: &str, default: f64| json.get(field).and_then(Value::as_f64).unwrap_or(default);
        Ok(Self {
            n_layer,
            n_head,
            n_embd,
            n_positions: size("n_positions")?,
            vocab_size: size("vocab_size")?,
            n_inner,
            layer_norm_epsilon: float("layer_norm_epsilon", 1e-5),
            activation,
            initializer_range: float("initializer_range", 0.02),
        })
    }

    /// The architecture as a tinygpt config writes it: `n_layer` GPT-2 Blocks and a final
    /// LayerNorm, the head tied to the token embedding. `block_size` crops the context
    /// (nanoGPT's `crop_block_size`); `dropout` is the model's (GPT-2 trained with 0.1,
    /// fine-tuning usually uses 0).
    pub fn model_spec(&self, block_size: Option<usize>, dropout: f64) -> ModelSpec {
        let block = BlockSpec {
            n_head: self.n_head,
            ffn_mult: self.n_inner / self.n_embd,
            dropout: None,
            activation: self.activation,
            qkv_bias: true,
            epsilon: self.layer_norm_epsilon,
        };
        let mut layers = vec![LayerSpec::Block(block); self.n_layer];
        layers.push(LayerSpec::LayerNorm(LayerNormSpec {
            epsilon: self.layer_norm_epsilon,
        }));
        ModelSpec {
            n_embd: Some(self.n_embd),
            block_size: block_size.unwrap_or(self.n_positions),
            position_embedding: true,
            layers,
            lm_head: true,
            tie_embeddings: true,
            lm_head_bias: true,
            vocab_size: Some(self.vocab_size),
            dropout,
            init: WeightInit::Gpt2 {
                std: self.initializer_range,
            },
            zero_init: false,
            x0_skip: false,
            logit_softcap: None,
        }
    }

    /// The `config.json` of a GPT-2-shaped tinygpt model, or why it is not one.
    pub fn from_model(config: &ModelConfig) -> Result<Self, HfError> {
        let shape = Gpt2Shape::of(config).map_err(HfError::NotExportable)?;
        Ok(Self {
            n_layer: shape.n_layer,
            n_head: shape.n_head,
            n_embd: config.n_embd,
            n_positions: config.block_size,
            vocab_size: config.vocab_size,
            n_inner: shape.n_inner,
            layer_norm_epsilon: shape.epsilon,
            activation: shape.activation,
            initializer_range: config.init.std().unwrap_or(0.02),
        })
    }

    /// `config.json` as `GPT2LMHeadModel.from_pretrained` reads it.
    pub fn to_json(&self) -> String {
        let config = json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "activation_function": self.activation.hugging_face_name(),
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_embd": self.n_embd,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_inner": if self.n_inner == 4 * self.n_embd { Value::Null } else { json!(self.n_inner) },
            "vocab_size": self.vocab_size,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": self.initializer_range,
            "attn_pdrop": 0.1,
            "embd_pdrop": 0.1,
            "resid_pdrop": 0.1,
            "scale_attn_weights": true,
            "tie_word_embeddings": true,
            "use_cache": true,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
            "torch_dtype": "float32",
        });
        serde_json::to_string_pretty(&config).expect("a JSON value serialises")
    }
}

/// What makes a tinygpt model a GPT-2: learned positions, `n_layer` Blocks with a bias on the
/// qkv projection and the same sizes, a final LayerNorm, and the head tied to the embedding.
struct Gpt2Shape {
    n_layer: usize,
    n_head: usize,
    n_inner: usize,
    epsilon: f64,
    activation: Activation,
}

impl Gpt2Shape {
    fn of(config: &ModelConfig) -> Result<Self, String> {
        if !config.position_embedding {
            return Err("the model has no position embedding (GPT-2 learns one)".into());
        }
        if config.x0_skip {
            return Err("the model mixes the embedding into every layer (x0_skip)".into());
        }
        if config.logit_softcap.is_some() {
            return Err("the model soft-caps its logits (logit_softcap)".into());
        }
        if !config.tie_embeddings {
            return Err(
                "the lm_head is not tied to the token embedding (GPT-2's is: set \
                 tie_embeddings: true)"
                    .into(),
            );
        }
        let (last, blocks) = config
            .layers
            .split_last()
            .ok_or("the model has no layers (GPT-2 is Blocks and a final LayerNorm)")?;
        let LayerConfig::LayerNorm(final_norm) = &last.config else {
            return Err("the last layer is not a LayerNorm (GPT-2's ln_f)".into());
        };
        let mut shape = None::<Self>;
        for (i, layer) in blocks.iter().enumerate() {
            let LayerConfig::Block(block) = &layer.config else {
                return Err(format!(
                    "layers[{i}] is a {}, not a Block (GPT-2 is Blocks and a final LayerNorm)",
                    layer.spec.name()
                ));
            };
            let attention = &block.attention;
            if !attention.qkv_bias {
                return Err(format!(
                    "layers[{i}]'s attention has no qkv bias (GPT-2's c_attn has one: \
                     qkv_bias: true)"
                ));
            }
            if attention.n_head * attention.head_size != config.n_embd {
                return Err(format!("layers[{i}]'s heads do not span n_embd"));
            }
            let this = Self {
                n_layer: blocks.len(),
                n_head: attention.n_head,
                n_inner: block.feed_forward.d_hidden,
                epsilon: block.epsilon,
                activation: block.feed_forward.activation,
            };
            if let Some(first) = &shape {
                if (first.n_head, first.n_inner, first.activation)
                    != (this.n_head, this.n_inner, this.activation)
                    || first.epsilon != this.epsilon
                {
                    return Err(format!(
                        "layers[{i}] differs from layers[0] in size or options"
                    ));
                }
            }
            shape = Some(this);
        }
        let shape = shape.ok_or("the model has no Blocks")?;
        if final_norm.epsilon != shape.epsilon {
            return Err("the final LayerNorm's epsilon differs from the Blocks'".into());
        }
        Ok(shape)
    }
}

/// A GPT-2's tensors: files saved by `save_pretrained` prefix every name with `transformer.`,
/// the hub's original ones do not.
struct Gpt2Tensors<'a> {
    tensors: Tensors<'a>,
    prefix: &'static str,
}

impl Gpt2Tensors<'_> {
    /// Tensor `name` (without the prefix), its leading dimension cut to `expected[0]` when
    /// `crop_rows` (for a context shorter than the checkpoint's).
    fn take<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        expected: [usize; D],
        crop_rows: bool,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, HfError> {
        let values = self
            .tensors
            .take(&format!("{}{name}", self.prefix), &expected, crop_rows)?;
        Ok(Tensor::from_data(TensorData::new(values, expected), device))
    }
}

/// Buffers of the hub's original files that are not parameters, and the tied head.
fn harmless(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || name == "lm_head.weight"
}

/// Builds the model of `config` (GPT-2-shaped, e.g. from [`HfGpt2Config::model_spec`]) with the
/// weights of `dir/model.safetensors`. A context shorter than the checkpoint's keeps the first
/// `block_size` position embeddings.
pub fn load_model<B: Backend>(
    dir: &Path,
    config: &ModelConfig,
    device: &B::Device,
) -> Result<LanguageModel<B>, HfError> {
    Gpt2Shape::of(config).map_err(HfError::NotExportable)?;
    let files = WeightFiles::open(dir)?;
    let tensors = files.tensors()?;
    let prefix = if tensors.names().any(|n| n.starts_with("transformer.")) {
        "transformer."
    } else {
        ""
    };
    let mut tensors = Gpt2Tensors { tensors, prefix };
    let (v, c) = (config.vocab_size, config.n_embd);
    let mut model: LanguageModel<B> = config.init(device);
    model.token_embedding.weight =
        Param::from_tensor(tensors.take("wte.weight", [v, c], false, device)?);
    if let Some(positions) = &mut model.position_embedding {
        positions.weight =
            Param::from_tensor(tensors.take("wpe.weight", [config.block_size, c], true, device)?);
    }
    let n_layer = model.layers.len() - 1;
    for (i, layer) in model.layers.iter_mut().enumerate() {
        match layer {
            Layer::Block(block) => {
                let at = |part: &str| format!("h.{i}.{part}");
                load_norm(&mut block.ln1, &mut tensors, &at("ln_1"), device)?;
                load_norm(&mut block.ln2, &mut tensors, &at("ln_2"), device)?;
                let attention = &mut block.attention;
                load_linear(&mut attention.qkv, &mut tensors, &at("attn.c_attn"), device)?;
                if let Some(projection) = &mut attention.projection {
                    load_linear(projection, &mut tensors, &at("attn.c_proj"), device)?;
                }
                let ffn = &mut block.feed_forward;
                load_linear(&mut ffn.hidden, &mut tensors, &at("mlp.c_fc"), device)?;
                if let Some(projection) = &mut ffn.projection {
                    load_linear(projection, &mut tensors, &at("mlp.c_proj"), device)?;
                }
            }
            Layer::LayerNorm(norm) if i == n_layer => {
                load_norm(norm, &mut tensors, "ln_f", device)?
            }
            _ => unreachable!("Gpt2Shape::of checked the layer stack"),
        }
    }
    let extra = tensors.tensors.leftovers(harmless);
    if !extra.is_empty() {
        return Err(HfError::Extra {
            path: tensors.tensors.first_path().to_path_buf(),
            names: extra.join(", "),
        });
    }
    Ok(model)
}

fn load_linear<B: Backend>(
    linear: &mut burn::nn::Linear<B>,
    tensors: &mut Gpt2Tensors,
    at: &str,
    device: &B::Device,
) -> Result<(), HfError> {
    let [d_in, d_out] = linear.weight.lazy_shape().dims();
    linear.weight =
        Param::from_tensor(tensors.take(&format!("{at}.weight"), [d_in, d_out], false, device)?);
    linear.bias = Some(Param::from_tensor(tensors.take(
        &format!("{at}.bias"),
        [d_out],
        false,
        device,
    )?));
    Ok(())
}

fn load_norm<B: Backend>(
    norm: &mut LayerNorm<B>,
    tensors: &mut Gpt2Tensors,
    at: &str,
    device: &B::Device,
) -> Result<(), HfError> {
    let [d] = norm.norm.gamma.lazy_shape().dims();
    norm.norm.gamma =
        Param::from_tensor(tensors.take(&format!("{at}.weight"), [d], false, device)?);
    norm.norm.beta = Some(Param::from_tensor(tensors.take(
        &format!("{at}.bias"),
        [d],
        false,
        device,
    )?));
    Ok(())
}

/// Every weight of a GPT-2-shaped model under its Hugging Face name (`transformer.` prefix, as
/// `save_pretrained` writes), shape and f32 values.
pub fn hf_tensors<B: Backend>(
    model: &LanguageModel<B>,
) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    fn values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
        (tensor.dims().to_vec(), f32_values(tensor))
    }
    let mut out = BTreeMap::new();
    let mut put = |name: String, tensor: (Vec<usize>, Vec<f32>)| {
        out.insert(format!("transformer.{name}"), tensor);
    };
    let norm =
        |put: &mut dyn FnMut(String, (Vec<usize>, Vec<f32>)), name: String, norm: &LayerNorm<B>| {
            put(format!("{name}.weight"), values(norm.norm.gamma.val()));
            if let Some(beta) = &norm.norm.beta {
                put(format!("{name}.bias"), values(beta.val()));
            }
        };
    let linear = |put: &mut dyn FnMut(String, (Vec<usize>, Vec<f32>)),
                  name: String,
                  linear: &burn::nn::Linear<B>| {
        put(format!("{name}.weight"), values(linear.weight.val()));
        if let Some(bias) = &linear.bias {
            put(format!("{name}.bias"), values(bias.val()));
        }
    };
    put(
        "wte.weight".into(),
        values(model.token_embedding.weight.val()),
    );
    if let Some(positions) = &model.position_embedding {
        put("wpe.weight".into(), values(positions.weight.val()));
    }
    let n_layer = model.layers.len().saturating_sub(1);
    for (i, layer) in model.layers.iter().enumerate() {
        match layer {
            Layer::Block(block) => {
                norm(&mut put, format!("h.{i}.ln_1"), &block.ln1);
                norm(&mut put, format!("h.{i}.ln_2"), &block.ln2);
                linear(&mut put, format!("h.{i}.attn.c_attn"), &block.attention.qkv);
                if let Some(p) = &block.attention.projection {
                    linear(&mut put, format!("h.{i}.attn.c_proj"), p);
                }
                linear(
                    &mut put,
                    format!("h.{i}.mlp.c_fc"),
                    &block.feed_forward.hidden,
                );
                if let Some(p) = &block.feed_forward.projection {
                    linear(&mut put, format!("h.{i}.mlp.c_proj"), p);
                }
            }
            Layer::LayerNorm(n) if i == n_layer => norm(&mut put, "ln_f".into(), n),
            _ => {}
        }
    }
    out
}

/// Writes `dir/config.json` and `dir/model.safetensors` for a GPT-2-shaped model whose tokens are
/// GPT-2's, so that `GPT2LMHeadModel.from_pretrained(dir)` gives the same logits.
pub fn export<B: Backend>(
    model: &LanguageModel<B>,
    config: &ModelConfig,
    tokenizer: &AnyTokenizer,
    dir: &Path,
) -> Result<(), HfError> {
    if !matches!(tokenizer, AnyTokenizer::Gpt2(_)) {
        return Err(HfError::NotExportable(format!(
            "a Hugging Face GPT-2 reads GPT-2's BPE tokens; this model's are {}",
            tokenizer.describe()
        )));
    }
    let hf_config = HfGpt2Config::from_model(config)?;
    let weights = serialize(&hf_tensors(model), &dir.join(WEIGHTS_FILE))?;
    write_file(dir, WEIGHTS_FILE, &weights)?;
    write_file(dir, CONFIG_FILE, hf_config.to_json().as_bytes())
}
