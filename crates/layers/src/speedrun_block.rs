//! `SpeedrunBlock`: the block of the GPT speedrun (KellerJordan/modded-nanogpt):
//! `x + attention(rms_norm(x))`, then `x + mlp(rms_norm(x))`, with the attention's positions from
//! rotary embeddings, optional QK-norm, and a bias-free two-Linear MLP whose non-linearity is a
//! setting (ReLU², the speedrun's, or the tutorial's ReLU, or GELU).
//!
//! Every piece the speedrun found to buy loss per second is a setting here, so an ablation is one
//! changed word: `activation`, `qk_norm`, `rope` (`None` leaves positions to the model's learned
//! table) and `norm_weight` (the speedrun's norms have none). The zero-initialised output
//! projections are the model's `zero_init`, the embedding skip its `x0_skip`.

use crate::attention::KvCache;
use crate::context::{check_positive, LayerContext, LayerError};
use crate::footprint::StepShape;
use crate::rope::RopeSpec;
use crate::{
    Activation, Attention, AttentionConfig, AttentionSpec, FeedForward, FeedForwardConfig, RmsNorm,
    RmsNormConfig, RmsNormSpec,
};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// What a config writes: `SpeedrunBlock(n_head: 4, activation: ReluSquared, qk_norm: true)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpeedrunBlockSpec {
    pub n_head: usize,
    /// Key and value heads (grouped-query attention); `n_head` by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_kv_head: Option<usize>,
    /// The MLP's width as a multiple of the input width.
    pub ffn_mult: usize,
    /// The MLP's non-linearity (the tutorial's ReLU by default; the speedrun's is ReluSquared).
    pub activation: Activation,
    /// RMSNorm of every query and key head before the rotation.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qk_norm: bool,
    /// Rotary position embeddings; `None` for a model with a learned position table.
    pub rope: Option<RopeSpec>,
    /// A learned scale in the two RMSNorms (Llama's); the speedrun's norms have none.
    pub norm_weight: bool,
    pub epsilon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
}

impl Default for SpeedrunBlockSpec {
    fn default() -> Self {
        Self {
            n_head: 1,
            n_kv_head: None,
            ffn_mult: 4,
            activation: Activation::Relu,
            qk_norm: false,
            rope: Some(RopeSpec::default()),
            norm_weight: true,
            epsilon: 1e-5,
            dropout: None,
        }
    }
}

impl SpeedrunBlockSpec {
    pub fn resolve(
        &self,
        ctx: &LayerContext,
        d_input: usize,
    ) -> Result<SpeedrunBlockConfig, LayerError> {
        let within = |e: LayerError| e.within("SpeedrunBlock");
        check_positive("SpeedrunBlock", "ffn_mult", self.ffn_mult)?;
        let attention = AttentionSpec {
            n_head: self.n_head,
            n_kv_head: self.n_kv_head,
            head_size: None,
            rope: self.rope.clone(),
            qkv_bias: false,
            projection_bias: false,
            qk_norm: self.qk_norm,
            epsilon: self.epsilon,
            dropout: self.dropout,
        }
        .resolve(ctx, d_input)
        .map_err(within)?;
        let norm = RmsNormSpec {
            epsilon: self.epsilon,
            weight: self.norm_weight,
        }
        .resolve(ctx, d_input)
        .map_err(within)?;
        let mlp = FeedForwardConfig::new(d_input, self.ffn_mult * d_input, ctx.init)
            .with_activation(self.activation)
            .with_bias(false)
            .with_dropout(attention.dropout)
            .with_projection_init(Some(ctx.residual_init));
        Ok(SpeedrunBlockConfig::new(attention, mlp, norm))
    }
}

#[derive(Config, Debug)]
pub struct SpeedrunBlockConfig {
    pub attention: AttentionConfig,
    pub mlp: FeedForwardConfig,
    pub norm: RmsNormConfig,
}

impl SpeedrunBlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> SpeedrunBlock<B> {
        SpeedrunBlock {
            attention_norm: self.norm.init(device),
            attention: self.attention.init(device),
            mlp_norm: self.norm.init(device),
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

/// `x + attention(attention_norm(x))`, then `x + mlp(mlp_norm(x))`.
#[derive(Module, Debug)]
pub struct SpeedrunBlock<B: Backend> {
    pub attention_norm: RmsNorm<B>,
    pub attention: Attention<B>,
    pub mlp_norm: RmsNorm<B>,
    pub mlp: FeedForward<B>,
}

impl<B: Backend> SpeedrunBlock<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attention.forward(self.attention_norm.forward(x));
        x.clone() + self.mlp.forward(self.mlp_norm.forward(x))
    }

    /// [`SpeedrunBlock::forward`] for the newest positions only, the attention's keys and
    /// values cached.
    pub fn forward_cached(&self, x: Tensor<B, 3>, cache: &mut Option<KvCache<B>>) -> Tensor<B, 3> {
        let x = x.clone()
            + self
                .attention
                .forward_cached(self.attention_norm.forward(x), cache);
        x.clone() + self.mlp.forward(self.mlp_norm.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::WeightInit;

    fn block(spec: SpeedrunBlockSpec, ctx: LayerContext) -> SpeedrunBlock<TestBackend> {
        let config = spec.resolve(&ctx, 32).unwrap();
        let block = config.init::<TestBackend>(&Default::default());
        assert_eq!(config.num_params(), block.num_params() as u64);
        block
    }

    #[test]
    fn shape_params_and_causality() {
        let speedrun = SpeedrunBlockSpec {
            n_head: 4,
            activation: Activation::ReluSquared,
            qk_norm: true,
            norm_weight: false,
            ..Default::default()
        };
        let layer = block(speedrun, LayerContext::for_tests(32));
        // qkv 32x96, o 32x32, MLP 32x128 and 128x32, no biases, no norm weights; QK-norm 2x8.
        assert_eq!(layer.num_params(), 32 * 96 + 32 * 32 + 2 * 32 * 128 + 2 * 8);
        assert_eq!(layer.mlp.activation, Activation::ReluSquared);
        let x = random_input::<TestBackend>([2, 8, 32]);
        assert_eq!(layer.forward(x.clone()).dims(), [2, 8, 32]);
        for t in [0, 3, 7] {
            assert_causal(|x| layer.forward(x), x.clone(), t);
        }
        let mut cache = None;
        let first = layer.forward_cached(x.clone().slice([0..2, 0..5, 0..32]), &mut cache);
        let rest = layer.forward_cached(x.clone().slice([0..2, 5..8, 0..32]), &mut cache);
        Tensor::cat(vec![first, rest], 1)
            .into_data()
            .assert_approx_eq::<f32>(
                &layer.forward(x).into_data(),
                burn::tensor::Tolerance::absolute(1e-5),
            );
    }

    #[test]
    fn zero_init_makes_the_block_the_identity() {
        // The model's zero_init reaches the block as its residual_init.
        let ctx = LayerContext {
            residual_init: WeightInit::Zero,
            ..LayerContext::for_tests(32)
        };
        let layer = block(
            SpeedrunBlockSpec {
                n_head: 4,
                ..Default::default()
            },
            ctx,
        );
        let x = random_input::<TestBackend>([2, 8, 32]);
        layer
            .forward(x.clone())
            .into_data()
            .assert_eq(&x.into_data(), true);
        // Only the writes into the residual stream start at zero.
        let qkv: f32 = layer.attention.qkv.weight.val().abs().sum().into_scalar();
        assert!(qkv > 0.0);
    }

    #[test]
    fn without_rope_positions_come_from_elsewhere() {
        let layer = block(
            SpeedrunBlockSpec {
                n_head: 4,
                rope: None,
                ..Default::default()
            },
            LayerContext::for_tests(32),
        );
        assert!(layer.attention.rope.is_none());
        assert!(SpeedrunBlockSpec {
            n_head: 4,
            ffn_mult: 0,
            ..Default::default()
        }
        .resolve(&LayerContext::for_tests(32), 32)
        .is_err());
    }
}
