//! Layer normalisation of rows, and its gradient, on plain slices: one pass for each row's
//! statistics and output, one for the gradient, where the tensor-op formulation is ten
//! operations each way, each allocating a tensor the size of the input. The same kernel without
//! the centring is RMSNorm (Llama's): `x / sqrt(mean(x²) + ε) · γ`.

/// Which normalisation: LayerNorm (centre, then scale to unit variance) or RMSNorm (scale to unit
/// root mean square, no centring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    Layer,
    Rms,
}

use crate::simd;

/// What the backward pass needs from the forward one.
pub struct Normalized {
    /// `y = x̂ · γ + β`.
    pub out: Vec<f32>,
    /// `x̂ = (x − mean) / sqrt(var + ε)`, row by row.
    pub normalized: Vec<f32>,
    /// `1 / sqrt(var + ε)` of each row.
    pub inverse_std: Vec<f32>,
}

/// Normalises each `dim`-long row of `x` (biased variance, as PyTorch and Burn; or its root mean
/// square for [`Norm::Rms`]), then scales by `gamma` and shifts by `beta`.
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    dim: usize,
    epsilon: f64,
    norm: Norm,
) -> Normalized {
    let rows = x.len() / dim;
    let mut result = Normalized {
        out: vec![0.0f32; x.len()],
        normalized: vec![0.0f32; x.len()],
        inverse_std: vec![0.0f32; rows],
    };
    forward_rows(
        x,
        gamma,
        beta,
        dim,
        epsilon as f32,
        norm == Norm::Layer,
        &mut result,
    );
    result
}

crate::dispatched! {
    /// [`forward`]'s rows. The sums are the 16-lane ones of [`crate::simd`], so they vectorise
    /// (a sequential `sum()` does not: the reductions were most of this kernel's time).
    fn forward_rows(
        x: &[f32],
        gamma: &[f32],
        beta: Option<&[f32]>,
        dim: usize,
        epsilon: f32,
        center: bool,
        result: &mut Normalized
    ) -> () {
        let n = dim as f32;
        for (((row, y), xhat), inv) in x
            .chunks(dim)
            .zip(result.out.chunks_mut(dim))
            .zip(result.normalized.chunks_mut(dim))
            .zip(result.inverse_std.iter_mut())
        {
            let mean = if center { simd::row_sum(row) / n } else { 0.0 };
            for (h, &v) in xhat.iter_mut().zip(row) {
                *h = v - mean;
            }
            let variance = simd::row_dot(xhat, xhat) / n;
            *inv = 1.0 / (variance + epsilon).sqrt();
            for h in xhat.iter_mut() {
                *h *= *inv;
            }
            match beta {
                Some(beta) => {
                    for (((y, &h), &g), &b) in y.iter_mut().zip(xhat.iter()).zip(gamma).zip(beta) {
                        *y = h * g + b;
                    }
                }
                None => {
                    for ((y, &h), &g) in y.iter_mut().zip(xhat.iter()).zip(gamma) {
                        *y = h * g;
                    }
                }
            }
        }
    }
}

/// `(d x, d gamma, d beta)` from the output's gradient `grad_out`:
/// `dx = (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)) / std` with `dx̂ = dy · γ`, `dγ = Σ dy · x̂`,
/// `dβ = Σ dy` over the rows; for [`Norm::Rms`] without the `mean(dx̂)` term.
pub fn backward(
    normalized: &[f32],
    inverse_std: &[f32],
    gamma: &[f32],
    grad_out: &[f32],
    dim: usize,
    norm: Norm,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut grads = (
        vec![0.0f32; normalized.len()],
        vec![0.0f32; dim],
        vec![0.0f32; dim],
    );
    let center = norm == Norm::Layer;
    backward_rows(
        normalized,
        inverse_std,
        gamma,
        grad_out,
        dim,
        center,
        &mut grads,
    );
    grads
}

crate::dispatched! {
    /// [`backward`]'s rows, with the sums of [`forward_rows`].
    fn backward_rows(
        normalized: &[f32],
        inverse_std: &[f32],
        gamma: &[f32],
        grad_out: &[f32],
        dim: usize,
        center: bool,
        grads: &mut (Vec<f32>, Vec<f32>, Vec<f32>)
    ) -> () {
        let n = dim as f32;
        let (grad_x, grad_gamma, grad_beta) = grads;
        let mut grad_xhat = vec![0.0f32; dim];
        for (((xhat, dy), dx), &inv) in normalized
            .chunks(dim)
            .zip(grad_out.chunks(dim))
            .zip(grad_x.chunks_mut(dim))
            .zip(inverse_std)
        {
            for (((g, gg), gb), ((&h, &d), &gamma)) in grad_xhat
                .iter_mut()
                .zip(grad_gamma.iter_mut())
                .zip(grad_beta.iter_mut())
                .zip(xhat.iter().zip(dy).zip(gamma))
            {
                *gg += d * h;
                *gb += d;
                *g = d * gamma;
            }
            let mean_g = if center { simd::row_sum(&grad_xhat) / n } else { 0.0 };
            let mean_gh = simd::row_dot(&grad_xhat, xhat) / n;
            for ((dx, &g), &h) in dx.iter_mut().zip(&grad_xhat).zip(xhat) {
                *dx = (g - mean_g - h * mean_gh) * inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{at_every_simd_level, SimdLevel};

    /// Layer norm and its gradients in f64, straight from the definitions.
    #[allow(clippy::type_complexity)]
    fn reference(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        dy: &[f32],
        dim: usize,
        norm: Norm,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let center = if norm == Norm::Layer { 1.0 } else { 0.0 };
        let (mut out, mut dx) = (Vec::new(), Vec::new());
        let (mut dgamma, mut dbeta) = (vec![0.0; dim], vec![0.0; dim]);
        for (row, dy) in x.chunks(dim).zip(dy.chunks(dim)) {
            let n = dim as f64;
            let mean = center * row.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + 1e-5).sqrt();
            let xhat: Vec<f64> = row.iter().map(|&v| (v as f64 - mean) * inv).collect();
            let g: Vec<f64> = (0..dim).map(|j| dy[j] as f64 * gamma[j] as f64).collect();
            let mean_g = center * g.iter().sum::<f64>() / n;
            let mean_gh = g.iter().zip(&xhat).map(|(g, h)| g * h).sum::<f64>() / n;
            for j in 0..dim {
                out.push(xhat[j] * gamma[j] as f64 + beta[j] as f64);
                dx.push((g[j] - mean_g - xhat[j] * mean_gh) * inv);
                dgamma[j] += dy[j] as f64 * xhat[j];
                dbeta[j] += dy[j] as f64;
            }
        }
        (out, dx, dgamma, dbeta)
    }

    fn close(got: &[f32], want: &[f64], tolerance: f64, what: &str) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < tolerance, "{what}: {g} vs {w}");
        }
    }

    #[test]
    fn matches_the_definition_with_the_same_bits_at_every_level() {
        // Widths below, at and above the 16 lanes, with a remainder.
        for (dim, norm) in [5, 16, 37, 128]
            .into_iter()
            .flat_map(|dim| [(dim, Norm::Layer), (dim, Norm::Rms)])
        {
            let rows = 6;
            let value = |i: usize, k: f32| ((i as f32 * k).sin() * 3.0) + 0.5;
            let x: Vec<f32> = (0..rows * dim).map(|i| value(i, 0.37)).collect();
            let dy: Vec<f32> = (0..rows * dim).map(|i| value(i, 0.11)).collect();
            let gamma: Vec<f32> = (0..dim).map(|i| 1.0 + value(i, 0.7) * 0.1).collect();
            let beta: Vec<f32> = (0..dim).map(|i| value(i, 0.3) * 0.1).collect();
            let (out, dx, dgamma, dbeta) = reference(&x, &gamma, &beta, &dy, dim, norm);
            let mut runs = Vec::new();
            at_every_simd_level(|level| {
                let f = forward(&x, &gamma, Some(&beta), dim, 1e-5, norm);
                let (gx, gg, gb) = backward(&f.normalized, &f.inverse_std, &gamma, &dy, dim, norm);
                close(&f.out, &out, 1e-5, "output");
                close(&gx, &dx, 1e-4, "input gradient");
                close(&gg, &dgamma, 1e-4, "gamma gradient");
                close(&gb, &dbeta, 1e-4, "beta gradient");
                runs.push((level, [f.out, gx, gg, gb]));
            });
            assert_eq!(runs[0].0, SimdLevel::Baseline);
            for (level, run) in &runs[1..] {
                assert!(*run == runs[0].1, "{level:?} differs from the baseline");
            }
        }
    }
}
