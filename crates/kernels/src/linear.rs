//! A Linear layer's matrix products on plain slices through `gemm` on every core: `x · W + b`
//! forward, and `dY · Wᵀ`, `Xᵀ · dY` and the column sums of `dY` backward, transposes read
//! through strides rather than copied.
//!
//! flex's matmul is `gemm` too; ndarray's (the `matrixmultiply` crate, AVX2
//! at most and one thread for a plain matrix product) was 46% of a nanogpt_cpu training step.

/// Products smaller than this many multiply-adds run on one thread: waking the pool costs more
/// (transformer.ron's 256 × 32 × 96 products spent 15% of an ndarray step in rayon's sleep and
/// wake-up calls).
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// `dst[m × n] (+)= lhs[m × k] · rhs[k × n]`, row-major, either operand read transposed.
#[allow(clippy::too_many_arguments)]
fn gemm_row_major(
    dst: &mut [f32],
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    lhs_transposed: bool,
    rhs: &[f32],
    rhs_transposed: bool,
) {
    assert_eq!(dst.len(), m * n);
    assert_eq!(lhs.len(), m * k);
    assert_eq!(rhs.len(), k * n);
    // (column stride, row stride) of the logical operand. lhs is m × k: stored as is, or as its
    // k × m transpose; rhs is k × n: stored as is, or as its n × k transpose.
    let (lhs_cs, lhs_rs) = if lhs_transposed {
        (m as isize, 1)
    } else {
        (1, k as isize)
    };
    let (rhs_cs, rhs_rs) = if rhs_transposed {
        (k as isize, 1)
    } else {
        (1, n as isize)
    };
    // SAFETY: the asserts above bound every view by its slice; dst is exclusively borrowed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            if m * n * k < PARALLEL_MIN_MACS {
                gemm::Parallelism::None
            } else {
                gemm::Parallelism::Rayon(0)
            },
        );
    }
}

/// The sizes of `x [rows × d_in] · weight [d_in × d_out]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearDims {
    pub rows: usize,
    pub d_in: usize,
    pub d_out: usize,
    /// The weight is stored as its `[d_out × d_in]` transpose: a tied lm_head's weight is the
    /// token embedding, `[vocab × n_embd]`. Its gradient comes in the same layout.
    pub weight_transposed: bool,
}

/// `x · weight + bias`, `[rows × d_out]`.
pub fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, d: LinearDims) -> Vec<f32> {
    let mut out = match bias {
        Some(bias) => bias.repeat(d.rows),
        None => vec![0.0; d.rows * d.d_out],
    };
    gemm_row_major(
        &mut out,
        bias.is_some(),
        (d.rows, d.d_out, d.d_in),
        x,
        false,
        weight,
        d.weight_transposed,
    );
    out
}

crate::dispatched! {
    /// `max(0, y)` in place: the ReLU that a FeedForward applies to its hidden Linear's output,
    /// fused into the product's output buffer instead of a second tensor. A NaN stays NaN, as in
    /// Burn's and PyTorch's ReLU, so a diverging run still shows in its loss.
    pub fn relu_in_place(values: &mut [f32]) -> () {
        // A select on every element, not a conditional store: that vectorises, where a branch on
        // the sign of random values mispredicts half the time (13% of a step when it did).
        for v in values {
            *v = if *v <= 0.0 { 0.0 } else { *v };
        }
    }
}

crate::dispatched! {
    /// `dY ⊙ [out > 0]` in place: the gradient through a ReLU, from the ReLU's output (0 where
    /// the input was not positive, as Burn and PyTorch define it at 0).
    pub fn relu_backward_in_place(grad_out: &mut [f32], out: &[f32]) -> () {
        assert_eq!(grad_out.len(), out.len());
        for (g, &y) in grad_out.iter_mut().zip(out) {
            *g = if y <= 0.0 { 0.0 } else { *g };
        }
    }
}

/// `dY · Wᵀ`: the gradient with respect to the input.
pub fn grad_input(grad_out: &[f32], weight: &[f32], d: LinearDims) -> Vec<f32> {
    let mut grad = vec![0.0; d.rows * d.d_in];
    gemm_row_major(
        &mut grad,
        false,
        (d.rows, d.d_in, d.d_out),
        grad_out,
        false,
        weight,
        !d.weight_transposed,
    );
    grad
}

/// `Xᵀ · dY`: the gradient with respect to the weight (`dYᵀ · X` when it is stored transposed).
pub fn grad_weight(x: &[f32], grad_out: &[f32], d: LinearDims) -> Vec<f32> {
    let mut grad = vec![0.0; d.d_in * d.d_out];
    if d.weight_transposed {
        gemm_row_major(
            &mut grad,
            false,
            (d.d_out, d.d_in, d.rows),
            grad_out,
            true,
            x,
            false,
        );
        return grad;
    }
    gemm_row_major(
        &mut grad,
        false,
        (d.d_in, d.d_out, d.rows),
        x,
        true,
        grad_out,
        false,
    );
    grad
}

/// The column sums of `dY`: the gradient with respect to the bias.
pub fn grad_bias(grad_out: &[f32], d: LinearDims) -> Vec<f32> {
    let mut grad = vec![0.0f32; d.d_out];
    for row in grad_out.chunks(d.d_out) {
        for (g, &v) in grad.iter_mut().zip(row) {
            *g += v;
        }
    }
    grad
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop.
    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..cols * rows)
            .map(|i| a[(i % rows) * cols + i / rows])
            .collect()
    }

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }

    #[test]
    fn products_match_the_textbook() {
        let d = LinearDims {
            rows: 5,
            d_in: 3,
            d_out: 4,
            weight_transposed: false,
        };
        let values = |n: usize, seed: f32| -> Vec<f32> {
            (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
        };
        let (x, w, b, dy) = (
            values(15, 0.1),
            values(12, 0.2),
            values(4, 0.3),
            values(20, 0.4),
        );
        let mut expected = naive(&x, &w, 5, 3, 4);
        for (i, e) in expected.iter_mut().enumerate() {
            *e += b[i % 4];
        }
        close(&forward(&x, &w, Some(&b), d), &expected);
        close(
            &grad_input(&dy, &w, d),
            &naive(&dy, &transpose(&w, 3, 4), 5, 4, 3),
        );
        close(
            &grad_weight(&x, &dy, d),
            &naive(&transpose(&x, 5, 3), &dy, 3, 5, 4),
        );
        let sums: Vec<f32> = (0..4)
            .map(|j| (0..5).map(|i| dy[i * 4 + j]).sum())
            .collect();
        close(&grad_bias(&dy, d), &sums);

        let mut relu = vec![-1.5, 0.0, 2.0, -0.0, 0.25];
        relu_in_place(&mut relu);
        assert_eq!(relu, [0.0, 0.0, 2.0, 0.0, 0.25]);
        let mut nan = [f32::NAN];
        relu_in_place(&mut nan);
        assert!(nan[0].is_nan());
        let mut grad = vec![1.0, 2.0, 3.0, 4.0, 5.0];
        relu_backward_in_place(&mut grad, &relu);
        assert_eq!(grad, [0.0, 0.0, 3.0, 0.0, 5.0]);

        // The same products with the weight stored as its transpose.
        let wt = transpose(&w, 3, 4);
        let dt = LinearDims {
            weight_transposed: true,
            ..d
        };
        close(&forward(&x, &wt, Some(&b), dt), &expected);
        close(&grad_input(&dy, &wt, dt), &grad_input(&dy, &w, d));
        close(
            &grad_weight(&x, &dy, dt),
            &transpose(&grad_weight(&x, &dy, d), 3, 4),
        );
    }
}
