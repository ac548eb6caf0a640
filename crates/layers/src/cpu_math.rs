//! Row math for the CPU kernels (max, exp-and-sum, dot), written so the compiler vectorises it.
//!
//! The C library's `expf` is a call per element (a third of a bigram training step on flex was
//! spent in it); [`exp`] is a handful of multiply-adds that run many lanes at a time. Sums keep
//! 16 partial sums so they vectorise too. Each public function picks AVX-512 or AVX2 at run time
//! where the CPU has them; the arithmetic is the same on every path (no fused multiply-adds are
//! introduced), so results do not depend on the CPU.

const LANES: usize = 16;

/// Generates `pub fn $name` that runs `$body` compiled for AVX-512, AVX2 or the baseline,
/// whichever the CPU supports.
macro_rules! dispatched {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> $ret {
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
    /// The largest value (`-inf` for none).
    pub fn max(values: &[f32]) -> f32 {
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let chunks = values.chunks_exact(LANES);
        let rest = chunks.remainder();
        for chunk in chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane = lane.max(v);
            }
        }
        rest.iter().chain(&lanes).copied().fold(f32::NEG_INFINITY, f32::max)
    }
}

dispatched! {
    /// Replaces each value `x` by `e^(x - shift)` and returns their sum.
    pub fn exp_shifted_sum(values: &mut [f32], shift: f32) -> f32 {
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
        lanes.iter().sum::<f32>() + rest
    }
}

dispatched! {
    /// `sum(a[i] * b[i])` over the shorter length.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let len = a.len().min(b.len());
        let (a, b) = (&a[..len], &b[..len]);
        let mut lanes = [0.0f32; LANES];
        let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let rest: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
        for (ca, cb) in a_chunks.zip(b_chunks) {
            for ((lane, x), y) in lanes.iter_mut().zip(ca).zip(cb) {
                *lane += x * y;
            }
        }
        lanes.iter().sum::<f32>() + rest
    }
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
    let n = (clamped * LOG2_E + ROUND) - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        e_r * two_n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_functions_match_plain_loops() {
        for len in [0, 1, 5, 16, 17, 65, 100] {
            let values: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
                .collect();
            let other: Vec<f32> = (0..len).map(|i| (i % 5) as f32 - 2.0).collect();
            assert_eq!(
                max(&values),
                values.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            );
            let expected_dot: f64 = values.iter().zip(&other).map(|(a, b)| (a * b) as f64).sum();
            assert!((dot(&values, &other) as f64 - expected_dot).abs() < 1e-3);
            let mut exps = values.clone();
            let sum = exp_shifted_sum(&mut exps, 1.5);
            for (e, v) in exps.iter().zip(&values) {
                assert_eq!(*e, exp(v - 1.5));
            }
            let expected: f64 = values.iter().map(|v| ((v - 1.5) as f64).exp()).sum();
            assert!((sum as f64 - expected).abs() <= 1e-5 * expected.max(1.0));
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
