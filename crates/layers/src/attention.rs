//! Scaled dot-product attention with a causal mask, shared by [`Head`](crate::Head) and
//! [`MultiHeadAttention`](crate::MultiHeadAttention).

use burn::nn::Dropout;
use burn::tensor::{activation::softmax, backend::Backend, Bool, Tensor};

/// `softmax(q kᵀ / sqrt(head_size) + causal mask) v` over `[batch, heads, time, head_size]`.
///
/// Position `t` attends to positions `0..=t` only, so no token sees the future.
pub fn causal_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    dropout: &Dropout,
) -> Tensor<B, 4> {
    let [batch, heads, time, head_size] = q.dims();
    let scores = q.matmul(k.swap_dims(2, 3)) * (head_size as f64).powf(-0.5);
    // Burn's tril_mask is true strictly above the diagonal: exactly the future positions.
    // mask_fill does not broadcast, so the mask is expanded to the scores' shape.
    let future = Tensor::<B, 2, Bool>::tril_mask([time, time], 0, &scores.device())
        .unsqueeze::<4>()
        .expand([batch, heads, time, time]);
    let weights = softmax(scores.mask_fill(future, f32::NEG_INFINITY), 3);
    dropout.forward(weights).matmul(v)
}

/// Causal self-attention from a fused projection: `qkv` is `[batch, time, 3 * heads * head_size]`
/// holding queries, keys and values side by side; returns `[batch, time, heads * head_size]`.
///
/// One fused projection rather than three also keeps training reproducible: autodiff sums the
/// gradients of a tensor's consumers in varying order, which is exact for two but not for three.
pub fn fused_causal_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    dropout: &Dropout,
) -> Tensor<B, 3> {
    let mut parts = qkv
        .chunk(3, 2)
        .into_iter()
        .map(|part| split_heads(part, heads));
    let (q, k, v) = match (parts.next(), parts.next(), parts.next()) {
        (Some(q), Some(k), Some(v)) => (q, k, v),
        _ => unreachable!("chunk(3) of a width divisible by 3 gives three parts"),
    };
    merge_heads(causal_attention(q, k, v, dropout))
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
