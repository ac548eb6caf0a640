//! [`LanguageModel`]: logits for every position of a token sequence.

use crate::{ModelConfig, Sampler};
use burn::module::Module;
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::log_softmax;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use tinygpt_layers::Layer;

/// `idx -> token_embedding (+ position_embedding) -> layers -> lm_head -> logits`.
#[derive(Module, Debug)]
pub struct LanguageModel<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub position_embedding: Option<Embedding<B>>,
    pub layers: Vec<Layer<B>>,
    pub lm_head: Option<Linear<B>>,
    pub block_size: usize,
}

/// One row of [`LanguageModel::summary`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSummary {
    pub name: String,
    pub detail: String,
    pub shape: String,
    pub params: usize,
}

impl<B: Backend> LanguageModel<B> {
    /// `[batch, time]` token ids (time ≤ block_size) -> `[batch, time, vocab_size]` logits.
    pub fn forward(&self, idx: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, time] = idx.dims();
        assert!(
            time <= self.block_size,
            "sequence of {time} tokens is longer than block_size {}",
            self.block_size
        );
        let device = idx.device();
        let mut x = self.token_embedding.forward(idx);
        if let Some(position_embedding) = &self.position_embedding {
            let positions = Tensor::<B, 1, Int>::arange(0..time as i64, &device).unsqueeze::<2>();
            x = x + position_embedding.forward(positions);
        }
        for layer in &self.layers {
            x = layer.forward(x);
        }
        match &self.lm_head {
            Some(lm_head) => lm_head.forward(x),
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

    /// Continues `prompt` by `max_new_tokens` sampled tokens, calling `on_token` with each as it
    /// is produced; returns the new tokens. The context is cropped to the last `block_size`
    /// tokens, so memory stays bounded however long the generation.
    pub fn generate(
        &self,
        prompt: &[usize],
        max_new_tokens: usize,
        sampler: &mut Sampler,
        mut on_token: impl FnMut(usize),
    ) -> Vec<usize> {
        let device = self.token_embedding.weight.device();
        let mut context: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        if context.is_empty() {
            // The tutorial starts from token 0 (a newline in Tiny Shakespeare).
            context.push(0);
        }
        let mut generated = Vec::with_capacity(max_new_tokens.min(1 << 20));
        for _ in 0..max_new_tokens {
            let start = context.len().saturating_sub(self.block_size);
            let window = &context[start..];
            let idx = Tensor::<B, 2, Int>::from_data(
                TensorData::new(window.to_vec(), [1, window.len()]),
                &device,
            );
            let logits = self.forward(idx);
            let [_, time, vocab] = logits.dims();
            let last = logits.slice([0..1, time - 1..time, 0..vocab]);
            let values: Vec<f32> = last
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("logits convert to f32");
            let token = sampler.sample(&values);
            on_token(token);
            generated.push(token);
            context.push(token as i64);
            if context.len() > 4 * self.block_size {
                context.drain(..context.len() - self.block_size);
            }
        }
        generated
    }

    /// The architecture, one row per part, with parameter counts.
    pub fn summary(&self, config: &ModelConfig) -> Vec<LayerSummary> {
        let mut rows = vec![LayerSummary {
            name: "token_embedding".into(),
            detail: format!("Embedding({}, {})", config.vocab_size, config.n_embd),
            shape: format!("[B, T] -> [B, T, {}]", config.n_embd),
            params: self.token_embedding.num_params(),
        }];
        if let Some(position_embedding) = &self.position_embedding {
            rows.push(LayerSummary {
                name: "position_embedding".into(),
                detail: format!("Embedding({}, {})", config.block_size, config.n_embd),
                shape: format!("[T] -> [T, {}]", config.n_embd),
                params: position_embedding.num_params(),
            });
        }
        for (i, (layer, resolved)) in self.layers.iter().zip(&config.layers).enumerate() {
            rows.push(LayerSummary {
                name: format!("layers[{i}]"),
                detail: ron::to_string(&resolved.spec)
                    .unwrap_or_else(|_| resolved.spec.name().into()),
                shape: format!(
                    "[B, T, {}] -> [B, T, {}]",
                    resolved.d_input,
                    resolved.config.d_output()
                ),
                params: layer.num_params(),
            });
        }
        if let Some(lm_head) = &self.lm_head {
            rows.push(LayerSummary {
                name: "lm_head".into(),
                detail: format!("Linear({}, {})", config.d_final(), config.vocab_size),
                shape: format!(
                    "[B, T, {}] -> [B, T, {}]",
                    config.d_final(),
                    config.vocab_size
                ),
                params: lm_head.num_params(),
            });
        }
        rows
    }
}

/// Mean cross-entropy between `[batch, time, vocab]` logits and `[batch, time]` targets, as
/// PyTorch's `F.cross_entropy` over the flattened positions.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [batch, time, vocab] = logits.dims();
    let log_probs = log_softmax(logits.reshape([batch * time, vocab]), 1);
    let picked = log_probs.gather(1, targets.reshape([batch * time, 1]));
    picked.mean().neg()
}
