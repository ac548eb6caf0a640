//! `MultiHeadAttention`: several causal attention heads in parallel, concatenated.

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
use tinygpt_kernels::dropout;

/// What a config writes: `MultiHeadAttention(n_head: 4)`. `head_size` defaults to
/// `d_input / n_head`; `projection` adds the output Linear (gpt.py's `proj`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiHeadAttentionSpec {
    pub n_head: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_size: Option<usize>,
    pub projection: bool,
    /// Dropout on the attention weights and after the projection; defaults to the model's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// A bias on the query/key/value projection (GPT-2 has one; the tutorial does not).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qkv_bias: bool,
}

impl Default for MultiHeadAttentionSpec {
    fn default() -> Self {
        Self {
            n_head: 1,
            head_size: None,
            projection: false,
            dropout: None,
            qkv_bias: false,
        }
    }
}

impl MultiHeadAttentionSpec {
    pub fn resolve(
        &self,
        ctx: &LayerContext,
        d_input: usize,
    ) -> Result<MultiHeadAttentionConfig, LayerError> {
        let layer = "MultiHeadAttention";
        check_positive(layer, "n_head", self.n_head)?;
        let head_size = match self.head_size {
            Some(size) => size,
            None if d_input.is_multiple_of(self.n_head) => d_input / self.n_head,
            None => {
                return Err(LayerError::Invalid {
                    layer,
                    reason: format!(
                        "n_head = {} does not divide the input width {d_input}; \
                         pick n_head that divides it or set head_size",
                        self.n_head
                    ),
                })
            }
        };
        check_positive(layer, "head_size", head_size)?;
        let dropout = self.dropout.unwrap_or(ctx.dropout);
        check_dropout(layer, dropout)?;
        Ok(
            MultiHeadAttentionConfig::new(d_input, self.n_head, head_size, ctx.init)
                .with_projection(self.projection)
                .with_dropout(dropout)
                .with_qkv_bias(self.qkv_bias)
                .with_projection_init(Some(ctx.residual_init)),
        )
    }
}

#[derive(Config, Debug)]
pub struct MultiHeadAttentionConfig {
    pub d_input: usize,
    pub n_head: usize,
    pub head_size: usize,
    pub init: WeightInit,
    #[config(default = false)]
    pub projection: bool,
    #[config(default = 0.0)]
    pub dropout: f64,
    #[config(default = false)]
    pub qkv_bias: bool,
    /// The projection's init, when it differs from `init` (GPT-2 scales residual projections).
    #[config(default = "None")]
    pub projection_init: Option<WeightInit>,
}

impl MultiHeadAttentionConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> MultiHeadAttention<B> {
        let width = self.n_head * self.head_size;
        let projection_init = self.projection_init.unwrap_or(self.init);
        MultiHeadAttention {
            qkv: self
                .init
                .linear(self.d_input, 3 * width, self.qkv_bias, device),
            projection: self
                .projection
                .then(|| projection_init.linear(width, self.d_input, true, device)),
            dropout: DropoutConfig::new(self.dropout).init(),
            n_head: self.n_head,
        }
    }

    pub fn d_output(&self) -> usize {
        if self.projection {
            self.d_input
        } else {
            self.n_head * self.head_size
        }
    }

    pub fn num_params(&self) -> u64 {
        let width = self.n_head * self.head_size;
        let projection = if self.projection {
            linear_params(width, self.d_input, true)
        } else {
            0
        };
        linear_params(self.d_input, 3 * width, self.qkv_bias).saturating_add(projection)
    }

    /// Values a training step keeps for the backward pass (see [`crate::footprint`]).
    pub fn activations(&self, step: &StepShape) -> f64 {
        let projection_to = self.projection.then_some(self.d_input);
        attention_activations(
            step,
            self.n_head,
            self.head_size,
            projection_to,
            self.dropout,
        )
    }
}

/// The tutorial's list of `Head`s computed as one batched attention. `qkv` holds the query, key
/// and value projections side by side (`[d_input, 3 * n_head * head_size]`, a bias only when
/// configured, as GPT-2's `c_attn`); within each, head `h` owns columns
/// `h*head_size..(h+1)*head_size`.
#[derive(Module, Debug)]
pub struct MultiHeadAttention<B: Backend> {
    pub qkv: Linear<B>,
    pub projection: Option<Linear<B>>,
    pub dropout: Dropout,
    pub n_head: usize,
}

impl<B: Backend> MultiHeadAttention<B> {
    /// `[batch, time, d_input]` -> `[batch, time, d_output]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.attend(x, None)
    }

    /// [`MultiHeadAttention::forward`] for the newest positions only, keys and values of earlier
    /// ones cached.
    pub fn forward_cached(&self, x: Tensor<B, 3>, cache: &mut Option<KvCache<B>>) -> Tensor<B, 3> {
        self.attend(x, Some(cache))
    }

    fn attend(&self, x: Tensor<B, 3>, cache: Option<&mut Option<KvCache<B>>>) -> Tensor<B, 3> {
        let out = fused_causal_attention(
            per_position(&self.qkv, x),
            Heads::multi(self.n_head),
            &self.dropout,
            cache,
        );
        match &self.projection {
            Some(projection) => dropout(&self.dropout, per_position(projection, out)),
            None => out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::HeadConfig;
    use burn::tensor::Tensor;

    #[test]
    fn output_shape_and_causality() {
        let device = Default::default();
        let mha = MultiHeadAttentionConfig::new(32, 4, 8, WeightInit::PyTorch)
            .with_projection(true)
            .init::<TestBackend>(&device);
        let x = random_input::<TestBackend>([3, 8, 32]);
        assert_eq!(mha.forward(x.clone()).dims(), [3, 8, 32]);
        for t in [0, 5, 7] {
            assert_causal(|x| mha.forward(x), x.clone(), t);
        }
        assert_eq!(mha.num_params(), 3 * 32 * 32 + 32 * 32 + 32);
    }

    #[test]
    fn equals_concatenated_single_heads() {
        let device = Default::default();
        let (c, heads, hs) = (16, 2, 8);
        let mha = MultiHeadAttentionConfig::new(c, heads, hs, WeightInit::PyTorch)
            .init::<TestBackend>(&device);
        let x = random_input::<TestBackend>([2, 6, c]);
        let width = heads * hs;
        let outputs: Vec<Tensor<TestBackend, 3>> = (0..heads)
            .map(|h| {
                let mut head =
                    HeadConfig::new(c, hs, WeightInit::PyTorch).init::<TestBackend>(&device);
                // Head h's query, key and value columns, side by side.
                let w = mha.qkv.weight.val();
                let part = |i: usize| {
                    w.clone()
                        .slice([0..c, i * width + h * hs..i * width + (h + 1) * hs])
                };
                let fused = Tensor::cat(vec![part(0), part(1), part(2)], 1);
                head.qkv.weight = head.qkv.weight.map(|_| fused);
                head.forward(x.clone())
            })
            .collect();
        Tensor::cat(outputs, 2)
            .into_data()
            .assert_approx_eq::<f32>(&mha.forward(x).into_data(), Default::default());
    }

    #[test]
    fn n_head_must_divide_width() {
        let spec = MultiHeadAttentionSpec {
            n_head: 5,
            ..Default::default()
        };
        let err = spec.resolve(&LayerContext::for_tests(32), 32).unwrap_err();
        assert!(err.to_string().contains("n_head = 5"), "{err}");
    }
}
