//! `LayerNorm`: normalises each position's features to zero mean and unit variance, then scales
//! and shifts them (gpt.py's `ln_f`, and inside every `Block`).

use crate::attention::KvCache;
use crate::context::{LayerContext, LayerError};
use crate::footprint::StepShape;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// What a config writes: `LayerNorm()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerNormSpec {
    pub epsilon: f64,
}

/// PyTorch's and GPT-2's.
pub const DEFAULT_EPSILON: f64 = 1e-5;

impl Default for LayerNormSpec {
    fn default() -> Self {
        Self {
            epsilon: DEFAULT_EPSILON,
        }
    }
}

impl LayerNormSpec {
    pub fn resolve(
        &self,
        _ctx: &LayerContext,
        d_input: usize,
    ) -> Result<LayerNormConfig, LayerError> {
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(LayerError::Invalid {
                layer: "LayerNorm",
                reason: format!(
                    "epsilon must be a small positive number, got {}",
                    self.epsilon
                ),
            });
        }
        Ok(LayerNormConfig::new(d_input).with_epsilon(self.epsilon))
    }
}

#[derive(Config, Debug)]
pub struct LayerNormConfig {
    pub d_model: usize,
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

impl LayerNormConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNorm {
            norm: burn::nn::LayerNormConfig::new(self.d_model)
                .with_epsilon(self.epsilon)
                .init(device),
            epsilon: self.epsilon,
        }
    }

    pub fn d_output(&self) -> usize {
        self.d_model
    }

    /// Scale and shift.
    pub fn num_params(&self) -> u64 {
        2 * self.d_model as u64
    }

    /// Values a training step keeps for the backward pass (see [`crate::footprint`]): the
    /// normalised input and the output.
    pub fn activations(&self, step: &StepShape) -> f64 {
        2.0 * step.tokens() * self.d_model as f64
    }
}

/// Layer normalisation over the feature dimension, with learned scale (ones) and shift (zeros).
/// Holds Burn's module (its parameters and names). Inference runs Burn's `layer_norm` backend op,
/// which a backend may fuse; training runs [`tinygpt_kernels::layer_norm`] on flex and ndarray
/// and [`exact::layer_norm`](crate::exact::layer_norm) elsewhere, neither of whose gradients goes
/// through ndarray's reciprocal estimate.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    pub norm: burn::nn::LayerNorm<B>,
    pub epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Works position by position, so generation needs no cache: same as `forward`.
    pub fn forward_cached(&self, x: Tensor<B, 3>, _cache: &mut Option<KvCache<B>>) -> Tensor<B, 3> {
        self.forward(x)
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if !B::ad_enabled(&x.device()) {
            return self.norm.forward(x);
        }
        let beta = self.norm.beta.as_ref().map(|beta| beta.val());
        // On flex and ndarray one kernel, else the tensor ops with exact gradients.
        tinygpt_kernels::layer_norm((x, self.norm.gamma.val(), beta), self.epsilon).unwrap_or_else(
            |(x, gamma, beta)| crate::exact::layer_norm(x, gamma, beta, self.epsilon),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    #[test]
    fn normalises_each_position() {
        let ln = LayerNormConfig::new(16).init::<TestBackend>(&Default::default());
        let x = random_input::<TestBackend>([2, 3, 16]) * 7.0 + 3.0;
        let y = ln.forward(x);
        assert_eq!(y.dims(), [2, 3, 16]);
        let mean: f32 = y.clone().mean_dim(2).abs().max().into_scalar();
        let var = y.var_bias(2);
        let var_err: f32 = (var - 1.0).abs().max().into_scalar();
        assert!(mean < 1e-5, "{mean}");
        assert!(var_err < 1e-3, "{var_err}");
        assert_eq!(ln.num_params(), 32);
    }
}
