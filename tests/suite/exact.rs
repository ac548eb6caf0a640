//! Softmax, log and layer norm with exact gradients (`tinygpt_layers::exact`), against f64 references on every CPU backend.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::prelude::Backend;
use burn::tensor::activation;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use burn::tensor::TensorData;
use tinygpt_layers::exact::{layer_norm, ln, softmax};

/// 36 rows: the per-row sums (whose reciprocals the gradients need) are past
/// burn-ndarray's 32-element SIMD threshold, so `float_recip` would run the estimate.
const ROWS: usize = 36;
const COLS: usize = 40;

fn values(seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..ROWS * COLS)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn tensor<B: Backend>(values: &[f32]) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [ROWS, COLS]),
        &Default::default(),
    )
}

fn to_vec<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn max_relative(ours: &[f32], exact: &[f64]) -> f64 {
    let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = ours
        .iter()
        .zip(exact)
        .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
    worst / scale
}

/// Gradient of `sum(f(x) * weights)` with respect to `x`.
fn gradient<B: AutodiffBackend>(
    x: &[f32],
    weights: &[f32],
    f: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Vec<f32> {
    let x = tensor::<B>(x).require_grad();
    let loss = (f(x.clone()) * tensor::<B>(weights)).sum();
    let grads = loss.backward();
    to_vec(x.grad(&grads).expect("x has a gradient"))
}

/// f64 row softmax and its vector-Jacobian product with `weights`.
fn softmax_reference(x: &[f32], weights: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut p = Vec::new();
    let mut d = Vec::new();
    for (row, w) in x.chunks(COLS).zip(weights.chunks(COLS)) {
        let max = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        let row_p: Vec<f64> = e.iter().map(|e| e / sum).collect();
        let dot: f64 = row_p.iter().zip(w).map(|(p, &w)| p * w as f64).sum();
        d.extend(row_p.iter().zip(w).map(|(p, &w)| p * (w as f64 - dot)));
        p.extend(row_p);
    }
    (p, d)
}

fn check_backend<B: AutodiffBackend>(name: &str) {
    let (x, weights) = (values(1), values(2));
    let (p, dp) = softmax_reference(&x, &weights);
    let got = to_vec(softmax(tensor::<B>(&x), 1));
    assert!(max_relative(&got, &p) < 1e-6, "{name}: softmax values");
    let got = gradient::<B>(&x, &weights, |x| softmax(x, 1));
    let error = max_relative(&got, &dp);
    assert!(error < 1e-6, "{name}: softmax gradient off by {error:e}");

    // ln at positive inputs: value ln(x), gradient w / x.
    let positive: Vec<f32> = x.iter().map(|v| v.abs() + 0.25).collect();
    let got = to_vec(ln(tensor::<B>(&positive)));
    let exact: Vec<f64> = positive.iter().map(|&v| (v as f64).ln()).collect();
    assert!(max_relative(&got, &exact) < 1e-6, "{name}: ln values");
    let got = gradient::<B>(&positive, &weights, ln);
    let exact: Vec<f64> = positive
        .iter()
        .zip(&weights)
        .map(|(&v, &w)| w as f64 / v as f64)
        .collect();
    let error = max_relative(&got, &exact);
    assert!(error < 1e-6, "{name}: ln gradient off by {error:e}");

    // Layer norm against finite differences of the same function in f64.
    let got = gradient::<B>(&x, &weights, |x| {
        let gamma = Tensor::ones([COLS], &x.device());
        layer_norm(x, gamma, None, 1e-5)
    });
    let exact = layer_norm_reference_gradient(&x, &weights, 1e-5);
    let error = max_relative(&got, &exact);
    assert!(error < 1e-5, "{name}: layer norm gradient off by {error:e}");
}

/// d/dx of `sum(w * layer_norm(x))` per row, in f64: `(w' - mean(w') - x̂ mean(w' x̂)) / σ`
/// with `w' = w` (gamma 1).
fn layer_norm_reference_gradient(x: &[f32], weights: &[f32], epsilon: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for (row, w) in x.chunks(COLS).zip(weights.chunks(COLS)) {
        let n = COLS as f64;
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let sigma = (var + epsilon).sqrt();
        let xhat: Vec<f64> = row.iter().map(|&v| (v as f64 - mean) / sigma).collect();
        let w_mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
        let wx_mean = w.iter().zip(&xhat).map(|(&w, x)| w as f64 * x).sum::<f64>() / n;
        out.extend(
            w.iter()
                .zip(&xhat)
                .map(|(&w, x)| (w as f64 - w_mean - x * wx_mean) / sigma),
        );
    }
    out
}

#[test]
fn gradients_are_correctly_rounded_on_every_cpu_backend() {
    check_backend::<Autodiff<NdArray<f32>>>("ndarray");
    check_backend::<Autodiff<Flex>>("flex");
}

/// What the module works around, so a Burn upgrade that fixes it shows up here: on ndarray,
/// the gradient of Burn's own softmax is off by the reciprocal estimate's error (at least
/// 1e-6 of the largest gradient; 2.4e-5 on an AVX-512 CPU, 3.7e-4 with AVX2). Under an
/// emulator whose reciprocal is exact (qemu), or without SIMD, it is not.
#[test]
fn burn_ndarray_softmax_gradient_uses_the_reciprocal_estimate() {
    let (x, weights) = (values(1), values(2));
    let (_, dp) = softmax_reference(&x, &weights);
    let burns = gradient::<Autodiff<NdArray<f32>>>(&x, &weights, |x| activation::softmax(x, 1));
    let ours = gradient::<Autodiff<NdArray<f32>>>(&x, &weights, |x| softmax(x, 1));
    let (burns, ours) = (max_relative(&burns, &dp), max_relative(&ours, &dp));
    eprintln!("softmax gradient on ndarray: Burn's off by {burns:e}, ours by {ours:e}");
    if hardware_reciprocal_is_an_estimate() {
        assert!(
            burns > 1e-6,
            "Burn's softmax gradient is now exact: {burns:e}"
        );
    }
    assert!(ours < 1e-6);
}

/// Whether this CPU's packed reciprocal instruction returns an estimate (real x86 hardware)
/// rather than the exact reciprocal (qemu's emulation).
fn hardware_reciprocal_is_an_estimate() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cvtss_f32, _mm_rcp_ss, _mm_set_ss};
        // SAFETY: SSE is part of x86_64.
        let estimate = unsafe { _mm_cvtss_f32(_mm_rcp_ss(_mm_set_ss(3.0))) };
        estimate != 1.0 / 3.0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
