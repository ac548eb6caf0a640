//! Row math for the CPU kernels (max, exp-and-sum, dot), written so the compiler vectorises it.
//!
//! The C library's `expf` is a call per element (a third of a bigram training step on flex was
//! spent in it); [`exp`] is a handful of multiply-adds that run many lanes at a time. Sums keep
//! 16 partial sums so they vectorise too. Each public function picks AVX-512 or AVX2 at run time
//! where the CPU has them; the arithmetic is the same on every path (no fused multiply-adds are
//! introduced), so results do not depend on the CPU.

const LANES: usize = 16;

/// Generates `fn $name` that runs `$body` compiled for AVX-512, AVX2 or the baseline, whichever
/// the CPU supports. The body must not depend on the instruction set for its results (no
/// explicit fused multiply-adds), so every CPU computes the same values.
#[macro_export]
macro_rules! dispatched {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn portable($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) -> $ret { portable($($arg),*) }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) -> $ret { portable($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

dispatched! {
    /// Softmax of each `row_len`-long row of `values`, in place. With `causal`, `values` is a
    /// square matrix and row `i` covers only its first `i + 1` entries (the rest are set to 0).
    /// `log_sum_exp`, unless empty, receives each row's `max + ln(sum(e^(x - max)))`.
    pub fn softmax_rows(values: &mut [f32], row_len: usize, causal: bool, log_sum_exp: &mut [f32]) -> () {
        for (index, row) in values.chunks_mut(row_len).enumerate() {
            let seen_len = if causal { index % row_len + 1 } else { row_len };
            let (seen, future) = row.split_at_mut(seen_len);
            let max = row_max(seen);
            let sum = row_exp_shifted_sum(seen, max);
            let inverse = 1.0 / sum;
            for p in seen.iter_mut() {
                *p *= inverse;
            }
            future.fill(0.0);
            if let Some(lse) = log_sum_exp.get_mut(index) {
                *lse = max + sum.ln();
            }
        }
    }
}

dispatched! {
    /// The softmax backward pass, in place: each row of `grad` (d loss / d softmax) becomes
    /// `p * (g - sum_j p_j g_j)` (d loss / d input), with `probs` the softmax rows. `causal` as
    /// in [`softmax_rows`].
    pub fn softmax_backward_rows(probs: &[f32], grad: &mut [f32], row_len: usize, causal: bool) -> () {
        for (index, (p, g)) in probs.chunks(row_len).zip(grad.chunks_mut(row_len)).enumerate() {
            let seen_len = if causal { index % row_len + 1 } else { row_len };
            let (p, (seen, future)) = (&p[..seen_len], g.split_at_mut(seen_len));
            let dot = row_dot(p, seen);
            for (g, p) in seen.iter_mut().zip(p) {
                *g = p * (*g - dot);
            }
            future.fill(0.0);
        }
    }
}

/// Sums 16 lanes pairwise, so the additions vectorise.
#[inline(always)]
fn lane_sum(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
        width /= 2;
    }
    lanes[0]
}

#[inline(always)]
fn row_max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v);
        }
    }
    rest.iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Replaces each value `x` by `e^(x - shift)` and returns their sum.
#[inline(always)]
fn row_exp_shifted_sum(values: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = values.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *v = exp(*v - shift);
            *lane += *v;
        }
    }
    let mut rest = 0.0;
    for v in chunks.into_remainder() {
        *v = exp(*v - shift);
        rest += *v;
    }
    lane_sum(lanes) + rest
}

#[inline(always)]
fn row_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for ((lane, x), y) in lanes.iter_mut().zip(ca).zip(cb) {
            *lane += x * y;
        }
    }
    lane_sum(lanes) + rest
}

/// `e^x` in f32, within 2 ulp of the true value for `x` in `[-87, 88]`; 0 below, as the
/// softmax-style uses here (`x - max <= 0`) never go above.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Cephes' expf: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by a degree-6 polynomial, 2^n by
    // building the float's exponent bits.
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and removing 1.5 * 2^23 rounds to the nearest integer without a rounding call.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.0, 88.0);
    let rounded = clamped * LOG2_E + ROUND;
    let n = rounded - ROUND;
    // `rounded`'s low mantissa bits hold n as an integer: 2^n's exponent bits come from integer
    // ops, which vectorise (a float-to-int cast does not, as Rust saturates it).
    let two_n = f32::from_bits(
        rounded
            .to_bits()
            .wrapping_sub(ROUND.to_bits())
            .wrapping_add(127)
            << 23,
    );
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    if x < -87.0 {
        0.0
    } else {
        e_r * two_n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax and its backward pass in f64, over the first `seen` entries of a row.
    fn reference(row: &[f32], grad: &[f32], seen: usize) -> (Vec<f64>, Vec<f64>, f64) {
        let max = row[..seen]
            .iter()
            .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let exps: Vec<f64> = row[..seen]
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .collect();
        let sum: f64 = exps.iter().sum();
        let p: Vec<f64> = exps.iter().map(|e| e / sum).collect();
        let dot: f64 = p.iter().zip(grad).map(|(p, &g)| p * g as f64).sum();
        let d: Vec<f64> = p
            .iter()
            .zip(grad)
            .map(|(p, &g)| p * (g as f64 - dot))
            .collect();
        (p, d, max + sum.ln())
    }

    #[test]
    fn softmax_rows_match_the_formula() {
        for (row_len, causal) in [(1, false), (5, false), (16, false), (65, false), (33, true)] {
            let rows = if causal { row_len } else { 3 };
            let values: Vec<f32> = (0..rows * row_len)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
                .collect();
            let grads: Vec<f32> = (0..rows * row_len).map(|i| (i % 5) as f32 - 2.0).collect();
            let mut probs = values.clone();
            let mut lse = vec![0.0; rows];
            softmax_rows(&mut probs, row_len, causal, &mut lse);
            let mut d = grads.clone();
            softmax_backward_rows(&probs, &mut d, row_len, causal);
            for (r, &row_lse) in lse.iter().enumerate() {
                let seen = if causal { r + 1 } else { row_len };
                let range = r * row_len..(r + 1) * row_len;
                let (p, dx, expected_lse) =
                    reference(&values[range.clone()], &grads[range.clone()], seen);
                for c in 0..row_len {
                    let (want_p, want_d) = if c < seen { (p[c], dx[c]) } else { (0.0, 0.0) };
                    assert!((probs[range.start + c] as f64 - want_p).abs() < 1e-6);
                    assert!((d[range.start + c] as f64 - want_d).abs() < 1e-5);
                }
                assert!((row_lse as f64 - expected_lse).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        let steps = 400_000;
        for i in 0..=steps {
            let x = -87.0 + 175.0 * i as f64 / steps as f64;
            let x = x as f32;
            let exact = (x as f64).exp();
            let ulp = (exact as f32).next_up() as f64 - exact as f32 as f64;
            worst = worst.max((exp(x) as f64 - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }
}
