//! `RmsNorm`: scales each position's features to unit root mean square, then by a learned
//! weight (Llama's `LlamaRMSNorm`, `x / sqrt(mean(x²) + ε) · w`); no centring and no shift, so
//! cheaper than LayerNorm. Without a weight it is the speedrun's parameter-free norm.

use crate::attention::KvCache;
use crate::context::{LayerContext, LayerError};
use crate::footprint::StepShape;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// What a config writes: `RmsNorm()`, `RmsNorm(epsilon: 1e-6)`, `RmsNorm(weight: false)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmsNormSpec {
    /// `rms_norm_eps`: 1e-5 in Llama 2, TinyLlama and SmolLM2, 1e-6 in Qwen2.5.
    pub epsilon: f64,
    /// A learned per-feature scale (initialised to ones).
    pub weight: bool,
}

impl Default for RmsNormSpec {
    fn default() -> Self {
        Self {
            epsilon: 1e-5,
            weight: true,
        }
    }
}

impl RmsNormSpec {
    pub fn resolve(
        &self,
        _ctx: &LayerContext,
        d_input: usize,
    ) -> Result<RmsNormConfig, LayerError> {
        check_epsilon("RmsNorm", self.epsilon)?;
        Ok(RmsNormConfig::new(d_input)
            .with_epsilon(self.epsilon)
            .with_weight(self.weight))
    }
}

pub(crate) fn check_epsilon(layer: &'static str, epsilon: f64) -> Result<(), LayerError> {
    if epsilon > 0.0 && epsilon.is_finite() {
        Ok(())
    } else {
        Err(LayerError::Invalid {
            layer,
            reason: format!("epsilon must be a small positive number, got {epsilon}"),
        })
    }
}

#[derive(Config, Debug)]
pub struct RmsNormConfig {
    pub d_model: usize,
    #[config(default = 1e-5)]
    pub epsilon: f64,
    #[config(default = true)]
    pub weight: bool,
}

impl RmsNormConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> RmsNorm<B> {
        RmsNorm {
            weight: self
                .weight
                .then(|| Param::from_tensor(Tensor::ones([self.d_model], device))),
            epsilon: self.epsilon,
            d_model: self.d_model,
        }
    }

    pub fn d_output(&self) -> usize {
        self.d_model
    }

    pub fn num_params(&self) -> u64 {
        if self.weight {
            self.d_model as u64
        } else {
            0
        }
    }

    /// Values a training step keeps for the backward pass (see [`crate::footprint`]): the
    /// normalised input and the output.
    pub fn activations(&self, step: &StepShape) -> f64 {
        2.0 * step.tokens() * self.d_model as f64
    }
}

/// Root-mean-square normalisation over the feature dimension. On flex and ndarray one kernel
/// (forward, and backward in training); elsewhere tensor ops whose division is exact.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub weight: Option<Param<Tensor<B, 1>>>,
    pub epsilon: f64,
    pub d_model: usize,
}

impl<B: Backend> RmsNorm<B> {
    /// Works position by position, so generation needs no cache: same as `forward`.
    pub fn forward_cached(&self, x: Tensor<B, 3>, _cache: &mut Option<KvCache<B>>) -> Tensor<B, 3> {
        self.forward(x)
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let weight = match &self.weight {
            Some(weight) => weight.val(),
            None => Tensor::ones([self.d_model], &x.device()),
        };
        tinygpt_kernels::rms_norm((x, weight, None), self.epsilon)
            .unwrap_or_else(|(x, weight, _)| crate::exact::rms_norm(x, weight, self.epsilon))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    #[test]
    fn scales_each_position_to_unit_root_mean_square() {
        let norm = RmsNormConfig::new(16).init::<TestBackend>(&Default::default());
        let x = random_input::<TestBackend>([2, 3, 16]) * 7.0 + 3.0;
        let y = norm.forward(x.clone());
        let rms: f32 = (y.clone() * y)
            .mean_dim(2)
            .sqrt()
            .sub_scalar(1.0)
            .abs()
            .max()
            .into_scalar();
        assert!(rms < 1e-4, "{rms}");
        assert_eq!(norm.num_params(), 16);
        let bare = RmsNormConfig::new(16)
            .with_weight(false)
            .init::<TestBackend>(&Default::default());
        assert_eq!(bare.num_params(), 0);
        bare.forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&norm.forward(x).into_data(), Default::default());
    }
}
