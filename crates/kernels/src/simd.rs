//! Row math for the CPU kernels (max, exp-and-sum, dot), written so the compiler vectorises it.
//!
//! The C library's `expf` is a call per element (a third of a bigram training step on flex was
//! spent in it); [`exp`] is a handful of multiply-adds that run many lanes at a time. Sums keep
//! 16 partial sums so they vectorise too. Each public function picks AVX-512 or AVX2 at run time
//! where the CPU has them; the arithmetic is the same on every path (no fused multiply-adds are
//! introduced), so results do not depend on the CPU. [`set_max_simd_level`] (or the
//! `TINYGPT_SIMD_LEVEL` variable) caps the choice, so one machine tests every path.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

const LANES: usize = 16;

/// The instruction sets the kernels are compiled for, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Whatever the target guarantees (SSE2 on x86_64).
    Baseline,
    Avx2,
    Avx512,
}

impl SimdLevel {
    pub const ALL: [SimdLevel; 3] = [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Baseline => "baseline",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|level| level.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// The highest level this CPU runs.
pub fn detected_simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return SimdLevel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Baseline
}

/// The environment variable that caps the level for a whole process, e.g.
/// `TINYGPT_SIMD_LEVEL=avx2 cargo test`: the lower paths of every kernel then run on a CPU that
/// has the higher ones.
pub const SIMD_LEVEL_VARIABLE: &str = "TINYGPT_SIMD_LEVEL";

const CAP_UNREAD: u8 = u8::MAX;
const NO_CAP: u8 = u8::MAX - 1;
static CAP: AtomicU8 = AtomicU8::new(CAP_UNREAD);

/// Caps the level the kernels dispatch to (`None`: whatever the CPU has), for the whole process.
/// Every level computes the same values, so this changes speed, never results; tests use it to
/// run each level on one machine.
pub fn set_max_simd_level(cap: Option<SimdLevel>) {
    CAP.store(cap.map_or(NO_CAP, |level| level as u8), Ordering::Relaxed);
}

/// The level the kernels run at: the CPU's, capped by [`set_max_simd_level`] or
/// `TINYGPT_SIMD_LEVEL`.
pub fn simd_level() -> SimdLevel {
    let cap = match CAP.load(Ordering::Relaxed) {
        CAP_UNREAD => {
            let cap = cap_from_environment();
            // A cap set by the program meanwhile wins over the environment.
            let _ = CAP.compare_exchange(CAP_UNREAD, cap, Ordering::Relaxed, Ordering::Relaxed);
            CAP.load(Ordering::Relaxed)
        }
        cap => cap,
    };
    let detected = detected_simd_level();
    SimdLevel::ALL
        .into_iter()
        .find(|&level| level as u8 == cap)
        .map_or(detected, |cap| cap.min(detected))
}

fn cap_from_environment() -> u8 {
    let Ok(value) = std::env::var(SIMD_LEVEL_VARIABLE) else {
        return NO_CAP;
    };
    match SimdLevel::parse(&value) {
        Some(level) => level as u8,
        None => {
            eprintln!(
                "warning: ignoring {SIMD_LEVEL_VARIABLE}={value:?}: use baseline, avx2 or avx512"
            );
            NO_CAP
        }
    }
}

/// Runs `check` at every level this CPU has, lowest first, with the process-wide cap set to that
/// level meanwhile (one caller at a time), then restores the cap. For tests: one machine then
/// covers every compiled path of every dispatched kernel.
pub fn at_every_simd_level(mut check: impl FnMut(SimdLevel)) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    struct Restore(u8);
    impl Drop for Restore {
        fn drop(&mut self) {
            CAP.store(self.0, Ordering::Relaxed);
        }
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _restore = Restore(CAP.load(Ordering::Relaxed));
    for level in SimdLevel::ALL {
        if level <= detected_simd_level() {
            set_max_simd_level(Some(level));
            check(level);
        }
    }
}

/// Generates `fn $name` that runs `$body` compiled for AVX-512, AVX2 or the baseline: the
/// highest that [`simd_level`] allows. The body must not depend on the instruction set for its
/// results (no explicit fused multiply-adds, fixed lane counts in reductions), so every level
/// computes the same values; tests check that bit for bit.
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
                match $crate::simd::simd_level() {
                    // SAFETY: simd_level never exceeds what the CPU has.
                    $crate::simd::SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::simd::SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::SimdLevel::Baseline => {}
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

/// The larger of two values as one compare-and-select (`maxps`); `f32::max`'s NaN rules cost two
/// more instructions per call and kept the lanes' final fold sequential (8% of a bigram step).
/// A NaN in a row still reaches the softmax through its own exp.
#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Takes the maximum of 16 lanes pairwise, so it vectorises.
#[inline(always)]
fn lane_max(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            lanes[i] = larger(lanes[i], lanes[i + width]);
        }
        width /= 2;
    }
    lanes[0]
}

#[inline(always)]
fn row_max(values: &[f32]) -> f32 {
    if values.len() < LANES {
        // Short rows (attention over a few positions) skip the 16 lanes.
        return values.iter().copied().fold(f32::NEG_INFINITY, larger);
    }
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = larger(*lane, v);
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(rest) {
        *lane = larger(*lane, v);
    }
    lane_max(lanes)
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
    // The tail goes through the same 16 lanes, padded with -∞ (whose exp is 0), not one scalar
    // exp at a time: attention rows are often shorter than 16 (transformer.ron's are 1 to 8
    // long), and scalar exps were most of their softmax.
    let rest = chunks.into_remainder();
    if rest.len() < 4 {
        let mut sum = 0.0;
        for v in rest {
            *v = exp(*v - shift);
            sum += *v;
        }
        return lane_sum(lanes) + sum;
    }
    {
        let mut block = [f32::NEG_INFINITY; LANES];
        block[..rest.len()].copy_from_slice(rest);
        for (lane, v) in lanes.iter_mut().zip(block.iter_mut()) {
            *v = exp(*v - shift);
            *lane += *v;
        }
        rest.copy_from_slice(&block[..rest.len()]);
    }
    lane_sum(lanes)
}

/// The sum of `values` in 16 partial sums, so it vectorises (the same value at every level).
#[inline(always)]
pub(crate) fn row_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lane_sum(lanes) + rest
}

/// `Σ a·b` in 16 partial sums.
#[inline(always)]
pub(crate) fn row_dot(a: &[f32], b: &[f32]) -> f32 {
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

    /// Softmax and its backward pass on a few shapes, at the current level.
    fn softmax_outputs() -> Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        SHAPES
            .iter()
            .map(|&(row_len, causal)| {
                let (values, grads, rows) = inputs(row_len, causal);
                let mut probs = values.clone();
                let mut lse = vec![0.0; rows];
                softmax_rows(&mut probs, row_len, causal, &mut lse);
                let mut d = grads.clone();
                softmax_backward_rows(&probs, &mut d, row_len, causal);
                (probs, d, lse)
            })
            .collect()
    }

    const SHAPES: [(usize, bool); 5] =
        [(1, false), (5, false), (16, false), (65, false), (33, true)];

    fn inputs(row_len: usize, causal: bool) -> (Vec<f32>, Vec<f32>, usize) {
        let rows = if causal { row_len } else { 3 };
        let values: Vec<f32> = (0..rows * row_len)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
            .collect();
        let grads: Vec<f32> = (0..rows * row_len).map(|i| (i % 5) as f32 - 2.0).collect();
        (values, grads, rows)
    }

    #[test]
    fn every_simd_level_computes_the_same_bits() {
        let mut outputs = Vec::new();
        at_every_simd_level(|level| {
            assert_eq!(simd_level(), level);
            outputs.push((level, softmax_outputs()));
        });
        let (first_level, first) = &outputs[0];
        assert_eq!(*first_level, SimdLevel::Baseline);
        for (level, output) in &outputs[1..] {
            assert!(output == first, "{level:?} differs from the baseline");
        }
        assert_eq!(outputs.last().map(|o| o.0), Some(detected_simd_level()));
    }

    /// Under an emulator posing as an older CPU (`cargo xtask cpu-levels`), the kernels must see
    /// that CPU: `TINYGPT_EXPECT_SIMD_LEVEL` names the level it has.
    #[test]
    fn detects_the_expected_level() {
        if let Ok(expected) = std::env::var("TINYGPT_EXPECT_SIMD_LEVEL") {
            let expected = SimdLevel::parse(&expected).expect("a level name");
            assert_eq!(detected_simd_level(), expected);
        }
        assert_eq!(SimdLevel::parse(" AVX2"), Some(SimdLevel::Avx2));
        assert_eq!(SimdLevel::parse("sse"), None);
    }

    #[test]
    fn softmax_rows_match_the_formula() {
        at_every_simd_level(|_| softmax_rows_match_the_formula_here());
    }

    fn softmax_rows_match_the_formula_here() {
        for (&(row_len, causal), (probs, d, lse)) in SHAPES.iter().zip(softmax_outputs()) {
            let (values, grads, _) = inputs(row_len, causal);
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
