//! The Llama family in Hugging Face's layout: `LlamaForCausalLM` (Llama 2 and 3, TinyLlama,
//! SmolLM2), `Qwen2ForCausalLM` (Qwen2.5) and `MistralForCausalLM` without a sliding window,
//! read into a tinygpt model of `LlamaBlock`s and written back from one.
//!
//! `config.json` is read as transformers 4 writes it (`rope_theta`, `rope_scaling`,
//! `torch_dtype`) and as transformers 5 does (`rope_parameters`, `dtype`); the config fields
//! below are spelled as the hub spells them.
//!
//! Layouts: `nn.Linear` stores `[out, in]`, Burn's Linear `[in, out]`, so every projection is
//! transposed; `q_proj`, `k_proj` and `v_proj` become the columns of tinygpt's fused `qkv`
//! (queries, then keys, then values, head by head within each), `gate_proj` and `up_proj` those
//! of its fused `gate_up`; Qwen2 has a bias on q/k/v only; `lm_head.weight` is absent when the
//! head is tied to `embed_tokens`.

use crate::tensors::{
    f32_values as values, serialize, transpose, transpose_into, SafetensorsDtype, Tensors,
    WeightFiles,
};
use crate::{write_file, HfError, CONFIG_FILE, WEIGHTS_FILE};
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use tinygpt_layers::{
    Layer, LayerConfig, LayerSpec, LlamaBlockConfig, LlamaBlockSpec, RepeatSpec, RmsNorm,
    RmsNormSpec, RopeScaling, RopeSpec, WeightInit,
};
use tinygpt_model::{LanguageModel, ModelConfig, ModelSpec};
use tinygpt_tokenizer::hugging_face::{
    GENERATION_CONFIG_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE,
};
use tinygpt_tokenizer::AnyTokenizer;

/// The settings of a Llama-family `config.json` that shape the model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// `LlamaForCausalLM`, `Qwen2ForCausalLM` or `MistralForCausalLM`.
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    /// `rope_theta` and `rope_scaling` (or transformers 5's `rope_parameters`).
    pub rope: RopeSpec,
    pub tie_word_embeddings: bool,
    /// A bias on `q_proj`, `k_proj` and `v_proj` (Qwen2 always has one).
    pub qkv_bias: bool,
    pub initializer_range: f64,
    /// `torch_dtype` / `dtype`, when given.
    pub dtype: Option<SafetensorsDtype>,
    pub bos_token_id: Option<Value>,
    pub eos_token_id: Option<Value>,
}

impl LlamaConfig {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self, HfError> {
        match crate::HfConfig::read(dir)? {
            crate::HfConfig::Llama(config) => Ok(config),
            crate::HfConfig::Gpt2(_) => Err(HfError::BadConfig {
                path: dir.join(CONFIG_FILE),
                message: "this is a GPT-2, not a Llama-family model".into(),
            }),
        }
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
        let unsupported = |option: String, why: &str| HfError::Unsupported {
            path: path.to_path_buf(),
            option,
            why: why.to_string(),
        };
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
        let (architecture, qkv_bias) = match model_type {
            "llama" => ("LlamaForCausalLM", false),
            "qwen2" => ("Qwen2ForCausalLM", true),
            "mistral" => ("MistralForCausalLM", false),
            _ => {
                return Err(HfError::Architecture {
                    path: path.to_path_buf(),
                    model_type: model_type.to_string(),
                    architectures: crate::architectures(json),
                })
            }
        };
        if let Some(listed) = json.get("architectures").and_then(Value::as_array) {
            if let Some(other) = listed
                .iter()
                .filter_map(Value::as_str)
                .find(|a| *a != architecture)
            {
                return Err(unsupported(
                    format!("architectures: [{other:?}]"),
                    &format!("a {model_type:?} model tinygpt reads is a {architecture}"),
                ));
            }
        }
        let get = |field: &str| json.get(field).filter(|v| !v.is_null());
        let size = |field: &str| -> Result<usize, HfError> {
            match get(field).and_then(Value::as_u64) {
                Some(value) if value > 0 => Ok(value as usize),
                _ => Err(bad(format!("{field} must be a positive integer"))),
            }
        };
        let size_or = |field: &str, default: usize| -> Result<usize, HfError> {
            match get(field) {
                None => Ok(default),
                Some(_) => size(field),
            }
        };
        let flag = |field: &str| get(field).and_then(Value::as_bool).unwrap_or(false);
        let float =
            |field: &str, default: f64| get(field).and_then(Value::as_f64).unwrap_or(default);

        let hidden_size = size("hidden_size")?;
        let num_attention_heads = size("num_attention_heads")?;
        let num_key_value_heads = size_or("num_key_value_heads", num_attention_heads)?;
        if !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(bad(format!(
                "num_key_value_heads = {num_key_value_heads} does not divide \
                 num_attention_heads = {num_attention_heads}"
            )));
        }
        if get("head_dim").is_none() && !hidden_size.is_multiple_of(num_attention_heads) {
            return Err(bad(format!(
                "num_attention_heads = {num_attention_heads} does not divide hidden_size = \
                 {hidden_size}, and there is no head_dim"
            )));
        }
        let head_dim = size_or("head_dim", hidden_size / num_attention_heads)?;

        let activation = get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
        if activation != "silu" {
            return Err(unsupported(
                format!("hidden_act: {activation:?}"),
                "the Llama family's MLP is SwiGLU, with silu",
            ));
        }
        if model_type == "llama" && flag("attention_bias") {
            return Err(unsupported(
                "attention_bias: true".into(),
                "a bias on every attention projection, o_proj included; no model of the \
                 family ships one",
            ));
        }
        if flag("mlp_bias") {
            return Err(unsupported(
                "mlp_bias: true".into(),
                "a bias on the MLP's projections; no model of the family ships one",
            ));
        }
        if model_type == "qwen2" && flag("use_sliding_window") {
            return Err(unsupported(
                "use_sliding_window: true".into(),
                "tinygpt's attention sees the whole context",
            ));
        }
        if model_type == "mistral" && get("sliding_window").is_some() {
            return Err(unsupported(
                format!("sliding_window: {}", json["sliding_window"]),
                "tinygpt's attention sees the whole context (Mistral v0.2 and later have none)",
            ));
        }
        let partial = float("partial_rotary_factor", 1.0);
        if partial != 1.0 {
            return Err(unsupported(
                format!("partial_rotary_factor: {partial}"),
                "tinygpt rotates whole heads",
            ));
        }
        let rope = rope(json, path)?;
        rope.check(head_dim).map_err(bad)?;

        let dtype_name = get("dtype")
            .or_else(|| get("torch_dtype"))
            .and_then(Value::as_str);
        let dtype = dtype_name.and_then(SafetensorsDtype::from_torch_name);
        Ok(Self {
            architecture: architecture.to_string(),
            hidden_size,
            intermediate_size: size("intermediate_size")?,
            num_hidden_layers: size("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: size_or("max_position_embeddings", 2048)?,
            vocab_size: size("vocab_size")?,
            rms_norm_eps: float("rms_norm_eps", 1e-6),
            rope,
            tie_word_embeddings: flag("tie_word_embeddings"),
            qkv_bias,
            initializer_range: float("initializer_range", 0.02),
            dtype,
            bos_token_id: get("bos_token_id").cloned(),
            eos_token_id: get("eos_token_id").cloned(),
        })
    }

    /// The architecture as a tinygpt config writes it: `Repeat(n: num_hidden_layers,
    /// LlamaBlock(...))`, a final RMSNorm and the head, no position table. `block_size` crops
    /// the context (`max_position_embeddings` by default).
    pub fn model_spec(&self, block_size: Option<usize>, dropout: f64) -> ModelSpec {
        let block = LlamaBlockSpec {
            n_head: self.num_attention_heads,
            n_kv_head: Some(self.num_key_value_heads),
            head_size: Some(self.head_dim),
            hidden: Some(self.intermediate_size),
            epsilon: self.rms_norm_eps,
            rope: self.rope.clone(),
            qkv_bias: self.qkv_bias,
            qk_norm: false,
            dropout: None,
        };
        ModelSpec {
            n_embd: Some(self.hidden_size),
            block_size: block_size.unwrap_or(self.max_position_embeddings),
            position_embedding: false,
            layers: vec![
                LayerSpec::Repeat(RepeatSpec {
                    n: self.num_hidden_layers,
                    layer: Box::new(LayerSpec::LlamaBlock(block)),
                }),
                LayerSpec::RmsNorm(RmsNormSpec {
                    epsilon: self.rms_norm_eps,
                    weight: true,
                }),
            ],
            lm_head: true,
            tie_embeddings: self.tie_word_embeddings,
            lm_head_bias: false,
            vocab_size: Some(self.vocab_size),
            dropout,
            init: WeightInit::Normal {
                std: self.initializer_range,
            },
            zero_init: false,
            x0_skip: false,
            logit_softcap: None,
        }
    }

    /// The `config.json` of a Llama-shaped tinygpt model, or why it is not one.
    pub fn from_model(config: &ModelConfig) -> Result<Self, HfError> {
        let shape = LlamaShape::of(config).map_err(HfError::NotExportable)?;
        let block = shape.block;
        let attention = &block.attention;
        Ok(Self {
            architecture: if attention.qkv_bias {
                "Qwen2ForCausalLM"
            } else {
                "LlamaForCausalLM"
            }
            .to_string(),
            hidden_size: config.n_embd,
            intermediate_size: block.mlp.hidden,
            num_hidden_layers: shape.n_layer,
            num_attention_heads: attention.n_head,
            num_key_value_heads: attention.n_kv_head,
            head_dim: attention.head_size,
            max_position_embeddings: config.block_size,
            vocab_size: config.vocab_size,
            rms_norm_eps: block.norm.epsilon,
            rope: attention.rope.clone().unwrap_or_default(),
            tie_word_embeddings: config.tie_embeddings,
            qkv_bias: attention.qkv_bias,
            initializer_range: config.init.std().unwrap_or(0.02),
            dtype: Some(SafetensorsDtype::F32),
            bos_token_id: None,
            eos_token_id: None,
        })
    }

    /// `config.json` as transformers 4 and 5 both read it: the rotary settings as `rope_theta`
    /// and `rope_scaling` (which transformers 5 turns into its `rope_parameters`).
    pub fn to_json(&self) -> String {
        let qwen2 = self.architecture == "Qwen2ForCausalLM";
        let mut config = json!({
            "architectures": [self.architecture],
            "model_type": if qwen2 { "qwen2" } else { "llama" },
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope.theta,
            "rope_scaling": rope_scaling_json(&self.rope.scaling),
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "attention_dropout": 0.0,
            "use_cache": true,
            "torch_dtype": self.dtype.unwrap_or(SafetensorsDtype::F32).torch_name(),
        });
        let map = config.as_object_mut().expect("an object");
        if qwen2 {
            map.insert("use_sliding_window".into(), json!(false));
        } else {
            map.insert("attention_bias".into(), json!(false));
            map.insert("mlp_bias".into(), json!(false));
        }
        for (field, value) in [
            ("bos_token_id", &self.bos_token_id),
            ("eos_token_id", &self.eos_token_id),
        ] {
            if let Some(value) = value {
                map.insert(field.into(), value.clone());
            }
        }
        serde_json::to_string_pretty(&config).expect("a JSON value serialises")
    }
}

/// The rotary settings: transformers 5's `rope_parameters`, else transformers 4's `rope_theta`
/// and `rope_scaling`. Scaling types other than `linear` and `llama3` are errors naming them.
fn rope(json: &Value, path: &Path) -> Result<RopeSpec, HfError> {
    let bad = |message: String| HfError::BadConfig {
        path: path.to_path_buf(),
        message,
    };
    let empty = Map::new();
    let parameters = json.get("rope_parameters").and_then(Value::as_object);
    let scaling = json.get("rope_scaling").and_then(Value::as_object);
    let theta = parameters
        .and_then(|p| p.get("rope_theta"))
        .or_else(|| json.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or(10_000.0);
    let settings = parameters.or(scaling).unwrap_or(&empty);
    let kind = settings
        .get("rope_type")
        .or_else(|| settings.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |field: &str| -> Result<f64, HfError> {
        settings
            .get(field)
            .and_then(Value::as_f64)
            .ok_or_else(|| bad(format!("rope scaling {kind:?} needs {field}")))
    };
    let scaling = match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: number("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")? as usize,
        }),
        other => {
            return Err(HfError::Unsupported {
                path: path.to_path_buf(),
                option: format!("rope type {other:?}"),
                why: "tinygpt has the rotary scalings \"default\", \"linear\" and \"llama3\""
                    .into(),
            })
        }
    };
    Ok(RopeSpec { theta, scaling })
}

fn rope_scaling_json(scaling: &Option<RopeScaling>) -> Value {
    match scaling {
        None => Value::Null,
        Some(RopeScaling::Linear { factor }) => json!({"rope_type": "linear", "factor": factor}),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
    }
}

/// What makes a tinygpt model a Llama: no position table, `n_layer` identical `LlamaBlock`s, a
/// final RMSNorm with a weight, and a head without a bias.
struct LlamaShape<'a> {
    n_layer: usize,
    block: &'a LlamaBlockConfig,
}

impl<'a> LlamaShape<'a> {
    fn of(config: &'a ModelConfig) -> Result<Self, String> {
        if config.position_embedding {
            return Err("the model has a learned position table (Llama has none)".into());
        }
        if config.x0_skip {
            return Err("the model mixes the embedding into every layer (x0_skip)".into());
        }
        if config.logit_softcap.is_some() {
            return Err("the model soft-caps its logits (logit_softcap)".into());
        }
        if !config.lm_head {
            return Err("the model has no lm_head".into());
        }
        if !config.tie_embeddings && config.lm_head_bias {
            return Err("the lm_head has a bias (Llama's has none: lm_head_bias: false)".into());
        }
        let (last, blocks) = config
            .layers
            .split_last()
            .ok_or("the model has no layers (Llama is LlamaBlocks and a final RmsNorm)")?;
        match &last.config {
            LayerConfig::RmsNorm(norm) if norm.weight => {}
            _ => {
                return Err("the last layer is not an RmsNorm with a weight (Llama's norm)".into())
            }
        }
        let mut first = None::<&LlamaBlockConfig>;
        for (i, layer) in blocks.iter().enumerate() {
            let LayerConfig::LlamaBlock(block) = &layer.config else {
                return Err(format!(
                    "layers[{i}] is a {}, not a LlamaBlock (Llama is LlamaBlocks and a final \
                     RmsNorm)",
                    layer.spec.name()
                ));
            };
            let attention = &block.attention;
            if attention.qk_norm {
                return Err(format!(
                    "layers[{i}] has QK-norm, which Llama and Qwen2 lack"
                ));
            }
            if attention.rope.is_none() {
                return Err(format!("layers[{i}] has no rotary embeddings"));
            }
            if let Some(first) = first {
                let same = first.attention.n_head == attention.n_head
                    && first.attention.n_kv_head == attention.n_kv_head
                    && first.attention.head_size == attention.head_size
                    && first.attention.rope == attention.rope
                    && first.attention.qkv_bias == attention.qkv_bias
                    && first.mlp.hidden == block.mlp.hidden
                    && first.norm.epsilon == block.norm.epsilon;
                if !same {
                    return Err(format!(
                        "layers[{i}] differs from layers[0] in size or options"
                    ));
                }
            }
            first = Some(block);
        }
        let block = first.ok_or("the model has no LlamaBlocks")?;
        Ok(Self {
            n_layer: blocks.len(),
            block,
        })
    }
}

/// Buffers some checkpoints carry that are not parameters.
fn harmless(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}

/// A weight as a Burn tensor of `shape`.
fn tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// Several `nn.Linear` weights `[out_k, d_in]` (and biases) stacked along `out`, transposed into
/// one Burn Linear `[d_in, Σ out_k]`: `qkv` from q/k/v, `gate_up` from gate/up.
fn load_fused<B: Backend>(
    linear: &mut Linear<B>,
    tensors: &mut Tensors,
    parts: &[(String, usize)],
    bias: bool,
    device: &B::Device,
) -> Result<(), HfError> {
    let [d_in, d_out] = linear.weight.lazy_shape().dims();
    debug_assert_eq!(parts.iter().map(|(_, out)| out).sum::<usize>(), d_out);
    let mut weight = vec![0.0; d_in * d_out];
    let mut column = 0;
    for (name, out) in parts {
        let part = tensors.take(&format!("{name}.weight"), &[*out, d_in], false)?;
        transpose_into(&part, [*out, d_in], &mut weight, d_out, column);
        column += out;
    }
    linear.weight = tensor(weight, [d_in, d_out], device);
    linear.bias = if bias {
        let mut values = Vec::with_capacity(d_out);
        for (name, out) in parts {
            values.extend(tensors.take(&format!("{name}.bias"), &[*out], false)?);
        }
        Some(tensor(values, [d_out], device))
    } else {
        None
    };
    Ok(())
}

fn load_norm<B: Backend>(
    norm: &mut RmsNorm<B>,
    tensors: &mut Tensors,
    name: &str,
    device: &B::Device,
) -> Result<(), HfError> {
    let d = norm.d_model;
    norm.weight = Some(tensor(tensors.take(name, &[d], false)?, [d], device));
    Ok(())
}

/// Builds the model of `config` (Llama-shaped, e.g. from [`LlamaConfig::model_spec`]) with the
/// weights of `dir`'s `model.safetensors` or shards.
pub fn load_model<B: Backend>(
    dir: &Path,
    config: &ModelConfig,
    device: &B::Device,
) -> Result<LanguageModel<B>, HfError> {
    LlamaShape::of(config).map_err(HfError::NotExportable)?;
    let files = WeightFiles::open(dir)?;
    let mut tensors = files.tensors()?;
    let (v, c) = (config.vocab_size, config.n_embd);
    let mut model: LanguageModel<B> = config.init(device);
    model.token_embedding.weight = tensor(
        tensors.take("model.embed_tokens.weight", &[v, c], false)?,
        [v, c],
        device,
    );
    let n_layer = model.layers.len() - 1;
    for (i, layer) in model.layers.iter_mut().enumerate() {
        match layer {
            Layer::LlamaBlock(block) => {
                let at = |part: &str| format!("model.layers.{i}.{part}");
                load_norm(
                    &mut block.input_norm,
                    &mut tensors,
                    &at("input_layernorm.weight"),
                    device,
                )?;
                load_norm(
                    &mut block.post_attention_norm,
                    &mut tensors,
                    &at("post_attention_layernorm.weight"),
                    device,
                )?;
                let attention = &mut block.attention;
                let [_, qkv_width] = attention.qkv.weight.lazy_shape().dims();
                let head_size = qkv_width / (attention.n_head + 2 * attention.n_kv_head);
                let (q, kv) = (
                    attention.n_head * head_size,
                    attention.n_kv_head * head_size,
                );
                let bias = attention.qkv.bias.is_some();
                load_fused(
                    &mut attention.qkv,
                    &mut tensors,
                    &[
                        (at("self_attn.q_proj"), q),
                        (at("self_attn.k_proj"), kv),
                        (at("self_attn.v_proj"), kv),
                    ],
                    bias,
                    device,
                )?;
                load_fused(
                    &mut attention.projection,
                    &mut tensors,
                    &[(at("self_attn.o_proj"), c)],
                    false,
                    device,
                )?;
                let mlp = &mut block.mlp;
                let h = mlp.hidden;
                load_fused(
                    &mut mlp.gate_up,
                    &mut tensors,
                    &[(at("mlp.gate_proj"), h), (at("mlp.up_proj"), h)],
                    false,
                    device,
                )?;
                load_fused(
                    &mut mlp.down,
                    &mut tensors,
                    &[(at("mlp.down_proj"), c)],
                    false,
                    device,
                )?;
            }
            Layer::RmsNorm(norm) if i == n_layer => {
                load_norm(norm, &mut tensors, "model.norm.weight", device)?
            }
            _ => unreachable!("LlamaShape::of checked the layer stack"),
        }
    }
    if let Some(head) = &mut model.lm_head {
        load_fused(head, &mut tensors, &[("lm_head".into(), v)], false, device)?;
    }
    // A tied head may still be stored (some exports write both): the embedding is the head.
    let tied = model.tied_head;
    let extra = tensors.leftovers(|name| harmless(name) || (tied && name == "lm_head.weight"));
    if !extra.is_empty() {
        return Err(HfError::Extra {
            path: tensors.path_of(&extra[0]).to_path_buf(),
            names: extra.join(", "),
        });
    }
    Ok(model)
}

/// Every weight of a Llama-shaped model under its Hugging Face name, shape and f32 values
/// (`[out, in]` Linears, q/k/v and gate/up split apart again).
pub fn hf_tensors<B: Backend>(
    model: &LanguageModel<B>,
) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = BTreeMap::new();
    // One Burn Linear `[d_in, Σ out_k]` back into `nn.Linear`s `[out_k, d_in]`.
    let mut split = |linear: &Linear<B>, parts: &[(String, usize)]| {
        let [d_in, d_out] = linear.weight.lazy_shape().dims();
        let stacked = transpose(&values(linear.weight.val()), d_in, d_out);
        let bias = linear.bias.as_ref().map(|b| values(b.val()));
        let mut row = 0;
        for (name, rows) in parts {
            out.insert(
                format!("{name}.weight"),
                (
                    vec![*rows, d_in],
                    stacked[row * d_in..(row + rows) * d_in].to_vec(),
                ),
            );
            if let Some(bias) = &bias {
                out.insert(
                    format!("{name}.bias"),
                    (vec![*rows], bias[row..row + rows].to_vec()),
                );
            }
            row += rows;
        }
    };
    let mut norms = Vec::new();
    let n_layer = model.layers.len().saturating_sub(1);
    for (i, layer) in model.layers.iter().enumerate() {
        match layer {
            Layer::LlamaBlock(block) => {
                let at = |part: &str| format!("model.layers.{i}.{part}");
                norms.push((at("input_layernorm.weight"), &block.input_norm));
                norms.push((
                    at("post_attention_layernorm.weight"),
                    &block.post_attention_norm,
                ));
                let attention = &block.attention;
                let [_, qkv_width] = attention.qkv.weight.lazy_shape().dims();
                let head_size = qkv_width / (attention.n_head + 2 * attention.n_kv_head);
                let (q, kv) = (
                    attention.n_head * head_size,
                    attention.n_kv_head * head_size,
                );
                split(
                    &attention.qkv,
                    &[
                        (at("self_attn.q_proj"), q),
                        (at("self_attn.k_proj"), kv),
                        (at("self_attn.v_proj"), kv),
                    ],
                );
                let [_, d] = attention.projection.weight.lazy_shape().dims();
                split(&attention.projection, &[(at("self_attn.o_proj"), d)]);
                let h = block.mlp.hidden;
                split(
                    &block.mlp.gate_up,
                    &[(at("mlp.gate_proj"), h), (at("mlp.up_proj"), h)],
                );
                split(&block.mlp.down, &[(at("mlp.down_proj"), d)]);
            }
            Layer::RmsNorm(norm) if i == n_layer => norms.push(("model.norm.weight".into(), norm)),
            _ => {}
        }
    }
    if let Some(head) = &model.lm_head {
        let [_, v] = head.weight.lazy_shape().dims();
        split(head, &[("lm_head".into(), v)]);
    }
    for (name, norm) in norms {
        let weight = match &norm.weight {
            Some(weight) => values(weight.val()),
            None => vec![1.0; norm.d_model],
        };
        out.insert(name, (vec![norm.d_model], weight));
    }
    let embedding = &model.token_embedding.weight;
    out.insert(
        "model.embed_tokens.weight".into(),
        (
            embedding.lazy_shape().dims::<2>().to_vec(),
            values(embedding.val()),
        ),
    );
    out
}

/// Writes `config.json`, `model.safetensors` (float32) and the tokenizer's files
/// (`tokenizer.json`, `tokenizer_config.json`, `generation_config.json` as imported), so that
/// `AutoModelForCausalLM.from_pretrained(dir)` gives the same logits.
pub fn export<B: Backend>(
    model: &LanguageModel<B>,
    config: &ModelConfig,
    tokenizer: &AnyTokenizer,
    dir: &Path,
) -> Result<(), HfError> {
    let AnyTokenizer::HuggingFace(tokenizer) = tokenizer else {
        return Err(HfError::NotExportable(format!(
            "a Llama-family directory carries its tokenizer.json; this model's tokens are {}",
            tokenizer.describe()
        )));
    };
    let mut hf_config = LlamaConfig::from_model(config)?;
    let special = tokenizer.special();
    hf_config.bos_token_id = special.bos_token_id.map(|id| json!(id));
    hf_config.eos_token_id = match special.eos_token_ids.as_slice() {
        [] => None,
        [one] => Some(json!(one)),
        several => Some(json!(several)),
    };
    let weights = serialize(&hf_tensors(model), &dir.join(WEIGHTS_FILE))?;
    write_file(dir, WEIGHTS_FILE, &weights)?;
    write_file(dir, CONFIG_FILE, hf_config.to_json().as_bytes())?;
    write_file(dir, TOKENIZER_FILE, tokenizer.json().as_bytes())?;
    if let Some(text) = &special.tokenizer_config {
        write_file(dir, TOKENIZER_CONFIG_FILE, text.as_bytes())?;
    }
    if let Some(text) = &special.generation_config {
        write_file(dir, GENERATION_CONFIG_FILE, text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn parse(text: &str) -> Result<LlamaConfig, HfError> {
        LlamaConfig::parse(text, &PathBuf::from("config.json"))
    }

    const SMOLLM2_135M: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
        "vocab_size": 49152, "rms_norm_eps": 1e-05, "rope_theta": 100000, "rope_scaling": null,
        "tie_word_embeddings": true, "torch_dtype": "bfloat16", "bos_token_id": 0,
        "eos_token_id": 0
    }"#;

    #[test]
    fn smollm2_135m_has_its_published_parameter_count() {
        let config = parse(SMOLLM2_135M).unwrap();
        assert_eq!(config.head_dim, 64);
        assert_eq!(config.dtype, Some(SafetensorsDtype::BF16));
        let model = config.model_spec(None, 0.0).resolve(49152).unwrap();
        assert_eq!(model.num_params(), 134_515_008);
        assert_eq!(model.layers.len(), 31);
    }

    #[test]
    fn transformers_4_and_5_rope_spellings_agree() {
        let v4 = SMOLLM2_135M.replace(
            "\"rope_scaling\": null",
            "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}",
        );
        let v5 = SMOLLM2_135M
            .replace("\"rope_theta\": 100000,", "")
            .replace(
                "\"rope_scaling\": null",
                "\"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 2.0, \
                 \"rope_theta\": 100000.0}",
            )
            .replace("torch_dtype", "dtype");
        let (v4, v5) = (parse(&v4).unwrap(), parse(&v5).unwrap());
        assert_eq!(v4, v5);
        assert_eq!(
            v4.rope,
            RopeSpec {
                theta: 100_000.0,
                scaling: Some(RopeScaling::Linear { factor: 2.0 })
            }
        );
        // What we write reads back the same.
        let mut written = v4.clone();
        written.dtype = Some(SafetensorsDtype::BF16);
        assert_eq!(parse(&written.to_json()).unwrap(), written);
    }

    #[test]
    fn unsupported_options_are_named() {
        let cases = [
            (
                "\"rope_scaling\": null",
                "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}",
                "\"yarn\"",
            ),
            (
                "\"hidden_act\": \"silu\"",
                "\"hidden_act\": \"gelu\"",
                "hidden_act",
            ),
            (
                "\"model_type\": \"llama\"",
                "\"model_type\": \"llama\", \"mlp_bias\": true",
                "mlp_bias",
            ),
            (
                "\"model_type\": \"llama\"",
                "\"model_type\": \"llama\", \"attention_bias\": true",
                "attention_bias",
            ),
            (
                "\"num_key_value_heads\": 3",
                "\"num_key_value_heads\": 4",
                "num_key_value_heads",
            ),
            (
                "[\"LlamaForCausalLM\"]",
                "[\"LlamaForSequenceClassification\"]",
                "LlamaForSequenceClassification",
            ),
        ];
        for (from, to, named) in cases {
            let message = parse(&SMOLLM2_135M.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(message.contains(named), "{to}: {message}");
        }
        let mistral = SMOLLM2_135M
            .replace("\"llama\"", "\"mistral\", \"sliding_window\": 4096")
            .replace("LlamaForCausalLM", "MistralForCausalLM");
        let message = parse(&mistral).unwrap_err().to_string();
        assert!(message.contains("sliding_window"), "{message}");
        let qwen2 = SMOLLM2_135M
            .replace("\"llama\"", "\"qwen2\"")
            .replace("LlamaForCausalLM", "Qwen2ForCausalLM");
        assert!(parse(&qwen2).unwrap().qkv_bias);
    }
}
