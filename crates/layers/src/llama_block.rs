//! `LlamaBlock`: the decoder layer of Llama-family models (Llama 2 and 3, TinyLlama, SmolLM2,
//! Qwen2.5): `x + attention(rms_norm(x))`, then `x + swiglu(rms_norm(x))`, the attention
//! grouped-query with rotary positions. Hugging Face's `LlamaDecoderLayer`.

use crate::attention::KvCache;
use crate::context::{LayerContext, LayerError};
use crate::footprint::StepShape;
use crate::rope::RopeSpec;
use crate::{
    Attention, AttentionConfig, AttentionSpec, RmsNorm, RmsNormConfig, RmsNormSpec, SwiGlu,
    SwiGluConfig, SwiGluSpec,
};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// What a config writes: SmolLM2-135M's layer is `LlamaBlock(n_head: 9, n_kv_head: 3, hidden:
/// 1536, rope: (theta: 100000.0))`; Qwen2.5's adds `qkv_bias: true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlamaBlockSpec {
    pub n_head: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_kv_head: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_size: Option<usize>,
    /// The SwiGLU MLP's width (`intermediate_size`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// The two RMSNorms' epsilon (`rms_norm_eps`), and the QK-norm's.
    pub epsilon: f64,
    pub rope: RopeSpec,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qkv_bias: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qk_norm: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
}

impl Default for LlamaBlockSpec {
    fn default() -> Self {
        Self {
            n_head: 1,
            n_kv_head: None,
            head_size: None,
            hidden: None,
            epsilon: 1e-5,
            rope: RopeSpec::default(),
            qkv_bias: false,
            qk_norm: false,
            dropout: None,
        }
    }
}

impl LlamaBlockSpec {
    pub fn resolve(
        &self,
        ctx: &LayerContext,
        d_input: usize,
    ) -> Result<LlamaBlockConfig, LayerError> {
        let within = |e: LayerError| e.within("LlamaBlock");
        let attention = AttentionSpec {
            n_head: self.n_head,
            n_kv_head: self.n_kv_head,
            head_size: self.head_size,
            rope: Some(self.rope.clone()),
            qkv_bias: self.qkv_bias,
            projection_bias: false,
            qk_norm: self.qk_norm,
            epsilon: self.epsilon,
            dropout: self.dropout,
        }
        .resolve(ctx, d_input)
        .map_err(within)?;
        let mlp = SwiGluSpec {
            hidden: self.hidden,
            bias: false,
            dropout: self.dropout,
        }
        .resolve(ctx, d_input)
        .map_err(within)?;
        let norm = RmsNormSpec {
            epsilon: self.epsilon,
            weight: true,
        }
        .resolve(ctx, d_input)
        .map_err(within)?;
        Ok(LlamaBlockConfig::new(attention, mlp, norm))
    }
}

#[derive(Config, Debug)]
pub struct LlamaBlockConfig {
    pub attention: AttentionConfig,
    pub mlp: SwiGluConfig,
    pub norm: RmsNormConfig,
}

impl LlamaBlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> LlamaBlock<B> {
        LlamaBlock {
            input_norm: self.norm.init(device),
            attention: self.attention.init(device),
            post_attention_norm: self.norm.init(device),
            mlp: self.mlp.init(device),
        }
    }

    pub fn d_output(&self) -> usize {
        self.attention.d_output()
    }

    pub fn num_params(&self) -> u64 {
        (2 * self.norm.num_params())
            .saturating_add(self.attention.num_params())
            .saturating_add(self.mlp.num_params())
    }

    /// Values a training step keeps for the backward pass (see [`crate::footprint`]).
    pub fn activations(&self, step: &StepShape) -> f64 {
        2.0 * self.norm.activations(step)
            + self.attention.activations(step)
            + self.mlp.activations(step)
    }
}

/// `x + attention(input_norm(x))`, then `x + mlp(post_attention_norm(x))`.
#[derive(Module, Debug)]
pub struct LlamaBlock<B: Backend> {
    pub input_norm: RmsNorm<B>,
    pub attention: Attention<B>,
    pub post_attention_norm: RmsNorm<B>,
    pub mlp: SwiGlu<B>,
}

impl<B: Backend> LlamaBlock<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attention.forward(self.input_norm.forward(x));
        x.clone() + self.mlp.forward(self.post_attention_norm.forward(x))
    }

    /// [`LlamaBlock::forward`] for the newest positions only, the attention's keys and values
    /// cached.
    pub fn forward_cached(&self, x: Tensor<B, 3>, cache: &mut Option<KvCache<B>>) -> Tensor<B, 3> {
        let x = x.clone()
            + self
                .attention
                .forward_cached(self.input_norm.forward(x), cache);
        x.clone() + self.mlp.forward(self.post_attention_norm.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    #[test]
    fn shape_params_and_causality() {
        let config = LlamaBlockSpec {
            n_head: 4,
            n_kv_head: Some(2),
            hidden: Some(48),
            ..Default::default()
        }
        .resolve(&LayerContext::for_tests(32), 32)
        .unwrap();
        let block = config.init::<TestBackend>(&Default::default());
        // q 32x32, k and v 32x16 each, o 32x32, gate/up 32x96, down 48x32, two norms of 32.
        assert_eq!(
            block.num_params(),
            32 * 64 + 32 * 32 + 32 * 96 + 48 * 32 + 64
        );
        assert_eq!(config.num_params(), block.num_params() as u64);
        let x = random_input::<TestBackend>([2, 8, 32]);
        assert_eq!(block.forward(x.clone()).dims(), [2, 8, 32]);
        for t in [0, 3, 7] {
            assert_causal(|x| block.forward(x), x.clone(), t);
        }
    }
}
