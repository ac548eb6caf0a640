//! [`LanguageModel`]: logits for every position of a token sequence.

use crate::Sampler;
use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use std::ops::ControlFlow;
use tinygpt_layers::{capture_attention, AttentionMap, KvCache, Layer};

/// `idx -> token_embedding (+ position_embedding) -> layers -> lm_head -> logits`.
#[derive(Module, Debug)]
pub struct LanguageModel<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub position_embedding: Option<Embedding<B>>,
    pub layers: Vec<Layer<B>>,
    pub lm_head: Option<Linear<B>>,
    /// The lm_head is the token embedding, transposed (GPT-2's weight tying): its gradient is
    /// the sum of both uses'.
    pub tied_head: bool,
    pub block_size: usize,
    /// `[layers, 2]`: before layer `i`, `x = x0_mix[i, 0]·x + x0_mix[i, 1]·x0`, `x0` the
    /// embedding (`model.x0_skip`).
    pub x0_mix: Option<Param<Tensor<B, 2>>>,
    /// `cap · tanh(logits / cap)` (`model.logit_softcap`).
    pub logit_softcap: Option<f64>,
}

/// `embedding.forward(ids)`; on ndarray through [`tinygpt_kernels::embedding`].
fn lookup<B: Backend>(embedding: &Embedding<B>, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    tinygpt_kernels::embedding(embedding.weight.val(), ids)
        .unwrap_or_else(|(_, ids)| embedding.forward(ids))
}

impl<B: Backend> LanguageModel<B> {
    /// `[batch, time]` token ids (time ≤ block_size) -> `[batch, time, vocab_size]` logits.
    pub fn forward(&self, idx: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x0 = self.embed(idx, 0);
        let mut x = x0.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(self.mix_in_x0(i, x, &x0));
        }
        self.logits(x)
    }

    /// `a·x + b·x0` with layer `i`'s learned pair, when the model has the embedding skip.
    fn mix_in_x0(&self, i: usize, x: Tensor<B, 3>, x0: &Tensor<B, 3>) -> Tensor<B, 3> {
        let Some(mix) = &self.x0_mix else {
            return x;
        };
        let pair = mix.val().slice([i..i + 1, 0..2]);
        let a = pair.clone().slice([0..1, 0..1]).reshape([1, 1, 1]);
        let b = pair.slice([0..1, 1..2]).reshape([1, 1, 1]);
        x * a + x0.clone() * b
    }

    /// The attention weights of every attention layer for the sequence `idx` (`[1, time]`),
    /// each with the index of the layer it belongs to (a Block holds one attention layer).
    pub fn attention_maps(&self, idx: Tensor<B, 2, Int>) -> Vec<(usize, AttentionMap)> {
        let x0 = self.embed(idx, 0);
        let mut x = x0.clone();
        let mut maps = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let input = self.mix_in_x0(i, x, &x0);
            let (out, captured) = capture_attention(|| layer.forward(input));
            maps.extend(captured.into_iter().map(|map| (i, map)));
            x = out;
        }
        maps
    }

    /// The same model for a shorter context: the first `block_size` position embeddings are
    /// kept (nanoGPT's `crop_block_size`, to fine-tune GPT-2 on shorter windows).
    pub fn crop_block_size(mut self, block_size: usize) -> Self {
        assert!(
            block_size <= self.block_size,
            "cannot grow the context from {} to {block_size}",
            self.block_size
        );
        if let Some(positions) = &mut self.position_embedding {
            let weight = positions.weight.val();
            let [_, width] = weight.dims();
            // Detached: a new parameter must be a leaf of the autodiff graph.
            positions.weight = Param::from_tensor(weight.slice([0..block_size, 0..width]).detach());
        }
        self.block_size = block_size;
        self
    }

    /// Token embedding plus the position embedding of positions `start..start + time`.
    fn embed(&self, idx: Tensor<B, 2, Int>, start: usize) -> Tensor<B, 3> {
        let [_, time] = idx.dims();
        assert!(
            start + time <= self.block_size,
            "positions {start}..{} run past block_size {}",
            start + time,
            self.block_size
        );
        let device = idx.device();
        let x = lookup(&self.token_embedding, idx);
        match &self.position_embedding {
            Some(position_embedding) => {
                let positions =
                    Tensor::<B, 1, Int>::arange(start as i64..(start + time) as i64, &device)
                        .unsqueeze::<2>();
                x + lookup(position_embedding, positions)
            }
            None => x,
        }
    }

    /// The lm_head (or the tied embedding, or the last layer's output), soft-capped if the
    /// model says so.
    fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let logits = self.raw_logits(x);
        match self.logit_softcap {
            Some(cap) => logits.div_scalar(cap).tanh().mul_scalar(cap),
            None => logits,
        }
    }

    /// The lm_head, when there is one; otherwise the last layer's output are the logits.
    fn raw_logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(lm_head) => tinygpt_layers::linear::per_position(lm_head, x),
            None if self.tied_head => {
                let [batch, time, width] = x.dims();
                let weight = self.token_embedding.weight.val();
                let vocab = weight.dims()[0];
                let x = x.reshape([batch * time, width]);
                // `x · Wᵀ`. ndarray copies a transposed matrix into standard layout before
                // multiplying (GPT-2's 50,257 x 768 embedding for every new token made generation
                // 14x slower), so there the kernel reads the transpose through strides.
                let logits = tinygpt_kernels::linear_transposed(x, weight)
                    .unwrap_or_else(|(x, weight)| x.matmul(weight.transpose()));
                logits.reshape([batch, time, vocab])
            }
            None => x,
        }
    }

    /// Mean cross-entropy of the next-token predictions: `(logits, loss)`.
    pub fn forward_loss(
        &self,
        idx: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Tensor<B, 1>) {
        let logits = self.forward(idx);
        let loss = cross_entropy(logits.clone(), targets);
        (logits, loss)
    }

    /// Logits for the newest positions `idx` (`[batch, new]`), the earlier ones' keys and values
    /// read from and added to `cache`. Positions continue from `cache.len()`; the total must stay
    /// within `block_size`.
    pub fn forward_cached(
        &self,
        idx: Tensor<B, 2, Int>,
        cache: &mut GenerationCache<B>,
    ) -> Tensor<B, 3> {
        let x = self.hidden_cached(idx, cache);
        self.logits(x)
    }

    /// The last layer's output for the newest positions, the cache updated.
    fn hidden_cached(
        &self,
        idx: Tensor<B, 2, Int>,
        cache: &mut GenerationCache<B>,
    ) -> Tensor<B, 3> {
        let [_, new] = idx.dims();
        let x0 = self.embed(idx, cache.len);
        let mut x = x0.clone();
        cache.layers.resize_with(self.layers.len(), || None);
        for (i, (layer, slot)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            x = layer.forward_cached(self.mix_in_x0(i, x, &x0), slot);
        }
        cache.len += new;
        x
    }

    /// [`LanguageModel::forward_cached`]'s logits for the last position only: sampling needs no
    /// others, and with GPT-2's 50,257-token head the others cost a third of a long prompt's
    /// forward pass (Hugging Face's `generate` skips them too, `logits_to_keep=1`).
    fn last_logits_cached(
        &self,
        idx: Tensor<B, 2, Int>,
        cache: &mut GenerationCache<B>,
    ) -> Tensor<B, 3> {
        let x = self.hidden_cached(idx, cache);
        let [batch, time, width] = x.dims();
        self.logits(x.slice([0..batch, time - 1..time, 0..width]))
    }

    /// The last position's logits after reading `tokens` on top of `cache`.
    pub(crate) fn last_logits_of(
        &self,
        tokens: &[usize],
        cache: &mut GenerationCache<B>,
    ) -> Tensor<B, 3> {
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        self.last_logits_cached(self.tokens(&ids), cache)
    }

    /// Continues `prompt` by `max_new_tokens` sampled tokens and returns them.
    pub fn generate(
        &self,
        prompt: &[usize],
        max_new_tokens: usize,
        sampler: &mut Sampler,
    ) -> Vec<usize> {
        let mut generated = Vec::with_capacity(max_new_tokens.min(1 << 16));
        self.generate_with(prompt, max_new_tokens, sampler, |token| {
            generated.push(token);
            ControlFlow::Continue(())
        });
        generated
    }

    /// Continues `prompt` by `max_new_tokens` sampled tokens, handing each to `on_token` as it
    /// is produced; `on_token` may stop early with `ControlFlow::Break`. Only the last
    /// `block_size` tokens are kept as context, so memory stays bounded however long the
    /// generation.
    ///
    /// Keys and values are cached, so each new token costs one position's forward pass. Once the
    /// context is longer than `block_size` the window slides, every position embedding shifts,
    /// and the window is encoded afresh: the tokens are the same as
    /// [`LanguageModel::generate_uncached_with`]'s.
    pub fn generate_with(
        &self,
        prompt: &[usize],
        max_new_tokens: usize,
        sampler: &mut Sampler,
        mut on_token: impl FnMut(usize) -> ControlFlow<()>,
    ) {
        let mut context = self.initial_context(prompt);
        let mut cache = GenerationCache::default();
        let mut logits = self.last_logits_cached(self.tokens(&context), &mut cache);
        for _ in 0..max_new_tokens {
            let token = sampler.sample(&last_position(logits));
            if on_token(token).is_break() {
                return;
            }
            context.push(token as i64);
            if context.len() > self.block_size {
                context.drain(..context.len() - self.block_size);
                cache = GenerationCache::default();
                logits = self.last_logits_cached(self.tokens(&context), &mut cache);
            } else {
                logits = self.last_logits_cached(self.tokens(&[token as i64]), &mut cache);
            }
        }
    }

    /// [`LanguageModel::generate_with`] without the cache: every token re-encodes the whole
    /// context window, as the tutorial's `generate` does. For comparisons and benchmarks.
    pub fn generate_uncached_with(
        &self,
        prompt: &[usize],
        max_new_tokens: usize,
        sampler: &mut Sampler,
        mut on_token: impl FnMut(usize) -> ControlFlow<()>,
    ) {
        let mut context = self.initial_context(prompt);
        for _ in 0..max_new_tokens {
            let token = sampler.sample(&last_position(self.forward(self.tokens(&context))));
            if on_token(token).is_break() {
                return;
            }
            context.push(token as i64);
            context.drain(..context.len().saturating_sub(self.block_size));
        }
    }

    /// The last `block_size` prompt tokens; token 0 (a newline in Tiny Shakespeare) for an empty
    /// prompt, as the tutorial starts.
    fn initial_context(&self, prompt: &[usize]) -> Vec<i64> {
        let keep_from = prompt.len().saturating_sub(self.block_size);
        let context: Vec<i64> = prompt[keep_from..].iter().map(|&t| t as i64).collect();
        if context.is_empty() {
            vec![0]
        } else {
            context
        }
    }

    fn tokens(&self, ids: &[i64]) -> Tensor<B, 2, Int> {
        Tensor::from_data(
            TensorData::new(ids.to_vec(), [1, ids.len()]),
            &self.token_embedding.weight.device(),
        )
    }
}

/// The keys and values of every attention layer during generation, and how many positions they
/// hold.
#[derive(Debug, Clone)]
pub struct GenerationCache<B: Backend> {
    layers: Vec<Option<KvCache<B>>>,
    len: usize,
}

impl<B: Backend> Default for GenerationCache<B> {
    fn default() -> Self {
        Self {
            layers: Vec::new(),
            len: 0,
        }
    }
}

impl<B: Backend> GenerationCache<B> {
    /// Keeps the first `len` positions only (a conversation whose later text changed).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        if len == 0 {
            *self = Self::default();
            return;
        }
        for cache in self.layers.iter_mut().flatten() {
            let [batch, heads, _, head_size] = cache.keys.dims();
            let keep = [0..batch, 0..heads, 0..len, 0..head_size];
            cache.keys = cache.keys.clone().slice(keep.clone());
            cache.values = cache.values.clone().slice(keep);
        }
        self.len = len;
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The last position's logits of a `[1, time, vocab]` tensor, as f32.
pub(crate) fn last_position<B: Backend>(logits: Tensor<B, 3>) -> Vec<f32> {
    let [_, time, vocab] = logits.dims();
    logits
        .slice([0..1, time - 1..time, 0..vocab])
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("logits convert to f32")
}

/// Mean cross-entropy between `[batch, time, vocab]` logits and `[batch, time]` targets, as
/// PyTorch's `F.cross_entropy` over the flattened positions.
///
/// Written so that each tensor feeds at most two consumers: autodiff sums three or more
/// gradient contributions in an order that varies between runs, and float addition is not
/// associative, so Burn's `log_softmax` made training on ndarray irreproducible. Shifting by the
/// detached row maximum is exact: the loss does not depend on the shift.
///
/// On flex and ndarray this runs as one fused kernel ([`tinygpt_kernels::cross_entropy`]),
/// [`plain_cross_entropy`]
/// everywhere else.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [batch, time, vocab] = logits.dims();
    let logits = logits.reshape([batch * time, vocab]);
    match tinygpt_kernels::cross_entropy(logits, targets.reshape([batch * time])) {
        Ok(loss) => loss,
        Err((logits, targets)) => plain_cross_entropy(logits, targets),
    }
}

/// [`cross_entropy`] as tensor ops over `[rows, vocab]` logits and `[rows]` targets, on every
/// backend.
pub fn plain_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let [rows, _] = logits.dims();
    let shift = logits.clone().detach().max_dim(1);
    let shifted = logits - shift;
    // exact::ln: Burn's log gradient goes through ndarray's reciprocal estimate.
    let log_sum_exp = tinygpt_layers::exact::ln(shifted.clone().exp().sum_dim(1));
    let picked = shifted.gather(1, targets.reshape([rows, 1]));
    (log_sum_exp - picked).mean()
}
