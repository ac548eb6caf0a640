//! `Head`: one head of causal self-attention, the tutorial's first attention layer.

use crate::attention::{fused_causal_attention, Heads, KvCache};
use crate::context::{check_dropout, check_positive, LayerContext, LayerError};
use crate::footprint::{attention_activations, linear_params, StepShape};
use crate::linear::per_position;
use crate::WeightInit;
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// What a config writes: `Head(head_size: 32)`. `head_size` defaults to the input width.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_size: Option<usize>,
    /// Dropout on the attention weights; defaults to the model's `dropout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
}

impl HeadSpec {
    pub fn resolve(&self, ctx: &LayerContext, d_input: usize) -> Result<HeadConfig, LayerError> {
        let head_size = self.head_size.unwrap_or(d_input);
        check_positive("Head", "head_size", head_size)?;
        let dropout = self.dropout.unwrap_or(ctx.dropout);
        check_dropout("Head", dropout)?;
        Ok(HeadConfig::new(d_input, head_size, ctx.init).with_dropout(dropout))
    }
}

#[derive(Config, Debug)]
pub struct HeadConfig {
    pub d_input: usize,
    pub head_size: usize,
    pub init: WeightInit,
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl HeadConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Head<B> {
        Head {
            qkv: self
                .init
                .linear(self.d_input, 3 * self.head_size, false, device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }

    pub fn d_output(&self) -> usize {
        self.head_size
    }

    pub fn num_params(&self) -> u64 {
        linear_params(self.d_input, 3 * self.head_size, false)
    }

    /// Values a training step keeps for the backward pass (see [`crate::footprint`]).
    pub fn activations(&self, step: &StepShape) -> f64 {
        attention_activations(step, 1, self.head_size, None, self.dropout)
    }
}

/// Causal self-attention with a single head. The query, key and value projections (no bias)
/// are columns `0..h`, `h..2h` and `2h..3h` of one `[d_input, 3 * head_size]` Linear.
#[derive(Module, Debug)]
pub struct Head<B: Backend> {
    pub qkv: Linear<B>,
    pub dropout: Dropout,
}

impl<B: Backend> Head<B> {
    /// `[batch, time, d_input]` -> `[batch, time, head_size]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        fused_causal_attention(
            per_position(&self.qkv, x),
            Heads::multi(1),
            &self.dropout,
            None,
        )
    }

    /// [`Head::forward`] for the newest positions only, keys and values of earlier ones cached.
    pub fn forward_cached(&self, x: Tensor<B, 3>, cache: &mut Option<KvCache<B>>) -> Tensor<B, 3> {
        fused_causal_attention(
            per_position(&self.qkv, x),
            Heads::multi(1),
            &self.dropout,
            Some(cache),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    #[test]
    fn output_shape_and_causality() {
        let head =
            HeadConfig::new(32, 16, WeightInit::PyTorch).init::<TestBackend>(&Default::default());
        let x = random_input::<TestBackend>([2, 8, 32]);
        assert_eq!(head.forward(x.clone()).dims(), [2, 8, 16]);
        for t in [0, 3, 7] {
            assert_causal(|x| head.forward(x), x.clone(), t);
        }
    }

    #[test]
    fn first_position_returns_its_own_value() {
        // With one visible position the attention weight is exactly 1.
        let head =
            HeadConfig::new(8, 8, WeightInit::PyTorch).init::<TestBackend>(&Default::default());
        let x = random_input::<TestBackend>([1, 4, 8]);
        let first = head.forward(x.clone()).slice([0..1, 0..1, 0..8]);
        let value = head.qkv.forward(x).slice([0..1, 0..1, 16..24]);
        first
            .into_data()
            .assert_approx_eq::<f32>(&value.into_data(), Default::default());
    }

    #[test]
    fn parameter_count_has_no_bias() {
        let head =
            HeadConfig::new(32, 32, WeightInit::PyTorch).init::<TestBackend>(&Default::default());
        assert_eq!(head.num_params(), 3 * 32 * 32);
    }
}
