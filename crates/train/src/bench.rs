//! Timing training steps (forward, backward, AdamW) on any backend, with nanoGPT's model-FLOPs
//! estimate so throughput can be compared with the hardware's peak.

use crate::parallel::{self, Cluster};
use crate::{RunOptimizer, TrainError, TrainingSpec};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Int, Tensor};
use serde::Serialize;
use std::time::{Duration, Instant};
use tinygpt_layers::LayerConfig;
use tinygpt_model::{LanguageModel, ModelConfig};

/// Median and spread of timed training steps.
#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    pub backend: String,
    pub batch_size: usize,
    pub block_size: usize,
    pub parameters: usize,
    /// The shape, for running the same model elsewhere (`reference/gpt_step.py`).
    pub shape: ModelShape,
    pub steps: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub tokens_per_sec: f64,
    /// Achieved model FLOP/s (6N + attention per token, as nanoGPT's `estimate_mfu`), in GFLOP/s.
    pub gflops: f64,
    /// Data-parallel peers sharing each step's batch (1: one device).
    pub peers: usize,
    /// Median time of the gradient all-reduce within a step (data-parallel only).
    pub all_reduce_ms: Option<f64>,
}

/// A config's model as `reference/gpt_step.py` describes it: `blocks` gpt.py Blocks of
/// `n_head` heads, or the bigram table when there are none.
#[derive(Debug, Clone, Serialize)]
pub struct ModelShape {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub blocks: usize,
    pub dropout: f64,
    pub bigram: bool,
}

impl ModelShape {
    pub fn of(config: &ModelConfig) -> Self {
        let blocks: Vec<_> = config
            .layers
            .iter()
            .filter_map(|layer| match &layer.config {
                LayerConfig::Block(block) => Some(block),
                _ => None,
            })
            .collect();
        Self {
            vocab_size: config.vocab_size,
            n_embd: config.n_embd,
            n_head: blocks.first().map_or(0, |b| b.attention.n_head),
            blocks: blocks.len(),
            dropout: blocks.first().map_or(0.0, |b| b.attention.dropout),
            bigram: config.layers.is_empty() && !config.lm_head && !config.position_embedding,
        }
    }
}

/// Training FLOPs per token: 6 per weight (forward + backward) plus attention's
/// `12 * heads * head_size * T` per attention layer, as nanoGPT's `estimate_mfu`.
pub fn flops_per_token(config: &ModelConfig, parameters: usize) -> f64 {
    let t = config.block_size as f64;
    let position = if config.position_embedding {
        config.block_size * config.n_embd
    } else {
        0
    };
    let attention: f64 = config
        .layers
        .iter()
        .map(|layer| match &layer.config {
            LayerConfig::Block(block) => {
                (block.attention.n_head * block.attention.head_size) as f64
            }
            LayerConfig::MultiHeadAttention(mha) => (mha.n_head * mha.head_size) as f64,
            LayerConfig::Head(head) => head.head_size as f64,
            LayerConfig::LlamaBlock(block) => {
                (block.attention.n_head * block.attention.head_size) as f64
            }
            LayerConfig::Attention(attention) => (attention.n_head * attention.head_size) as f64,
            _ => 0.0,
        })
        .sum();
    6.0 * (parameters - position) as f64 + 12.0 * attention * t
}

/// How many steps a bench runs, and on what batch.
#[derive(Debug, Clone, Copy)]
pub struct StepPlan {
    pub batch_size: usize,
    /// Untimed steps first (allocation, compilation, autotuning).
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
}

/// Times `plan.steps` training steps after `plan.warmup` untimed ones, on random tokens, and
/// reports each step's time to `on_step` as it ends. A step is the trainer's own: forward,
/// backward and `apply_update` with the run's optimizer settings.
pub fn time_train_steps<B: AutodiffBackend>(
    config: &ModelConfig,
    training: &TrainingSpec,
    plan: StepPlan,
    device: &B::Device,
    backend: &str,
    mut on_step: impl FnMut(usize, Duration),
) -> StepTiming {
    B::seed(device, 0);
    let mut model: LanguageModel<B> = config.init(device);
    let parameters = model.num_params();
    let mut optimizer = RunOptimizer::new(&model, training);
    let StepPlan {
        batch_size,
        warmup,
        steps,
    } = plan;
    let tokens = || {
        Tensor::<B, 2>::random(
            [batch_size, config.block_size],
            Distribution::Uniform(0.0, config.vocab_size as f64),
            device,
        )
        .int()
    };
    let (x, y): (Tensor<B, 2, Int>, Tensor<B, 2, Int>) = (tokens(), tokens());
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let started = Instant::now();
        let (_, loss) = model.forward_loss(x.clone(), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(model, grads, training.learning_rate, training);
        B::sync(device).expect("the device finishes the step");
        let took = started.elapsed();
        on_step(i, took);
        if i >= warmup {
            times.push(took);
        }
    }
    summarise(times, config, parameters, batch_size, backend)
}

fn summarise(
    mut times: Vec<Duration>,
    config: &ModelConfig,
    parameters: usize,
    batch_size: usize,
    backend: &str,
) -> StepTiming {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = if times.is_empty() {
        0.0
    } else if times.len() % 2 == 1 {
        ms(times[times.len() / 2])
    } else {
        (ms(times[times.len() / 2 - 1]) + ms(times[times.len() / 2])) / 2.0
    };
    let tokens = (batch_size * config.block_size) as f64;
    let tokens_per_sec = if median > 0.0 {
        tokens / (median / 1e3)
    } else {
        0.0
    };
    StepTiming {
        backend: backend.to_string(),
        batch_size,
        block_size: config.block_size,
        parameters,
        shape: ModelShape::of(config),
        steps: times.len(),
        median_ms: median,
        min_ms: times.first().map_or(0.0, |&d| ms(d)),
        max_ms: times.last().map_or(0.0, |&d| ms(d)),
        tokens_per_sec,
        gflops: tokens_per_sec * flops_per_token(config, parameters) / 1e9,
        peers: 1,
        all_reduce_ms: None,
    }
}

fn median_ms(mut times: Vec<Duration>) -> f64 {
    times.sort();
    match times.len() {
        0 => 0.0,
        n if n % 2 == 1 => times[n / 2].as_secs_f64() * 1e3,
        n => (times[n / 2 - 1] + times[n / 2]).as_secs_f64() * 1e3 / 2.0,
    }
}

/// [`time_train_steps`] with the batch shared by one data-parallel peer per device, as
/// `train --devices` runs it: each peer's forward and backward on its rows, the gradient
/// all-reduce, and the update. Rank 0's step and all-reduce times are reported.
pub fn time_parallel_train_steps<B: AutodiffBackend>(
    config: &ModelConfig,
    training: &TrainingSpec,
    plan: StepPlan,
    devices: &[B::Device],
    backend: &str,
) -> Result<StepTiming, TrainError> {
    let peers = devices.len();
    if peers == 0 || !plan.batch_size.is_multiple_of(peers) {
        return Err(crate::ClusterError::BatchDoesNotDivide {
            batch_size: plan.batch_size,
            peers,
        }
        .into());
    }
    B::seed(&devices[0], 0);
    let model: LanguageModel<B> = config.init(&devices[0]);
    crate::trainer::materialize(&model);
    let parameters = model.num_params();
    let rows = plan.batch_size / peers;
    let results =
        parallel::run_peers::<B, _, _>(devices, &Cluster::default(), |_, device, peer| {
            let mut model = model.clone().fork(device);
            let mut optimizer = RunOptimizer::new(&model, training);
            let tokens = || {
                Tensor::<B, 2>::random(
                    [rows, config.block_size],
                    Distribution::Uniform(0.0, config.vocab_size as f64),
                    device,
                )
                .int()
            };
            let (x, y): (Tensor<B, 2, Int>, Tensor<B, 2, Int>) = (tokens(), tokens());
            let mut steps = Vec::with_capacity(plan.steps);
            let mut reduces = Vec::with_capacity(plan.steps);
            for i in 0..plan.warmup + plan.steps {
                let started = Instant::now();
                let (_, loss) = model.forward_loss(x.clone(), y.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                B::sync(device).expect("the device finishes the backward pass");
                let reduce_started = Instant::now();
                let control = Tensor::zeros([3], device);
                let (grads, _) = parallel::all_reduce_gradients(&model, grads, control, peer)?;
                B::sync(device).expect("the device finishes the all-reduce");
                let reduce = reduce_started.elapsed();
                model = optimizer.step(model, grads, training.learning_rate, training);
                B::sync(device).expect("the device finishes the step");
                if i >= plan.warmup {
                    steps.push(started.elapsed());
                    reduces.push(reduce);
                }
            }
            Ok((steps, reduces))
        })?;
    let mut results = results.into_iter();
    let (steps, reduces) = results.next().expect("rank 0")?;
    for other in results {
        other?;
    }
    Ok(StepTiming {
        peers,
        all_reduce_ms: Some(median_ms(reduces)),
        ..summarise(steps, config, parameters, plan.batch_size, backend)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunConfig;

    #[test]
    fn flops_match_nanogpt_for_gpt_ron() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/gpt.ron");
        let config = RunConfig::load(&path).unwrap().model.resolve(65).unwrap();
        // 6 * (10,788,929 - 256 * 384) + 12 * 6 layers * 384 * 256
        let expected = 6.0 * (10_788_929.0 - 98_304.0) + 12.0 * 6.0 * 384.0 * 256.0;
        assert_eq!(flops_per_token(&config, 10_788_929), expected);
    }
}
