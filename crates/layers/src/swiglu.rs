//! `SwiGlu`: the gated MLP of Llama-family models, `down(silu(gate(x)) * up(x))`, where GPT-2's
//! is `proj(gelu(fc(x)))`. The gate and up projections are one Linear, side by side.

use crate::attention::KvCache;
use crate::context::{check_dropout, check_positive, LayerContext, LayerError};
use crate::footprint::{linear_params, StepShape};
use crate::linear::per_position;
use crate::WeightInit;
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{activation, backend::Backend, Tensor};
use serde::{Deserialize, Serialize};
use tinygpt_kernels::dropout;

/// What a config writes: `SwiGlu(hidden: 1536)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwiGluSpec {
    /// The gated width (`intermediate_size`); by default 8/3 of the input, rounded up to a
    /// multiple of 8, which keeps the parameters of a 4x GELU MLP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// Biases on the three projections (Llama has none).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bias: bool,
    /// Dropout on the output; defaults to the model's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
}

impl SwiGluSpec {
    pub fn resolve(&self, ctx: &LayerContext, d_input: usize) -> Result<SwiGluConfig, LayerError> {
        let hidden = self
            .hidden
            .unwrap_or((8 * d_input).div_ceil(3).div_ceil(8) * 8);
        check_positive("SwiGlu", "hidden", hidden)?;
        let dropout = self.dropout.unwrap_or(ctx.dropout);
        check_dropout("SwiGlu", dropout)?;
        Ok(SwiGluConfig {
            d_input,
            hidden,
            bias: self.bias,
            dropout,
            init: ctx.init,
            projection_init: ctx.residual_init,
        })
    }
}

#[derive(Config, Debug)]
pub struct SwiGluConfig {
    pub d_input: usize,
    pub hidden: usize,
    pub bias: bool,
    pub dropout: f64,
    pub init: WeightInit,
    pub projection_init: WeightInit,
}

impl SwiGluConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwiGlu<B> {
        SwiGlu {
            gate_up: self
                .init
                .linear(self.d_input, 2 * self.hidden, self.bias, device),
            down: self
                .projection_init
                .linear(self.hidden, self.d_input, self.bias, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            hidden: self.hidden,
        }
    }

    pub fn d_output(&self) -> usize {
        self.d_input
    }

    pub fn num_params(&self) -> u64 {
        linear_params(self.d_input, 2 * self.hidden, self.bias).saturating_add(linear_params(
            self.hidden,
            self.d_input,
            self.bias,
        ))
    }

    /// Values a training step keeps for the backward pass (see [`crate::footprint`]): the gate
    /// and up projections, the gate's SiLU, their product, and the output.
    pub fn activations(&self, step: &StepShape) -> f64 {
        let tokens = step.tokens();
        4.0 * tokens * self.hidden as f64
            + tokens * self.d_input as f64
            + step.dropout_mask(self.d_input, self.dropout)
    }
}

/// `down(silu(gate(x)) * up(x))` per position. `gate_up` is `[d_input, 2 * hidden]`: the gate's
/// columns, then the up projection's.
#[derive(Module, Debug)]
pub struct SwiGlu<B: Backend> {
    pub gate_up: Linear<B>,
    pub down: Linear<B>,
    pub dropout: Dropout,
    pub hidden: usize,
}

impl<B: Backend> SwiGlu<B> {
    /// Works position by position, so generation needs no cache: same as `forward`.
    pub fn forward_cached(&self, x: Tensor<B, 3>, _cache: &mut Option<KvCache<B>>) -> Tensor<B, 3> {
        self.forward(x)
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate_up = per_position(&self.gate_up, x);
        // On flex and ndarray one kernel (forward and backward), tensor ops elsewhere.
        let hidden = tinygpt_kernels::swiglu(gate_up).unwrap_or_else(plain_gate);
        dropout(&self.dropout, per_position(&self.down, hidden))
    }
}

/// `silu(gate) * up` of `[batch, time, 2 * hidden]` (the gate's columns, then up's), as tensor
/// ops on every backend.
pub fn plain_gate<B: Backend>(gate_up: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, time, width] = gate_up.dims();
    let h = width / 2;
    let gate = gate_up.clone().slice([0..batch, 0..time, 0..h]);
    let up = gate_up.slice([0..batch, 0..time, h..width]);
    activation::silu(gate) * up
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    #[test]
    fn gated_by_silu() {
        let config = SwiGluSpec {
            hidden: Some(12),
            ..Default::default()
        }
        .resolve(&LayerContext::for_tests(8), 8)
        .unwrap();
        let mlp = config.init::<TestBackend>(&Default::default());
        assert_eq!(mlp.num_params() as u64, config.num_params());
        assert_eq!(config.num_params(), 8 * 24 + 12 * 8);
        let x = random_input::<TestBackend>([2, 3, 8]);
        let y = mlp.forward(x.clone());
        // By hand: the same products, SiLU written out.
        let gate_up = x.matmul(mlp.gate_up.weight.val().unsqueeze());
        let gate = gate_up.clone().slice([0..2, 0..3, 0..12]);
        let up = gate_up.slice([0..2, 0..3, 12..24]);
        let silu = gate.clone() * activation::sigmoid(gate);
        let want = (silu * up).matmul(mlp.down.weight.val().unsqueeze());
        y.into_data()
            .assert_approx_eq::<f32>(&want.into_data(), burn::tensor::Tolerance::absolute(1e-5));
        let default = SwiGluSpec::default()
            .resolve(&LayerContext::for_tests(576), 576)
            .unwrap();
        assert_eq!(default.hidden, 1536, "SmolLM2-135M's intermediate_size");
    }
}
