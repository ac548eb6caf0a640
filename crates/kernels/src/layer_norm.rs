//! Layer normalisation of rows, and its gradient, on plain slices: one pass for each row's
//! statistics and output, one for the gradient, where the tensor-op formulation is ten
//! operations each way, each allocating a tensor the size of the input.

/// What the backward pass needs from the forward one.
pub struct Normalized {
    /// `y = x̂ · γ + β`.
    pub out: Vec<f32>,
    /// `x̂ = (x − mean) / sqrt(var + ε)`, row by row.
    pub normalized: Vec<f32>,
    /// `1 / sqrt(var + ε)` of each row.
    pub inverse_std: Vec<f32>,
}

/// Normalises each `dim`-long row of `x` (biased variance, as PyTorch and Burn), then scales by
/// `gamma` and shifts by `beta`.
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    dim: usize,
    epsilon: f64,
) -> Normalized {
    let rows = x.len() / dim;
    let mut out = vec![0.0f32; x.len()];
    let mut normalized = vec![0.0f32; x.len()];
    let mut inverse_std = vec![0.0f32; rows];
    let n = dim as f32;
    for (((row, y), xhat), inv) in x
        .chunks(dim)
        .zip(out.chunks_mut(dim))
        .zip(normalized.chunks_mut(dim))
        .zip(inverse_std.iter_mut())
    {
        let mean = row.iter().sum::<f32>() / n;
        let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        *inv = 1.0 / (variance + epsilon as f32).sqrt();
        for (h, &v) in xhat.iter_mut().zip(row) {
            *h = (v - mean) * *inv;
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
    Normalized {
        out,
        normalized,
        inverse_std,
    }
}

/// `(d x, d gamma, d beta)` from the output's gradient `grad_out`:
/// `dx = (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)) / std` with `dx̂ = dy · γ`, `dγ = Σ dy · x̂`,
/// `dβ = Σ dy` over the rows.
pub fn backward(
    normalized: &[f32],
    inverse_std: &[f32],
    gamma: &[f32],
    grad_out: &[f32],
    dim: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = dim as f32;
    let mut grad_x = vec![0.0f32; normalized.len()];
    let mut grad_gamma = vec![0.0f32; dim];
    let mut grad_beta = vec![0.0f32; dim];
    let mut grad_xhat = vec![0.0f32; dim];
    for (((xhat, dy), dx), &inv) in normalized
        .chunks(dim)
        .zip(grad_out.chunks(dim))
        .zip(grad_x.chunks_mut(dim))
        .zip(inverse_std)
    {
        for (((g, gg), gb), (&h, &d)) in grad_xhat
            .iter_mut()
            .zip(grad_gamma.iter_mut())
            .zip(grad_beta.iter_mut())
            .zip(xhat.iter().zip(dy))
        {
            *gg += d * h;
            *gb += d;
            *g = d;
        }
        for (g, &gamma) in grad_xhat.iter_mut().zip(gamma) {
            *g *= gamma;
        }
        let mean_g = grad_xhat.iter().sum::<f32>() / n;
        let mean_gh = grad_xhat.iter().zip(xhat).map(|(g, h)| g * h).sum::<f32>() / n;
        for ((dx, &g), &h) in dx.iter_mut().zip(&grad_xhat).zip(xhat) {
            *dx = (g - mean_g - h * mean_gh) * inv;
        }
    }
    (grad_x, grad_gamma, grad_beta)
}
