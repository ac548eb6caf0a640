//! Rotary position embeddings (RoPE) in Hugging Face's convention: each query and key head is
//! split into two halves, and position `p` rotates `(x₁[i], x₂[i])` by `p · θᵢ`, with
//! `θᵢ = theta^(-2i / head_size)` (`rotate_half` in `modeling_llama.py`).
//!
//! Meta's original code, and Burn's `RotaryEncoding`, rotate interleaved pairs `(x[2i], x[2i+1])`
//! instead; Hugging Face's conversion permuted the query and key rows to suit the halves. Applied
//! to Hugging Face weights, the interleaved convention still produces fluent-looking text, so
//! only a parity test against `transformers` tells them apart.

use burn::tensor::{backend::Backend, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tinygpt_kernels::RopeTable;

/// What a config writes: `rope: (theta: 10000.0)`, and for longer contexts a `scaling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RopeSpec {
    /// The base of the frequencies (`rope_theta`): 10,000 in Llama 2 and TinyLlama, 100,000 in
    /// SmolLM2, 1,000,000 in Qwen2.5.
    pub theta: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling: Option<RopeScaling>,
}

impl Default for RopeSpec {
    fn default() -> Self {
        Self {
            theta: 10_000.0,
            scaling: None,
        }
    }
}

/// `rope_scaling`, the two kinds Hugging Face's Llama reads without changing the attention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum RopeScaling {
    /// Positions divided by `factor` (`"rope_type": "linear"`).
    Linear { factor: f64 },
    /// Llama 3.1's: low frequencies divided by `factor`, high ones kept, a smooth blend between
    /// (`"rope_type": "llama3"`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

impl RopeSpec {
    /// Checks the settings for heads of `head_size` values.
    pub fn check(&self, head_size: usize) -> Result<(), String> {
        if !head_size.is_multiple_of(2) {
            return Err(format!(
                "rotary embeddings need an even head size, got {head_size}"
            ));
        }
        if !(self.theta > 1.0 && self.theta.is_finite()) {
            return Err(format!("rope theta must be above 1, got {}", self.theta));
        }
        match &self.scaling {
            None => Ok(()),
            Some(RopeScaling::Linear { factor }) if *factor >= 1.0 => Ok(()),
            Some(RopeScaling::Linear { factor }) => Err(format!(
                "rope scaling factor must be at least 1, got {factor}"
            )),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                if *factor >= 1.0
                    && *low_freq_factor > 0.0
                    && high_freq_factor > low_freq_factor
                    && *original_max_position_embeddings > 0
                {
                    Ok(())
                } else {
                    Err(
                        "llama3 rope scaling needs factor >= 1, 0 < low_freq_factor < \
                         high_freq_factor and original_max_position_embeddings > 0"
                            .into(),
                    )
                }
            }
        }
    }

    /// `θᵢ` for `i < head_size / 2`, scaled, in f32 as Hugging Face computes them
    /// (`_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
    /// `_compute_llama3_parameters`).
    pub fn frequencies(&self, head_size: usize) -> Vec<f32> {
        let theta = self.theta as f32;
        let base: Vec<f32> = (0..head_size / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_size as f32))
            .collect();
        match &self.scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => {
                base.iter().map(|f| f / *factor as f32).collect()
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let (factor, low, high) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                );
                let old_context = *original_max_position_embeddings as f32;
                let (low_wavelength, high_wavelength) = (old_context / low, old_context / high);
                base.iter()
                    .map(|&f| {
                        let wavelength = 2.0 * std::f32::consts::PI / f;
                        if wavelength < high_wavelength {
                            f
                        } else if wavelength > low_wavelength {
                            f / factor
                        } else {
                            let smooth = (old_context / wavelength - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// The cosines and sines of positions `0..positions`.
    pub fn table(&self, head_size: usize, positions: usize) -> Arc<RopeTable> {
        Arc::new(RopeTable::new(&self.frequencies(head_size), positions))
    }
}

/// `qkv` (`[batch, time, (heads + 2 * kv_heads) * head_size]`) with its query and key heads
/// rotated for positions `start..start + time`: one kernel on flex and ndarray (forward and
/// backward), tensor ops elsewhere ([`plain_rope`]).
pub fn rope<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: crate::attention::Heads,
    table: &Arc<RopeTable>,
    start: usize,
) -> Tensor<B, 3> {
    tinygpt_kernels::rope(qkv, heads.heads, heads.kv_heads, table, start)
        .unwrap_or_else(|qkv| plain_rope(qkv, heads, table, start))
}

/// [`rope`] as tensor ops, on every backend: `x · cos + rotate_half(x) · sin` on the query and
/// key columns, as `apply_rotary_pos_emb` in `modeling_llama.py`.
pub fn plain_rope<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: crate::attention::Heads,
    table: &RopeTable,
    start: usize,
) -> Tensor<B, 3> {
    let [batch, time, width] = qkv.dims();
    let head_size = width / heads.columns();
    let half = head_size / 2;
    let rotated = (heads.heads + heads.kv_heads) * head_size;
    let device = qkv.device();
    let angles = |values: &[f32]| {
        let rows = &values[start * half..(start + time) * half];
        Tensor::<B, 2>::from_data(TensorData::new(rows.to_vec(), [time, half]), &device)
            .reshape([1, time, 1, half])
    };
    let (cos, sin) = (angles(&table.cos), angles(&table.sin));
    let heads_of =
        |t: Tensor<B, 3>| t.reshape([batch, time, heads.heads + heads.kv_heads, head_size]);
    let qk = heads_of(qkv.clone().slice([0..batch, 0..time, 0..rotated]));
    let x1 = qk
        .clone()
        .slice([0..batch, 0..time, 0..heads.heads + heads.kv_heads, 0..half]);
    let x2 = qk.slice([
        0..batch,
        0..time,
        0..heads.heads + heads.kv_heads,
        half..head_size,
    ]);
    let out1 = x1.clone() * cos.clone() - x2.clone() * sin.clone();
    let out2 = x2 * cos + x1 * sin;
    let qk = Tensor::cat(vec![out1, out2], 3).reshape([batch, time, rotated]);
    let values = qkv.slice([0..batch, 0..time, rotated..width]);
    Tensor::cat(vec![qk, values], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_follow_hugging_face() {
        let plain = RopeSpec::default().frequencies(8);
        let want = [1.0, 0.1, 0.01, 0.001];
        for (got, want) in plain.iter().zip(want) {
            assert!((got - want).abs() < 1e-7 * want.max(1.0), "{got} vs {want}");
        }
        let linear = RopeSpec {
            scaling: Some(RopeScaling::Linear { factor: 4.0 }),
            ..RopeSpec::default()
        };
        assert_eq!(linear.frequencies(8)[1], plain[1] / 4.0);
        // Llama 3.1's: wavelengths under 8192 / 4 kept, over 8192 / 1 divided by 8.
        let llama3 = RopeSpec {
            theta: 500_000.0,
            scaling: Some(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            }),
        };
        let (base, scaled) = (
            RopeSpec {
                theta: 500_000.0,
                scaling: None,
            }
            .frequencies(128),
            llama3.frequencies(128),
        );
        let wavelength = |f: f32| 2.0 * std::f32::consts::PI / f;
        assert_eq!(scaled[0], base[0], "highest frequency kept");
        assert_eq!(scaled[63], base[63] / 8.0, "lowest frequency divided");
        let medium = (0..64)
            .find(|&i| wavelength(base[i]) > 2048.0 && wavelength(base[i]) < 8192.0)
            .expect("a medium band");
        assert!(scaled[medium] < base[medium] && scaled[medium] > base[medium] / 8.0);
        assert!(RopeSpec::default().check(7).is_err());
        assert!(RopeSpec {
            scaling: Some(RopeScaling::Linear { factor: 0.5 }),
            ..RopeSpec::default()
        }
        .check(8)
        .is_err());
    }
}
