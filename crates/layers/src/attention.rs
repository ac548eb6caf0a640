//! Scaled dot-product attention with a causal mask, shared by [`Head`](crate::Head) and
//! [`MultiHeadAttention`](crate::MultiHeadAttention).

use crate::exact::softmax;
use burn::nn::Dropout;
use burn::tensor::{backend::Backend, Bool, Tensor};

/// `softmax(q kᵀ / sqrt(head_size) + causal mask) v` over `[batch, heads, time, head_size]`.
///
/// The queries are the last `q.time` of the `k.time` positions (`past` = the difference, 0 unless
/// earlier keys come from a cache): query `i` sits at position `past + i` and attends to positions
/// `0..=past + i` only, so no token sees the future.
pub fn causal_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    dropout: &Dropout,
) -> Tensor<B, 4> {
    tinygpt_kernels::dropout(dropout, causal_weights(q, k)).matmul(v)
}

/// The attention weights of [`causal_attention`]: `softmax(q kᵀ / sqrt(head_size) + causal
/// mask)`, `[batch, heads, queries, keys]`, each row summing to 1 over the positions it sees.
pub fn causal_weights<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, queries, head_size] = q.dims();
    let keys = k.dims()[2];
    let past = keys - queries;
    let scores = q.matmul(k.swap_dims(2, 3)) * (head_size as f64).powf(-0.5);
    let scores = if queries == 1 {
        // A single newest query may see every key.
        scores
    } else {
        // Burn's tril_mask is true above the (offset) diagonal: exactly the future positions.
        // Adding a [1, 1, q, k] bias of 0 / -inf (broadcast) masks the same scores as
        // mask_fill, bit for bit, but mask_fill needs a mask of the scores' full shape, which
        // the CPU backends materialise in the forward pass and again in the backward (9% of a
        // nanogpt_cpu step on flex); the bias needs no gradient at all.
        let device = scores.device();
        let future = Tensor::<B, 2, Bool>::tril_mask([queries, keys], past as i64, &device);
        let bias = Tensor::<B, 2>::zeros([queries, keys], &device)
            .mask_fill(future, f32::NEG_INFINITY)
            .unsqueeze::<4>();
        scores + bias
    };
    softmax(scores, 3)
}

/// One attention layer's weights for the first sequence of a batch: `weights[h][i][j]` is how
/// much query head `h` at position `i` attends to position `j` (0 for `j > i`).
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMap {
    pub heads: usize,
    pub time: usize,
    /// `[heads, time, time]`, row-major.
    pub weights: Vec<f32>,
}

impl AttentionMap {
    /// Row `i` of head `h`.
    pub fn row(&self, head: usize, i: usize) -> &[f32] {
        let at = (head * self.time + i) * self.time;
        &self.weights[at..at + self.time]
    }
}

std::thread_local! {
    static CAPTURED: std::cell::RefCell<Option<Vec<AttentionMap>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, keeping the attention weights of every attention layer it runs without a cache, in
/// the order they run. Outside such a call nothing is kept or computed: training and generation
/// pay one thread-local check per attention layer.
pub fn capture_attention<R>(f: impl FnOnce() -> R) -> (R, Vec<AttentionMap>) {
    let outer = CAPTURED.with(|c| c.replace(Some(Vec::new())));
    let result = f();
    let maps = CAPTURED.with(|c| c.replace(outer)).unwrap_or_default();
    (result, maps)
}

/// The weights `qkv`'s queries give its keys, for [`capture_attention`].
fn record<B: Backend>(qkv: &Tensor<B, 3>, heads: Heads) {
    if !CAPTURED.with(|c| c.borrow().is_some()) {
        return;
    }
    let [batch, time, width] = qkv.dims();
    let head_size = width / heads.columns();
    let (query_width, kv_width) = (heads.heads * head_size, heads.kv_heads * head_size);
    let first = |from: usize, to: usize| qkv.clone().slice([0..1.min(batch), 0..time, from..to]);
    let q = split_heads(first(0, query_width), heads.heads);
    let k = split_heads(first(query_width, query_width + kv_width), heads.kv_heads);
    let weights = causal_weights(q, repeat_kv(k, heads.heads / heads.kv_heads));
    let weights = weights
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 weights");
    CAPTURED.with(|c| {
        if let Some(maps) = c.borrow_mut().as_mut() {
            maps.push(AttentionMap {
                heads: heads.heads,
                time,
                weights,
            });
        }
    });
}

/// The keys and values of the positions an attention layer has seen, `[batch, kv_heads, time,
/// head_size]` (only the key and value heads: a grouped-query layer caches `kv_heads`, not
/// `heads`), so generation feeds only the newest token instead of the whole context.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub keys: Tensor<B, 4>,
    pub values: Tensor<B, 4>,
}

impl<B: Backend> KvCache<B> {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.keys.dims()[2]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How many query heads, and how many key and value heads they share (`kv_heads` divides
/// `heads`; equal for multi-head attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
}

impl Heads {
    /// Multi-head attention: a key and value head for each query head.
    pub fn multi(heads: usize) -> Self {
        Self {
            heads,
            kv_heads: heads,
        }
    }

    /// Columns of the `[.., (heads + 2 * kv_heads) * head_size]` projection per head size.
    pub fn columns(&self) -> usize {
        self.heads + 2 * self.kv_heads
    }
}

/// Causal self-attention from a fused projection: `qkv` is `[batch, time, (heads + 2 * kv_heads) *
/// head_size]` holding queries, keys and values side by side; returns `[batch, time, heads *
/// head_size]`. With a `cache`, the new keys and values are appended to it and the queries attend
/// to all.
///
/// One fused projection rather than three also keeps training reproducible: autodiff sums the
/// gradients of a tensor's consumers in varying order, which is exact for two but not for three.
pub fn fused_causal_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: Heads,
    dropout: &Dropout,
    cache: Option<&mut Option<KvCache<B>>>,
) -> Tensor<B, 3> {
    let Heads { heads: h, kv_heads } = heads;
    if cache.is_none() {
        record(&qkv, heads);
    }
    let qkv = match cache {
        // Without a cache, the CPU backends run one fused kernel (forward and backward).
        None => match tinygpt_kernels::attention(qkv, h, kv_heads, dropout) {
            Ok(out) => return out,
            Err(qkv) => qkv,
        },
        // The prompt of a generation (nothing cached yet) is plain causal self-attention too:
        // the kernel computes it, and only its keys and values are kept.
        Some(slot) if slot.is_none() => {
            let [batch, time, width] = qkv.dims();
            let query_width = width / heads.columns() * h;
            let kv = qkv.clone().slice([0..batch, 0..time, query_width..width]);
            match tinygpt_kernels::attention(qkv, h, kv_heads, dropout) {
                Ok(out) => {
                    let mut parts = kv.chunk(2, 2).into_iter().map(|p| split_heads(p, kv_heads));
                    if let (Some(keys), Some(values)) = (parts.next(), parts.next()) {
                        *slot = Some(KvCache { keys, values });
                    }
                    return out;
                }
                Err(qkv) => return plain_causal_attention(qkv, heads, dropout, Some(slot)),
            }
        }
        Some(_) => qkv,
    };
    plain_causal_attention(qkv, heads, dropout, cache)
}

/// [`fused_causal_attention`] as tensor ops, on every backend.
pub fn plain_causal_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: Heads,
    dropout: &Dropout,
    cache: Option<&mut Option<KvCache<B>>>,
) -> Tensor<B, 3> {
    let [batch, time, width] = qkv.dims();
    let head_size = width / heads.columns();
    let (query_width, kv_width) = (heads.heads * head_size, heads.kv_heads * head_size);
    let part = |from: usize, to: usize| qkv.clone().slice([0..batch, 0..time, from..to]);
    let q = split_heads(part(0, query_width), heads.heads);
    let k = split_heads(part(query_width, query_width + kv_width), heads.kv_heads);
    let v = split_heads(part(query_width + kv_width, width), heads.kv_heads);
    let (k, v) = match cache {
        None => (k, v),
        Some(cache) => {
            let (k, v) = match cache.take() {
                Some(past) => (
                    Tensor::cat(vec![past.keys, k], 2),
                    Tensor::cat(vec![past.values, v], 2),
                ),
                None => (k, v),
            };
            *cache = Some(KvCache {
                keys: k.clone(),
                values: v.clone(),
            });
            (k, v)
        }
    };
    let group = heads.heads / heads.kv_heads;
    merge_heads(causal_attention(
        q,
        repeat_kv(k, group),
        repeat_kv(v, group),
        dropout,
    ))
}

/// `[batch, kv_heads, time, head_size]` -> `[batch, kv_heads * group, time, head_size]`, each key
/// or value head repeated for the `group` query heads that share it (Hugging Face's `repeat_kv`).
pub fn repeat_kv<B: Backend>(x: Tensor<B, 4>, group: usize) -> Tensor<B, 4> {
    if group == 1 {
        return x;
    }
    let [batch, kv_heads, time, head_size] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([batch, kv_heads, group, time, head_size])
        .reshape([batch, kv_heads * group, time, head_size])
}
/// `[batch, time, heads * head_size]` -> `[batch, heads, time, head_size]`.
pub fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [batch, time, width] = x.dims();
    x.reshape([batch, time, heads, width / heads])
        .swap_dims(1, 2)
}

/// `[batch, heads, time, head_size]` -> `[batch, time, heads * head_size]`: heads side by side,
/// as `torch.cat([h(x) for h in heads], dim=-1)`.
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, heads, time, head_size] = x.dims();
    x.swap_dims(1, 2).reshape([batch, time, heads * head_size])
}
