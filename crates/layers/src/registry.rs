//! The layer registry: the one list of layer kinds a config may name.
//!
//! A layer kind is a file providing `XSpec` (serde: what the config writes, with
//! `resolve(&LayerContext, d_input) -> Result<XConfig, LayerError>`), `XConfig` (with
//! `init(&device) -> X<B>`, `d_output()`, and `num_params()` and `activations(&StepShape)`, what
//! the layer will cost, counted without building it) and `X<B>` (a Burn module with
//! `forward([batch, time, d_input]) -> [batch, time, d_output]`, and `forward_cached`, the same
//! for the newest positions during generation, given the layer's `KvCache` slot). Registering it is one line in
//! the `layer_registry!` call below; the config then names it, e.g. `Block(n_head: 4)`, and an
//! unknown name is rejected with the list of registered ones.

// The generated `Layer` enum and its derived record hold layers of very different sizes; they
// are built once and kept in a Vec, so boxing the large variants would buy nothing.
#![allow(clippy::large_enum_variant)]

use crate::context::{LayerContext, LayerError};
use crate::{
    block, feedforward, head, layernorm, llama_block, multihead, rms_norm, self_attention,
    speedrun_block, swiglu,
};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

layer_registry! {
    Head => head::HeadSpec, head::HeadConfig, head::Head,
    MultiHeadAttention => multihead::MultiHeadAttentionSpec, multihead::MultiHeadAttentionConfig, multihead::MultiHeadAttention,
    FeedForward => feedforward::FeedForwardSpec, feedforward::FeedForwardConfig, feedforward::FeedForward,
    Block => block::BlockSpec, block::BlockConfig, block::Block,
    LayerNorm => layernorm::LayerNormSpec, layernorm::LayerNormConfig, layernorm::LayerNorm,
    RmsNorm => rms_norm::RmsNormSpec, rms_norm::RmsNormConfig, rms_norm::RmsNorm,
    Attention => self_attention::AttentionSpec, self_attention::AttentionConfig, self_attention::Attention,
    SwiGlu => swiglu::SwiGluSpec, swiglu::SwiGluConfig, swiglu::SwiGlu,
    LlamaBlock => llama_block::LlamaBlockSpec, llama_block::LlamaBlockConfig, llama_block::LlamaBlock,
    SpeedrunBlock => speedrun_block::SpeedrunBlockSpec, speedrun_block::SpeedrunBlockConfig, speedrun_block::SpeedrunBlock,
}

/// `Repeat(n: 30, layer: LlamaBlock(...))`: one layer `n` times over, so a 30-layer model is not
/// 30 lines. Each repetition is a layer of its own, with its own weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatSpec {
    pub n: usize,
    pub layer: Box<LayerSpec>,
}

/// The layer stack with every `Repeat` written out: the layers, in order, that get built.
pub fn expand(specs: &[LayerSpec]) -> Result<Vec<LayerSpec>, LayerError> {
    let mut layers = Vec::with_capacity(specs.len());
    for spec in specs {
        match spec {
            LayerSpec::Repeat(repeat) => {
                if repeat.n == 0 {
                    return Err(LayerError::Invalid {
                        layer: "Repeat",
                        reason: "n must be at least 1, got 0".into(),
                    });
                }
                let inner = expand(std::slice::from_ref(&repeat.layer))?;
                for _ in 0..repeat.n {
                    layers.extend(inner.iter().cloned());
                }
            }
            layer => layers.push(layer.clone()),
        }
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn parse(text: &str) -> Result<Vec<LayerSpec>, ron::error::SpannedError> {
        ron::Options::default()
            .with_default_extension(
                ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES
                    | ron::extensions::Extensions::IMPLICIT_SOME,
            )
            .from_str(text)
    }

    #[test]
    fn configs_name_layers_by_registered_name() {
        let specs = parse(
            "[Head(head_size: 16), MultiHeadAttention(n_head: 4, projection: true), \
             FeedForward(mult: 1, projection: false), Block(n_head: 2), LayerNorm(), RmsNorm(), \
             Attention(n_head: 4, n_kv_head: 2), SwiGlu(), LlamaBlock(n_head: 2), \
             SpeedrunBlock(n_head: 2, activation: ReluSquared, qk_norm: true)]",
        )
        .unwrap();
        let names: Vec<_> = specs.iter().map(LayerSpec::name).collect();
        assert_eq!(names, REGISTERED_LAYERS);
        // Each layer's output width feeds the next.
        let ctx = LayerContext::for_tests(32);
        let mut width = 32;
        let device = Default::default();
        let x = random_input::<TestBackend>([2, 8, 32]);
        let mut y = x;
        for spec in &specs {
            let config = spec.resolve(&ctx, width).unwrap();
            width = config.d_output();
            let layer = config.init::<TestBackend>(&device);
            // Counted from the config alone, the same as the built layer's.
            assert_eq!(config.num_params(), layer.num_params() as u64, "{spec:?}");
            y = layer.forward(y);
            assert_eq!(y.dims(), [2, 8, width]);
        }
        assert_eq!(width, 16);
    }

    #[test]
    fn repeat_writes_the_layer_out_n_times() {
        let specs = parse(
            "[Repeat(n: 3, layer: LlamaBlock(n_head: 2)), Repeat(n: 2, layer: Repeat(n: 2, \
             layer: RmsNorm())), LayerNorm()]",
        )
        .unwrap();
        let names: Vec<_> = expand(&specs)
            .unwrap()
            .iter()
            .map(LayerSpec::name)
            .collect();
        assert_eq!(
            names,
            [
                "LlamaBlock",
                "LlamaBlock",
                "LlamaBlock",
                "RmsNorm",
                "RmsNorm",
                "RmsNorm",
                "RmsNorm",
                "LayerNorm"
            ]
        );
        let zero = parse("[Repeat(n: 0, layer: RmsNorm())]").unwrap();
        assert!(expand(&zero).unwrap_err().to_string().contains("n must be"));
        assert!(
            !REGISTERED_LAYERS.contains(&"Repeat"),
            "Repeat is not a layer"
        );
    }

    #[test]
    fn unknown_layer_lists_registered_names() {
        let err = parse("[Block(n_head: 4), Conv2d(kernel: 3)]")
            .unwrap_err()
            .to_string();
        for name in REGISTERED_LAYERS {
            assert!(err.contains(name), "{err}");
        }
        assert!(err.contains("Conv2d"), "{err}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = parse("[Block(n_heads: 4)]").unwrap_err().to_string();
        assert!(err.contains("n_heads"), "{err}");
    }

    #[test]
    fn bad_sizes_are_errors() {
        let ctx = LayerContext::for_tests(32);
        for text in [
            "[Head(head_size: 0)]",
            "[FeedForward(mult: 0)]",
            "[MultiHeadAttention(n_head: 0)]",
            "[Block(n_head: 4, dropout: 1.0)]",
            "[LayerNorm(epsilon: -1.0)]",
            "[RmsNorm(epsilon: 0.0)]",
            "[Attention(n_head: 4, n_kv_head: 3)]",
            "[Attention(n_head: 3)]",
            "[SwiGlu(hidden: 0)]",
            "[LlamaBlock(n_head: 4, n_kv_head: 8)]",
            "[SpeedrunBlock(n_head: 3)]",
        ] {
            let spec = &parse(text).unwrap()[0];
            assert!(spec.resolve(&ctx, 32).is_err(), "{text} should be rejected");
        }
    }
}
