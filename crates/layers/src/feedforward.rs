//! `FeedForward`: the per-position MLP, `Linear + ReLU` (or GELU) with an optional output
//! projection.

use crate::attention::KvCache;
use crate::context::{check_dropout, check_positive, LayerContext, LayerError};
use crate::footprint::{linear_params, StepShape};
use crate::linear::{per_position, per_position_activated};
use crate::{Activation, WeightInit};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};
use tinygpt_kernels::dropout;

/// What a config writes. The tutorial's stage is `FeedForward(mult: 1, projection: false)`:
/// `Linear(C, C) + ReLU`; gpt.py's is the default `FeedForward()`: `Linear(C, 4C) + ReLU +
/// Linear(4C, C) + Dropout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedForwardSpec {
    /// Hidden width as a multiple of the input width.
    pub mult: usize,
    pub projection: bool,
    /// Dropout on the output; defaults to the model's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// The non-linearity: `Relu` (the tutorial's), `Gelu` or `GeluTanh` (GPT-2's).
    #[serde(skip_serializing_if = "is_relu")]
    pub activation: Activation,
}

pub(crate) fn is_relu(activation: &Activation) -> bool {
    *activation == Activation::Relu
}

impl Default for FeedForwardSpec {
    fn default() -> Self {
        Self {
            mult: 4,
            projection: true,
            dropout: None,
            activation: Activation::Relu,
        }
    }
}

impl FeedForwardSpec {
    pub fn resolve(
        &self,
        ctx: &LayerContext,
        d_input: usize,
    ) -> Result<FeedForwardConfig, LayerError> {
        check_positive("FeedForward", "mult", self.mult)?;
        let dropout = self.dropout.unwrap_or(ctx.dropout);
        check_dropout("FeedForward", dropout)?;
        Ok(
            FeedForwardConfig::new(d_input, self.mult * d_input, ctx.init)
                .with_projection(self.projection)
                .with_dropout(dropout)
                .with_activation(self.activation)
                .with_projection_init(Some(ctx.residual_init)),
        )
    }
}

#[derive(Config, Debug)]
pub struct FeedForwardConfig {
    pub d_input: usize,
    pub d_hidden: usize,
    pub init: WeightInit,
    #[config(default = true)]
    pub projection: bool,
    #[config(default = 0.0)]
    pub dropout: f64,
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// The projection's init, when it differs from `init` (GPT-2 scales residual projections).
    #[config(default = "None")]
    pub projection_init: Option<WeightInit>,
    /// Biases on both Linears (the tutorial's have them; Llama's and the speedrun's do not).
    #[config(default = true)]
    pub bias: bool,
}

impl FeedForwardConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> FeedForward<B> {
        let projection_init = self.projection_init.unwrap_or(self.init);
        FeedForward {
            hidden: self
                .init
                .linear(self.d_input, self.d_hidden, self.bias, device),
            activation: self.activation,
            projection: self
                .projection
                .then(|| projection_init.linear(self.d_hidden, self.d_input, self.bias, device)),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }

    pub fn d_output(&self) -> usize {
        if self.projection {
            self.d_input
        } else {
            self.d_hidden
        }
    }

    pub fn num_params(&self) -> u64 {
        let projection = if self.projection {
            linear_params(self.d_hidden, self.d_input, self.bias)
        } else {
            0
        };
        linear_params(self.d_input, self.d_hidden, self.bias).saturating_add(projection)
    }

    /// Values a training step keeps for the backward pass (see [`crate::footprint`]): the hidden
    /// layer before and after the activation, the projection's output and the dropout mask.
    pub fn activations(&self, step: &StepShape) -> f64 {
        let projected = if self.projection {
            step.tokens() * self.d_input as f64
        } else {
            0.0
        };
        2.0 * step.tokens() * self.d_hidden as f64
            + projected
            + step.dropout_mask(self.d_output(), self.dropout)
    }
}

/// A position-wise MLP: every time step is transformed on its own.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    pub hidden: Linear<B>,
    pub activation: Activation,
    pub projection: Option<Linear<B>>,
    pub dropout: Dropout,
}

impl<B: Backend> FeedForward<B> {
    /// Works position by position, so generation needs no cache: same as `forward`.
    pub fn forward_cached(&self, x: Tensor<B, 3>, _cache: &mut Option<KvCache<B>>) -> Tensor<B, 3> {
        self.forward(x)
    }

    /// `[batch, time, d_input]` -> `[batch, time, d_output]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = per_position_activated(&self.hidden, x, self.activation);
        let h = match &self.projection {
            Some(projection) => per_position(projection, h),
            None => h,
        };
        dropout(&self.dropout, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    #[test]
    fn tutorial_and_gpt_shapes() {
        let device = Default::default();
        let x = random_input::<TestBackend>([2, 8, 32]);
        let tutorial = FeedForwardConfig::new(32, 32, WeightInit::PyTorch)
            .with_projection(false)
            .init::<TestBackend>(&device);
        assert_eq!(tutorial.forward(x.clone()).dims(), [2, 8, 32]);
        assert_eq!(tutorial.num_params(), 32 * 32 + 32);
        let gpt = FeedForwardConfig::new(32, 128, WeightInit::PyTorch).init::<TestBackend>(&device);
        assert_eq!(gpt.forward(x.clone()).dims(), [2, 8, 32]);
        assert_eq!(gpt.num_params(), 32 * 128 + 128 + 128 * 32 + 32);
        let wide = FeedForwardConfig::new(32, 64, WeightInit::PyTorch)
            .with_projection(false)
            .init::<TestBackend>(&device);
        assert_eq!(wide.forward(x).dims(), [2, 8, 64]);
    }

    #[test]
    fn works_position_by_position() {
        let ffn = FeedForwardConfig::new(16, 64, WeightInit::PyTorch)
            .init::<TestBackend>(&Default::default());
        let x = random_input::<TestBackend>([1, 5, 16]);
        let whole = ffn.forward(x.clone()).slice([0..1, 2..3, 0..16]);
        let alone = ffn.forward(x.slice([0..1, 2..3, 0..16]));
        whole
            .into_data()
            .assert_approx_eq::<f32>(&alone.into_data(), Default::default());
    }

    #[test]
    fn output_is_non_negative_without_projection() {
        let ffn = FeedForwardConfig::new(8, 8, WeightInit::PyTorch)
            .with_projection(false)
            .init::<TestBackend>(&Default::default());
        let min: f32 = ffn.forward(random_input([4, 4, 8])).min().into_scalar();
        assert!(min >= 0.0);
    }
}
