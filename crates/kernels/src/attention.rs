//! Causal self-attention as one kernel on host memory: forward and backward for every
//! (batch, head) pair in parallel, straight from the fused `[batch, time, qkv width]` projection
//! to the `[batch, time, width]` output, and back. With grouped-query attention (`kv_heads <
//! heads`, as Llama-family models have) consecutive groups of `heads / kv_heads` query heads share
//! one key and value head.
//!
//! Written as tensor ops, attention is about a dozen operations (split the heads, scale, mask,
//! softmax, dropout, two batched matmuls, merge the heads) and twice that many in the backward
//! pass; on the CPU backends each one allocates, walks strided views element by element and
//! records an autodiff node. Here one (batch, head) task keeps its `time x time` weights in cache
//! and reads the queries, keys and values where the projection left them, through strides.
//! [`crate::ops::attention`] plugs it into Burn; this file knows nothing of Burn.

use crate::simd;
use rayon::prelude::*;

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    pub batch: usize,
    pub time: usize,
    /// Query heads.
    pub heads: usize,
    /// Key and value heads: `heads` (multi-head attention) or a divisor of it (grouped-query).
    pub kv_heads: usize,
    pub head_size: usize,
}

impl AttentionDims {
    /// Multi-head attention: as many key and value heads as query heads.
    pub const fn multi_head(batch: usize, time: usize, heads: usize, head_size: usize) -> Self {
        Self {
            batch,
            time,
            heads,
            kv_heads: heads,
            head_size,
        }
    }

    /// `heads * head_size`: the queries' width, and the output's.
    pub fn width(&self) -> usize {
        self.heads * self.head_size
    }

    /// `kv_heads * head_size`: the keys' width, and the values'.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_size
    }

    /// A row of the projection: queries, then keys, then values.
    pub fn qkv_width(&self) -> usize {
        self.width() + 2 * self.kv_width()
    }

    /// Query heads per key and value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Elements of the `[batch, time, qkv_width]` projection.
    pub fn qkv_len(&self) -> usize {
        self.batch * self.time * self.qkv_width()
    }

    /// Elements of the `[batch, time, width]` output.
    pub fn out_len(&self) -> usize {
        self.batch * self.time * self.width()
    }

    /// Elements of the `[batch, heads, time, time]` attention weights.
    pub fn weights_len(&self) -> usize {
        self.batch * self.heads * self.time * self.time
    }

    fn scale(&self) -> f32 {
        (self.head_size as f32).powf(-0.5)
    }
}

/// Dropout on the attention weights: each weight is kept with probability `keep` (and scaled by
/// `1 / keep`), decided by a counter-based generator keyed by `seed` and the weight's position,
/// so the backward pass redraws the same mask instead of storing it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightDropout {
    pub seed: u64,
    pub keep: f64,
}

impl WeightDropout {
    /// Mask factors (`1 / keep` or 0) of the first `row.len()` weights of row `row_index`
    /// (`(batch * heads + head) * time + query`).
    pub fn fill_row(&self, row_index: usize, row: &mut [f32]) {
        crate::dropout::fill_mask(self.seed, row_index as u64, self.keep, row);
    }

    /// The whole `[batch, heads, time, time]` mask (zeros above the diagonal): for tests and
    /// reference computations.
    pub fn mask(&self, dims: AttentionDims) -> Vec<f32> {
        let t = dims.time;
        let mut mask = vec![0.0; dims.weights_len()];
        for (row_index, row) in mask.chunks_mut(t).enumerate() {
            let query = row_index % t;
            self.fill_row(row_index, &mut row[..=query]);
        }
        mask
    }
}

/// The output of [`forward`].
pub struct Forward {
    /// `[batch, time, width]`, heads side by side.
    pub out: Vec<f32>,
    /// The softmax weights before dropout, `[batch, heads, time, time]`, when asked to keep them
    /// for the backward pass.
    pub weights: Option<Vec<f32>>,
}

/// `softmax(q kᵀ / sqrt(head_size) + causal mask)`, dropout, `· v`, for every head.
pub fn forward(
    qkv: &[f32],
    dims: AttentionDims,
    dropout: Option<WeightDropout>,
    keep_weights: bool,
) -> Forward {
    assert_eq!(qkv.len(), dims.qkv_len(), "qkv is [batch, time, qkv_width]");
    assert!(dims.kv_heads > 0 && dims.heads.is_multiple_of(dims.kv_heads));
    let t = dims.time;
    let mut out = vec![0.0f32; dims.out_len()];
    let mut weights = keep_weights.then(|| vec![0.0f32; dims.weights_len()]);
    let out_ptr = SharedMut(out.as_mut_ptr());
    let weights_ptr = weights.as_mut().map(|w| SharedMut(w.as_mut_ptr()));
    for_each_head(
        dims,
        || (vec![0.0f32; t * t], vec![0.0f32; t * t], vec![0.0f32; t]),
        |(scratch, dropped, mask_row), task| {
            let probs: &mut [f32] = match &weights_ptr {
                // SAFETY: task `task` alone writes weights[task * t * t..(task + 1) * t * t].
                Some(w) => unsafe {
                    std::slice::from_raw_parts_mut(w.get().add(task * t * t), t * t)
                },
                None => scratch,
            };
            let view = HeadView::new(dims, task);
            // SAFETY: every view stays inside qkv, probs and out (HeadView's offsets), and this
            // task's output columns are written by no other task.
            unsafe { matmul(square(probs, t), view.q(qkv), view.k(qkv).t(), dims.scale()) };
            simd::softmax_rows(probs, t, true, &mut []);
            let applied: &mut [f32] = match dropout {
                None => probs,
                Some(dropout) => {
                    apply_dropout(&dropout, task, t, probs, dropped, mask_row);
                    dropped
                }
            };
            unsafe {
                matmul(
                    view.out(out_ptr.get()),
                    square(applied, t),
                    view.v(qkv),
                    1.0,
                )
            };
        },
    );
    Forward { out, weights }
}

/// The gradient of [`forward`]'s output with respect to `qkv`, given `weights` from a forward
/// pass with the same `qkv` and `dropout`, and the output's gradient `grad_out`.
///
/// One task per (batch, key/value head): the query heads of a group add into the same key and
/// value gradients, so they run one after the other within their task.
pub fn backward(
    qkv: &[f32],
    weights: &[f32],
    grad_out: &[f32],
    dims: AttentionDims,
    dropout: Option<WeightDropout>,
) -> Vec<f32> {
    assert_eq!(qkv.len(), dims.qkv_len(), "qkv is [batch, time, qkv_width]");
    assert_eq!(
        weights.len(),
        dims.weights_len(),
        "weights are [batch, heads, time, time]"
    );
    assert_eq!(
        grad_out.len(),
        dims.out_len(),
        "grad_out is [batch, time, width]"
    );
    let t = dims.time;
    let mut grad_qkv = vec![0.0f32; dims.qkv_len()];
    let grad_ptr = SharedMut(grad_qkv.as_mut_ptr());
    for_each_kv_head(
        dims,
        || (vec![0.0f32; t * t], vec![0.0f32; t * t], vec![0.0f32; t]),
        |(grad_scores, dropped, mask_row), kv_task| {
            for member in 0..dims.group() {
                // Query head `head` of batch `kv_task / kv_heads`.
                let task = kv_task * dims.group() + member;
                let accumulate = member > 0;
                let probs = &weights[task * t * t..(task + 1) * t * t];
                let view = HeadView::new(dims, task);
                let grad_out = view.grad_out(grad_out);
                let applied = match dropout {
                    None => probs,
                    Some(dropout) => {
                        apply_dropout(&dropout, task, t, probs, dropped, mask_row);
                        &dropped[..]
                    }
                };
                let applied = Mat::new(applied.as_ptr().cast_mut(), t, t, t as isize, 1);
                let grad_weights = square(grad_scores, t);
                // SAFETY: as in `forward`; this task's query columns, and its group's key and
                // value columns, of grad_qkv are written by no other task.
                unsafe {
                    // d(applied weights) = d(out) vᵀ; d(v) += applied weightsᵀ d(out).
                    matmul(grad_weights, grad_out, view.v(qkv).t(), 1.0);
                    matmul_into(
                        view.grad_v(grad_ptr.get()),
                        applied.t(),
                        grad_out,
                        1.0,
                        accumulate,
                    );
                }
                if let Some(dropout) = dropout {
                    for query in 0..t {
                        let row = &mut grad_scores[query * t..=query * t + query];
                        dropout.fill_row(task * t + query, &mut mask_row[..=query]);
                        for (grad, factor) in row.iter_mut().zip(&mask_row[..=query]) {
                            *grad *= factor;
                        }
                    }
                }
                simd::softmax_backward_rows(probs, grad_scores, t, true);
                let grad_scores = square(grad_scores, t);
                unsafe {
                    matmul(
                        view.grad_q(grad_ptr.get()),
                        grad_scores,
                        view.k(qkv),
                        dims.scale(),
                    );
                    matmul_into(
                        view.grad_k(grad_ptr.get()),
                        grad_scores.t(),
                        view.q(qkv),
                        dims.scale(),
                        accumulate,
                    );
                }
            }
        },
    );
    grad_qkv
}

/// `dropped = probs * mask` over the lower triangle of one head's weights.
fn apply_dropout(
    dropout: &WeightDropout,
    task: usize,
    t: usize,
    probs: &[f32],
    dropped: &mut [f32],
    mask_row: &mut [f32],
) {
    for query in 0..t {
        let row = query * t;
        dropout.fill_row(task * t + query, &mut mask_row[..=query]);
        for key in 0..=query {
            dropped[row + key] = probs[row + key] * mask_row[key];
        }
        dropped[row + query + 1..row + t].fill(0.0);
    }
}

/// Below this many multiply-adds per matmul over all heads, the heads run on one thread: handing
/// tiny tasks to other threads costs more than it saves (transformer.ron: 65K, nanogpt_cpu: 6.3M).
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Runs `task` for every (batch, head) pair, each thread with its own `scratch()`: in parallel
/// when there is enough work to share.
fn for_each_head<S>(
    dims: AttentionDims,
    scratch: impl Fn() -> S + Send + Sync,
    task: impl Fn(&mut S, usize) + Send + Sync,
) {
    for_each_task(dims.batch * dims.heads, dims, scratch, task)
}

/// [`for_each_head`] over (batch, key/value head) pairs: task `i` is batch `i / kv_heads`'s key
/// and value head `i % kv_heads`, whose query heads are `group() * (i % kv_heads)..` onwards.
fn for_each_kv_head<S>(
    dims: AttentionDims,
    scratch: impl Fn() -> S + Send + Sync,
    task: impl Fn(&mut S, usize) + Send + Sync,
) {
    let group = dims.group();
    let work = dims.time * dims.time * dims.head_size * group;
    for_each_task_of(dims.batch * dims.kv_heads, work, scratch, task)
}

fn for_each_task<S>(
    tasks: usize,
    dims: AttentionDims,
    scratch: impl Fn() -> S + Send + Sync,
    task: impl Fn(&mut S, usize) + Send + Sync,
) {
    for_each_task_of(tasks, dims.time * dims.time * dims.head_size, scratch, task)
}

/// `tasks` tasks of `work` multiply-adds each.
fn for_each_task_of<S>(
    tasks: usize,
    work: usize,
    scratch: impl Fn() -> S + Send + Sync,
    task: impl Fn(&mut S, usize) + Send + Sync,
) {
    if tasks * work < PARALLEL_MIN_WORK {
        let mut scratch = scratch();
        (0..tasks).for_each(|i| task(&mut scratch, i));
    } else {
        (0..tasks)
            .into_par_iter()
            .for_each_init(scratch, |scratch, i| task(scratch, i));
    }
}

/// A raw pointer that parallel tasks share, each writing its own disjoint part.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: the tasks that share it write disjoint elements (see the call sites).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Through a method, so closures capture the `Sync` wrapper, not the bare pointer field.
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// A `t x t` row-major matrix over a whole slice.
fn square(values: &mut [f32], t: usize) -> Mat {
    assert_eq!(t * t, values.len());
    Mat::new(values.as_mut_ptr(), t, t, t as isize, 1)
}

/// A strided matrix view for gemm (`ptr` is written only when the view is a destination).
#[derive(Clone, Copy)]
struct Mat {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl Mat {
    fn new(ptr: *mut f32, rows: usize, cols: usize, row_stride: isize, col_stride: isize) -> Self {
        Self {
            ptr,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    fn t(self) -> Self {
        Self::new(
            self.ptr,
            self.cols,
            self.rows,
            self.col_stride,
            self.row_stride,
        )
    }
}

/// `dst = scale * lhs · rhs`, single-threaded (the tasks are the parallelism).
///
/// # Safety
/// Each view must describe memory valid for its extent; `dst` must not overlap the inputs.
unsafe fn matmul(dst: Mat, lhs: Mat, rhs: Mat, scale: f32) {
    unsafe { matmul_into(dst, lhs, rhs, scale, false) }
}

/// `dst = scale * lhs · rhs`, or `dst += scale * lhs · rhs` when `accumulate`.
///
/// # Safety
/// As [`matmul`].
unsafe fn matmul_into(dst: Mat, lhs: Mat, rhs: Mat, scale: f32, accumulate: bool) {
    debug_assert_eq!((dst.rows, dst.cols), (lhs.rows, rhs.cols));
    debug_assert_eq!(lhs.cols, rhs.rows);
    gemm::gemm(
        dst.rows,
        dst.cols,
        lhs.cols,
        dst.ptr,
        dst.col_stride,
        dst.row_stride,
        accumulate,
        lhs.ptr,
        lhs.col_stride,
        lhs.row_stride,
        rhs.ptr,
        rhs.col_stride,
        rhs.row_stride,
        if accumulate { 1.0 } else { 0.0 },
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Where one (batch, head) task's operands live: its queries, keys and values are `time x
/// head_size` column blocks of the `[batch, time, qkv_width]` projection (row stride
/// `qkv_width`; the keys and values of its group's head), its output a column block of `[batch,
/// time, width]`.
struct HeadView {
    dims: AttentionDims,
    batch: usize,
    head: usize,
}

impl HeadView {
    fn new(dims: AttentionDims, task: usize) -> Self {
        Self {
            dims,
            batch: task / dims.heads,
            head: task % dims.heads,
        }
    }

    /// Block `part` (0 query, 1 key, 2 value) of this head in a `[batch, time, qkv_width]`
    /// buffer.
    fn qkv_block(&self, base: *const f32, part: usize) -> Mat {
        let dims = &self.dims;
        let (t, row, d) = (dims.time, dims.qkv_width(), dims.head_size);
        let column = match part {
            0 => self.head * d,
            _ => dims.width() + (part - 1) * dims.kv_width() + self.head / dims.group() * d,
        };
        let offset = self.batch * t * row + column;
        // SAFETY (of the `add`): offset < qkv_len for a valid task.
        Mat::new(
            unsafe { base.add(offset) } as *mut f32,
            t,
            d,
            row as isize,
            1,
        )
    }

    fn q(&self, qkv: &[f32]) -> Mat {
        self.qkv_block(qkv.as_ptr(), 0)
    }

    fn k(&self, qkv: &[f32]) -> Mat {
        self.qkv_block(qkv.as_ptr(), 1)
    }

    fn v(&self, qkv: &[f32]) -> Mat {
        self.qkv_block(qkv.as_ptr(), 2)
    }

    fn grad_q(&self, grad_qkv: *mut f32) -> Mat {
        self.qkv_block(grad_qkv, 0)
    }

    fn grad_k(&self, grad_qkv: *mut f32) -> Mat {
        self.qkv_block(grad_qkv, 1)
    }

    fn grad_v(&self, grad_qkv: *mut f32) -> Mat {
        self.qkv_block(grad_qkv, 2)
    }

    /// This head's block of a `[batch, time, width]` buffer.
    fn out_block(&self, base: *const f32) -> Mat {
        let (t, w, d) = (self.dims.time, self.dims.width(), self.dims.head_size);
        let offset = self.batch * t * w + self.head * d;
        Mat::new(unsafe { base.add(offset) } as *mut f32, t, d, w as isize, 1)
    }

    fn out(&self, out: *mut f32) -> Mat {
        self.out_block(out)
    }

    fn grad_out(&self, grad_out: &[f32]) -> Mat {
        self.out_block(grad_out.as_ptr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention of one head computed the textbook way, in f64.
    fn reference(qkv: &[f32], dims: AttentionDims, mask: Option<&[f32]>) -> Vec<f64> {
        let (t, w, d) = (dims.time, dims.width(), dims.head_size);
        let (row, kv) = (dims.qkv_width(), dims.kv_width());
        let at = |b: usize, i: usize, col: usize| qkv[b * t * row + i * row + col] as f64;
        let mut out = vec![0.0; dims.out_len()];
        for b in 0..dims.batch {
            for h in 0..dims.heads {
                for i in 0..t {
                    let g = h / dims.group();
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            (0..d)
                                .map(|c| at(b, i, h * d + c) * at(b, j, w + g * d + c))
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    for c in 0..d {
                        out[b * t * w + i * w + h * d + c] = (0..=i)
                            .map(|j| {
                                let factor = mask.map_or(1.0, |m| {
                                    m[((b * dims.heads + h) * t + i) * t + j] as f64
                                });
                                exps[j] / sum * factor * at(b, j, w + kv + g * d + c)
                            })
                            .sum();
                    }
                }
            }
        }
        out
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (crate::dropout::mix(seed ^ i as u64) >> 40) as f32 / (1u64 << 24) as f32 * 4.0
                    - 2.0
            })
            .collect()
    }

    const DIMS: AttentionDims = AttentionDims::multi_head(2, 7, 3, 5);
    /// Grouped-query: 6 query heads in 2 groups of 3.
    const GQA: AttentionDims = AttentionDims {
        batch: 2,
        time: 6,
        heads: 6,
        kv_heads: 2,
        head_size: 4,
    };

    #[test]
    fn forward_matches_the_textbook_formula() {
        crate::simd::at_every_simd_level(|_| forward_matches_the_textbook_formula_here());
    }

    fn forward_matches_the_textbook_formula_here() {
        let dropout = WeightDropout {
            seed: 9,
            keep: 0.75,
        };
        for dims in [DIMS, GQA] {
            let qkv = pseudo_random(dims.qkv_len(), 1);
            for (dropout, mask) in [(None, None), (Some(dropout), Some(dropout.mask(dims)))] {
                let fast = forward(&qkv, dims, dropout, true).out;
                let slow = reference(&qkv, dims, mask.as_deref());
                for (a, b) in fast.iter().zip(&slow) {
                    assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        crate::simd::at_every_simd_level(|_| backward_matches_finite_differences_here());
    }

    fn backward_matches_finite_differences_here() {
        let multi_head = AttentionDims::multi_head(1, 4, 2, 3);
        let grouped = AttentionDims {
            heads: 4,
            kv_heads: 2,
            ..multi_head
        };
        let dropout = Some(WeightDropout { seed: 4, keep: 0.7 });
        for (dims, dropout) in [multi_head, grouped]
            .into_iter()
            .flat_map(|dims| [(dims, None), (dims, dropout)])
        {
            let qkv = pseudo_random(dims.qkv_len(), 2);
            let grad_out = pseudo_random(dims.out_len(), 3);
            let mask = dropout.map(|d| d.mask(dims));
            let weights = forward(&qkv, dims, dropout, true).weights.unwrap();
            let grad = backward(&qkv, &weights, &grad_out, dims, dropout);
            // The loss sum(out * grad_out), in f64, nudged one input at a time.
            let loss = |qkv: &[f32]| -> f64 {
                reference(qkv, dims, mask.as_deref())
                    .iter()
                    .zip(&grad_out)
                    .map(|(o, g)| o * *g as f64)
                    .sum()
            };
            for i in 0..qkv.len() {
                let (mut up, mut down) = (qkv.clone(), qkv.clone());
                up[i] += 1e-3;
                down[i] -= 1e-3;
                let numeric = (loss(&up) - loss(&down)) / 2e-3;
                assert!(
                    (grad[i] as f64 - numeric).abs() < 1e-3,
                    "d qkv[{i}]: kernel {} vs numeric {numeric}",
                    grad[i]
                );
            }
        }
    }

    #[test]
    fn weights_are_a_causal_distribution_and_the_mask_follows_its_seed() {
        let qkv = pseudo_random(DIMS.qkv_len(), 5);
        let weights = forward(&qkv, DIMS, None, true).weights.unwrap();
        let t = DIMS.time;
        for (row_index, row) in weights.chunks(t).enumerate() {
            let query = row_index % t;
            assert!(row[query + 1..].iter().all(|&p| p == 0.0));
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        let dropout = |seed| WeightDropout { seed, keep: 0.5 };
        assert_eq!(dropout(1).mask(DIMS), dropout(1).mask(DIMS));
        assert_ne!(dropout(1).mask(DIMS), dropout(2).mask(DIMS));
        let big = AttentionDims { time: 64, ..DIMS };
        let mask = dropout(3).mask(big);
        let lower = big.batch * big.heads * 64 * 65 / 2;
        let kept = mask.iter().filter(|&&m| m == 2.0).count();
        assert!(
            (kept as f64 / lower as f64 - 0.5).abs() < 0.02,
            "{kept} of {lower}"
        );
    }
}
