//! `Attention`: causal self-attention as today's small open models have it (Llama, Qwen2,
//! SmolLM2): grouped-query heads (`n_kv_head` key and value heads shared by `n_head` query
//! heads), rotary position embeddings, an optional bias on the query/key/value projection
//! (Qwen2), an optional RMSNorm of each query and key head (QK-norm), and an output projection.

use crate::attention::{fused_causal_attention, Heads, KvCache};
use crate::context::{check_dropout, check_positive, LayerContext, LayerError};
use crate::footprint::{attention_activations, linear_params, StepShape};
use crate::linear::per_position;
use crate::rms_norm::check_epsilon;
use crate::rope::{rope, RopeSpec};
use crate::WeightInit;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tinygpt_kernels::{dropout, RopeTable};

/// What a config writes: `Attention(n_head: 9, n_kv_head: 3, rope: (theta: 100000.0))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttentionSpec {
    /// Query heads (`num_attention_heads`).
    pub n_head: usize,
    /// Key and value heads (`num_key_value_heads`), dividing `n_head`; `n_head` by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_kv_head: Option<usize>,
    /// Values per head (`head_dim`); `d_input / n_head` by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_size: Option<usize>,
    /// Rotary position embeddings; `None` leaves positions to a learned table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope: Option<RopeSpec>,
    /// A bias on the query, key and value projections (Qwen2 has one; Llama does not).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qkv_bias: bool,
    /// A bias on the output projection.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub projection_bias: bool,
    /// RMSNorm (with a learned weight) of every query and key head before the rotation.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qk_norm: bool,
    /// The QK-norm's epsilon.
    pub epsilon: f64,
    /// Dropout on the attention weights and after the projection; defaults to the model's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
}

impl Default for AttentionSpec {
    fn default() -> Self {
        Self {
            n_head: 1,
            n_kv_head: None,
            head_size: None,
            rope: Some(RopeSpec::default()),
            qkv_bias: false,
            projection_bias: false,
            qk_norm: false,
            epsilon: 1e-5,
            dropout: None,
        }
    }
}

impl AttentionSpec {
    pub fn resolve(
        &self,
        ctx: &LayerContext,
        d_input: usize,
    ) -> Result<AttentionConfig, LayerError> {
        let layer = "Attention";
        let invalid = |reason: String| LayerError::Invalid { layer, reason };
        check_positive(layer, "n_head", self.n_head)?;
        let n_kv_head = self.n_kv_head.unwrap_or(self.n_head);
        check_positive(layer, "n_kv_head", n_kv_head)?;
        if !self.n_head.is_multiple_of(n_kv_head) {
            return Err(invalid(format!(
                "n_head = {} is not a multiple of n_kv_head = {n_kv_head}: each key/value head \
                 serves the same number of query heads",
                self.n_head
            )));
        }
        let head_size = match self.head_size {
            Some(size) => size,
            None if d_input.is_multiple_of(self.n_head) => d_input / self.n_head,
            None => {
                return Err(invalid(format!(
                    "n_head = {} does not divide the input width {d_input}; pick n_head that \
                     divides it or set head_size",
                    self.n_head
                )))
            }
        };
        check_positive(layer, "head_size", head_size)?;
        if let Some(rope) = &self.rope {
            rope.check(head_size).map_err(invalid)?;
        }
        check_epsilon(layer, self.epsilon)?;
        let dropout = self.dropout.unwrap_or(ctx.dropout);
        check_dropout(layer, dropout)?;
        Ok(AttentionConfig {
            d_input,
            n_head: self.n_head,
            n_kv_head,
            head_size,
            rope: self.rope.clone(),
            positions: ctx.block_size,
            qkv_bias: self.qkv_bias,
            projection_bias: self.projection_bias,
            qk_norm: self.qk_norm,
            epsilon: self.epsilon,
            dropout,
            init: ctx.init,
            projection_init: ctx.residual_init,
        })
    }
}

#[derive(Config, Debug)]
pub struct AttentionConfig {
    pub d_input: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_size: usize,
    pub rope: Option<RopeSpec>,
    /// The longest context, the positions the rotation table covers.
    pub positions: usize,
    pub qkv_bias: bool,
    pub projection_bias: bool,
    pub qk_norm: bool,
    pub epsilon: f64,
    pub dropout: f64,
    pub init: WeightInit,
    pub projection_init: WeightInit,
}

impl AttentionConfig {
    fn heads(&self) -> Heads {
        Heads {
            heads: self.n_head,
            kv_heads: self.n_kv_head,
        }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let qkv_width = self.heads().columns() * self.head_size;
        let head_norm = || Param::from_tensor(Tensor::ones([self.head_size], device));
        Attention {
            qkv: self
                .init
                .linear(self.d_input, qkv_width, self.qkv_bias, device),
            projection: self.projection_init.linear(
                self.n_head * self.head_size,
                self.d_input,
                self.projection_bias,
                device,
            ),
            q_norm: self.qk_norm.then(head_norm),
            k_norm: self.qk_norm.then(head_norm),
            dropout: DropoutConfig::new(self.dropout).init(),
            n_head: self.n_head,
            n_kv_head: self.n_kv_head,
            epsilon: self.epsilon,
            rope: self
                .rope
                .as_ref()
                .map(|rope| Rotation(rope.table(self.head_size, self.positions))),
        }
    }

    pub fn d_output(&self) -> usize {
        self.d_input
    }

    pub fn num_params(&self) -> u64 {
        let qkv_width = self.heads().columns() * self.head_size;
        let norms = if self.qk_norm {
            2 * self.head_size as u64
        } else {
            0
        };
        linear_params(self.d_input, qkv_width, self.qkv_bias)
            .saturating_add(linear_params(
                self.n_head * self.head_size,
                self.d_input,
                self.projection_bias,
            ))
            .saturating_add(norms)
    }

    /// Values a training step keeps for the backward pass (see [`crate::footprint`]), the
    /// rotated projection included.
    pub fn activations(&self, step: &StepShape) -> f64 {
        let rotated = if self.rope.is_some() {
            step.tokens() * (self.heads().columns() * self.head_size) as f64
        } else {
            0.0
        };
        attention_activations(
            step,
            self.n_head,
            self.head_size,
            Some(self.d_input),
            self.dropout,
        ) + rotated
    }
}

/// The rotation table, computed once when the layer is built: not a parameter, not saved.
#[derive(Debug, Clone)]
pub struct Rotation(pub Arc<RopeTable>);

/// Grouped-query causal self-attention. `qkv` holds the query, key and value projections side by
/// side (`[d_input, (n_head + 2 * n_kv_head) * head_size]`: all queries, then the keys, then the
/// values, head by head within each: Hugging Face's `q_proj`, `k_proj`, `v_proj` one after the
/// other, transposed).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub qkv: Linear<B>,
    pub projection: Linear<B>,
    pub q_norm: Option<Param<Tensor<B, 1>>>,
    pub k_norm: Option<Param<Tensor<B, 1>>>,
    pub dropout: Dropout,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub epsilon: f64,
    #[module(skip)]
    pub rope: Option<Rotation>,
}

impl<B: Backend> Attention<B> {
    /// `[batch, time, d_input]` -> `[batch, time, d_input]`, positions from 0.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.attend(x, None)
    }

    /// [`Attention::forward`] for the newest positions only, keys and values of earlier ones
    /// cached (the rotation continues from the cached positions).
    pub fn forward_cached(&self, x: Tensor<B, 3>, cache: &mut Option<KvCache<B>>) -> Tensor<B, 3> {
        self.attend(x, Some(cache))
    }

    fn heads(&self) -> Heads {
        Heads {
            heads: self.n_head,
            kv_heads: self.n_kv_head,
        }
    }

    fn attend(&self, x: Tensor<B, 3>, cache: Option<&mut Option<KvCache<B>>>) -> Tensor<B, 3> {
        let heads = self.heads();
        let mut qkv = per_position(&self.qkv, x);
        if let (Some(q_norm), Some(k_norm)) = (&self.q_norm, &self.k_norm) {
            qkv = self.normalize_heads(qkv, q_norm.val(), k_norm.val());
        }
        if let Some(Rotation(table)) = &self.rope {
            let start = cache
                .as_ref()
                .and_then(|c| c.as_ref())
                .map_or(0, KvCache::len);
            qkv = rope(qkv, heads, table, start);
        }
        let out = fused_causal_attention(qkv, heads, &self.dropout, cache);
        dropout(&self.dropout, per_position(&self.projection, out))
    }

    /// RMSNorm of every query head (weight `q_norm`) and key head (`k_norm`).
    fn normalize_heads(
        &self,
        qkv: Tensor<B, 3>,
        q_norm: Tensor<B, 1>,
        k_norm: Tensor<B, 1>,
    ) -> Tensor<B, 3> {
        let [batch, time, width] = qkv.dims();
        let head_size = width / self.heads().columns();
        let (queries, keys) = (self.n_head * head_size, self.n_kv_head * head_size);
        let part = |from: usize, to: usize| qkv.clone().slice([0..batch, 0..time, from..to]);
        let norm = |x: Tensor<B, 3>, heads: usize, weight: Tensor<B, 1>| {
            let rows = x.reshape([batch, time * heads, head_size]);
            tinygpt_kernels::rms_norm((rows, weight, None), self.epsilon)
                .unwrap_or_else(|(x, w, _)| crate::exact::rms_norm(x, w, self.epsilon))
                .reshape([batch, time, heads * head_size])
        };
        Tensor::cat(
            vec![
                norm(part(0, queries), self.n_head, q_norm),
                norm(part(queries, queries + keys), self.n_kv_head, k_norm),
                part(queries + keys, width),
            ],
            2,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn attention(n_head: usize, n_kv_head: usize, qk_norm: bool) -> Attention<TestBackend> {
        AttentionSpec {
            n_head,
            n_kv_head: Some(n_kv_head),
            qkv_bias: true,
            qk_norm,
            ..Default::default()
        }
        .resolve(&LayerContext::for_tests(32), 32)
        .unwrap()
        .init(&Default::default())
    }

    #[test]
    fn shape_params_and_causality() {
        for (n_head, n_kv_head, qk_norm) in [(4, 4, false), (4, 2, false), (8, 1, true)] {
            let layer = attention(n_head, n_kv_head, qk_norm);
            let head_size = 32 / n_head;
            let qkv =
                32 * (n_head + 2 * n_kv_head) * head_size + (n_head + 2 * n_kv_head) * head_size;
            let norms = if qk_norm { 2 * head_size } else { 0 };
            assert_eq!(layer.num_params(), qkv + 32 * 32 + norms);
            let x = random_input::<TestBackend>([2, 8, 32]);
            assert_eq!(layer.forward(x.clone()).dims(), [2, 8, 32]);
            for t in [0, 4, 7] {
                assert_causal(|x| layer.forward(x), x.clone(), t);
            }
        }
    }

    #[test]
    fn cached_positions_continue_the_rotation() {
        let layer = attention(4, 2, true);
        let x = random_input::<TestBackend>([1, 6, 32]);
        let full = layer.forward(x.clone());
        let mut cache = None;
        let first = layer.forward_cached(x.clone().slice([0..1, 0..4, 0..32]), &mut cache);
        let rest = layer.forward_cached(x.slice([0..1, 4..6, 0..32]), &mut cache);
        assert_eq!(cache.as_ref().map(|c| c.keys.dims()), Some([1, 2, 6, 8]));
        Tensor::cat(vec![first, rest], 1)
            .into_data()
            .assert_approx_eq::<f32>(&full.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    }

    #[test]
    fn bad_head_counts_are_errors() {
        let ctx = LayerContext::for_tests(32);
        let err = AttentionSpec {
            n_head: 4,
            n_kv_head: Some(3),
            ..Default::default()
        }
        .resolve(&ctx, 32)
        .unwrap_err()
        .to_string();
        assert!(err.contains("n_kv_head = 3"), "{err}");
        let odd = AttentionSpec {
            n_head: 1,
            head_size: Some(7),
            ..Default::default()
        };
        assert!(odd
            .resolve(&ctx, 32)
            .unwrap_err()
            .to_string()
            .contains("even"));
    }
}
