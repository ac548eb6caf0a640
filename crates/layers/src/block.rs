//! `Block`: one Transformer block, communication (attention) then computation (feed-forward),
//! each behind a pre-LayerNorm residual connection.

use crate::attention::KvCache;
use crate::context::{LayerContext, LayerError};
use crate::footprint::StepShape;
use crate::layernorm::DEFAULT_EPSILON;
use crate::{
    Activation, FeedForward, FeedForwardConfig, FeedForwardSpec, LayerNorm, LayerNormConfig,
    LayerNormSpec, MultiHeadAttention, MultiHeadAttentionConfig, MultiHeadAttentionSpec,
};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// What a config writes: `Block(n_head: 4)`, gpt.py's block. `ffn_mult` sets the feed-forward
/// width (4× by default); `dropout` defaults to the model's. GPT-2's block is
/// `Block(n_head: 12, activation: GeluTanh, qkv_bias: true)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockSpec {
    pub n_head: usize,
    pub ffn_mult: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// The feed-forward's non-linearity (ReLU by default).
    #[serde(skip_serializing_if = "crate::feedforward::is_relu")]
    pub activation: Activation,
    /// A bias on the attention's query/key/value projection.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qkv_bias: bool,
    /// The two LayerNorms' epsilon.
    #[serde(skip_serializing_if = "is_default_epsilon")]
    pub epsilon: f64,
}

fn is_default_epsilon(epsilon: &f64) -> bool {
    *epsilon == DEFAULT_EPSILON
}

impl Default for BlockSpec {
    fn default() -> Self {
        Self {
            n_head: 1,
            ffn_mult: 4,
            dropout: None,
            activation: Activation::Relu,
            qkv_bias: false,
            epsilon: DEFAULT_EPSILON,
        }
    }
}

impl BlockSpec {
    pub fn resolve(&self, ctx: &LayerContext, d_input: usize) -> Result<BlockConfig, LayerError> {
        let attention = MultiHeadAttentionSpec {
            n_head: self.n_head,
            head_size: None,
            projection: true,
            dropout: self.dropout,
            qkv_bias: self.qkv_bias,
        }
        .resolve(ctx, d_input)
        .map_err(|e| e.within("Block"))?;
        let feed_forward = FeedForwardSpec {
            mult: self.ffn_mult,
            projection: true,
            dropout: self.dropout,
            activation: self.activation,
        }
        .resolve(ctx, d_input)
        .map_err(|e| e.within("Block"))?;
        let norm = LayerNormSpec {
            epsilon: self.epsilon,
        }
        .resolve(ctx, d_input)
        .map_err(|e| e.within("Block"))?;
        Ok(BlockConfig::new(attention, feed_forward).with_epsilon(norm.epsilon))
    }
}

#[derive(Config, Debug)]
pub struct BlockConfig {
    pub attention: MultiHeadAttentionConfig,
    pub feed_forward: FeedForwardConfig,
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

impl BlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Block<B> {
        Block {
            ln1: self.layer_norm().init(device),
            attention: self.attention.init(device),
            ln2: self.layer_norm().init(device),
            feed_forward: self.feed_forward.init(device),
        }
    }

    pub fn d_output(&self) -> usize {
        self.attention.d_input
    }

    fn layer_norm(&self) -> LayerNormConfig {
        LayerNormConfig::new(self.attention.d_input).with_epsilon(self.epsilon)
    }

    pub fn num_params(&self) -> u64 {
        (2 * self.layer_norm().num_params())
            .saturating_add(self.attention.num_params())
            .saturating_add(self.feed_forward.num_params())
    }

    /// Values a training step keeps for the backward pass (see [`crate::footprint`]).
    pub fn activations(&self, step: &StepShape) -> f64 {
        2.0 * self.layer_norm().activations(step)
            + self.attention.activations(step)
            + self.feed_forward.activations(step)
    }
}

/// `x + sa(ln1(x))`, then `x + ffwd(ln2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub ln1: LayerNorm<B>,
    pub attention: MultiHeadAttention<B>,
    pub ln2: LayerNorm<B>,
    pub feed_forward: FeedForward<B>,
}

impl<B: Backend> Block<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attention.forward(self.ln1.forward(x));
        x.clone() + self.feed_forward.forward(self.ln2.forward(x))
    }

    /// [`Block::forward`] for the newest positions only, the attention's keys and values cached.
    pub fn forward_cached(&self, x: Tensor<B, 3>, cache: &mut Option<KvCache<B>>) -> Tensor<B, 3> {
        let x = x.clone() + self.attention.forward_cached(self.ln1.forward(x), cache);
        x.clone() + self.feed_forward.forward(self.ln2.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn block(n_embd: usize, n_head: usize) -> Block<TestBackend> {
        BlockSpec {
            n_head,
            ..Default::default()
        }
        .resolve(&LayerContext::for_tests(n_embd), n_embd)
        .unwrap()
        .init(&Default::default())
    }

    #[test]
    fn shape_params_and_causality() {
        let block = block(32, 4);
        // gpt.py's Block at n_embd 32: attention 3*32*32 + proj 32*32+32, FFN 32*128+128 +
        // 128*32+32, two LayerNorms 2*64.
        assert_eq!(block.num_params(), 12_608);
        let x = random_input::<TestBackend>([2, 8, 32]);
        assert_eq!(block.forward(x.clone()).dims(), [2, 8, 32]);
        for t in [0, 4, 7] {
            assert_causal(|x| block.forward(x), x.clone(), t);
        }
    }

    #[test]
    fn bad_head_count_names_the_block() {
        let err = BlockSpec {
            n_head: 3,
            ..Default::default()
        }
        .resolve(&LayerContext::for_tests(32), 32)
        .unwrap_err()
        .to_string();
        assert!(err.contains("Block") && err.contains("n_head = 3"), "{err}");
    }
}
