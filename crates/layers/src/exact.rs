//! Reciprocal, softmax, log and layer norm whose gradients are correctly rounded on every backend.
//!
//! Burn 0.21's autodiff takes the gradient of `a / b` (for `a`) and of `ln(x)` by multiplying
//! with `float_recip(b)`, and burn-ndarray computes `float_recip` with the CPU's reciprocal
//! *estimate* once a tensor has 32 or more elements: `vrcpps` on AVX2 (12 bits, relative error up
//! to 1.5·2⁻¹² ≈ 3.7e-4) and `vrcp14ps` on AVX-512 (2⁻¹⁴ ≈ 6.1e-5). Division itself is exact. Every
//! softmax, log-softmax and layer norm gradient on ndarray was therefore off by up to that much,
//! and which CPU ran decided by how much (fixed upstream after 0.21, tracel-ai/burn#5553).
//!
//! Here `1 / b` is a division of a constant that needs no gradient: forward it is one correctly
//! rounded division, backward Burn differentiates it as `-1 / b²`, again a division. Nothing
//! reaches `float_recip`, so the same gradients come out on every backend and every CPU.

use burn::tensor::{backend::Backend, Tensor};

/// `1 / x`, correctly rounded forward and backward (unlike `Tensor::recip` on ndarray).
pub fn reciprocal<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.ones_like() / x
}

/// Softmax along `dim`: `e^(x - max) * (1 / sum)`, the max shift detached as in Burn's.
pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().detach().max_dim(dim);
    let exp = (x - max).exp();
    let sum = exp.clone().sum_dim(dim);
    exp * reciprocal(sum)
}

/// Natural log whose gradient is `reciprocal(x)`. The value is Burn's `ln(x)`: the second term is
/// exactly zero forward and carries only the gradient.
pub fn ln<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let constant = x.clone().detach();
    let slope = reciprocal(constant.clone());
    constant.clone().log() + (x - constant) * slope
}

/// Layer normalisation over the last dimension, `(x - mean) / sqrt(var + epsilon) * gamma +
/// beta`, as Burn's default `layer_norm` but with the division through [`reciprocal`].
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Option<Tensor<B, 1>>,
    epsilon: f64,
) -> Tensor<B, D> {
    let last = D - 1;
    let centered = x.clone() - x.mean_dim(last);
    let variance = (centered.clone() * centered.clone()).mean_dim(last);
    let normalized = centered * reciprocal((variance + epsilon).sqrt());
    let scaled = normalized * gamma.unsqueeze::<D>();
    match beta {
        Some(beta) => scaled + beta.unsqueeze::<D>(),
        None => scaled,
    }
}

/// RMSNorm over the last dimension, `x / sqrt(mean(x²) + epsilon) * weight` (Llama's), with the
/// division through [`reciprocal`].
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    let last = D - 1;
    let mean_square = (x.clone() * x.clone()).mean_dim(last);
    x * reciprocal((mean_square + epsilon).sqrt()) * weight.unsqueeze::<D>()
}
