//! Compares the CPU backends on the tutorial's final model (`configs/transformer.ron`, batch 32,
//! block 8): a forward pass, and a full training step (forward, backward, AdamW). Also times
//! generation with and without the key/value cache at block_size 256 (nanogpt_cpu's model).
//!
//! The attention group times one attention layer's forward and backward pass on flex, through
//! the fused CPU kernel and as plain tensor ops.
//!
//! `cargo bench -p tinygpt-benches`; add `--features cuda` on a GPU machine to include CUDA.

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use std::path::Path;
use tinygpt_backends::{compiled_in, dispatch, BackendKind, BackendTask};
use tinygpt_model::{LanguageModel, ModelConfig};
use tinygpt_train::{RunConfig, RunOptimizer, TrainingSpec};

// The allocator the `tinygpt` binary uses, so the benches time what users run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VOCAB: usize = 65;
const BATCH: usize = 32;

fn transformer() -> RunConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/transformer.ron");
    RunConfig::load(&path).expect("configs/transformer.ron parses")
}

struct Bench<'a> {
    c: &'a mut Criterion,
    config: &'a ModelConfig,
    training: &'a TrainingSpec,
}

impl BackendTask for Bench<'_> {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device, kind: BackendKind) {
        let config = self.config;
        let tokens = |device: &B::Device| {
            Tensor::<B, 2>::random(
                [BATCH, config.block_size],
                Distribution::Uniform(0.0, VOCAB as f64),
                device,
            )
            .int()
        };
        let mut model: LanguageModel<B> = config.init(&device);
        let (idx, targets): (Tensor<B, 2, Int>, Tensor<B, 2, Int>) =
            (tokens(&device), tokens(&device));

        let mut group = self.c.benchmark_group("transformer");
        let inference = model.valid();
        let inner_idx = idx.clone().inner();
        group.bench_function(format!("forward/{kind}"), |b| {
            b.iter(|| {
                let logits = inference.forward(inner_idx.clone());
                B::InnerBackend::sync(&logits.device()).expect("sync");
            })
        });

        // The trainer's own update: its optimizer settings and decoupled weight decay.
        let training = self.training;
        let mut optimizer = RunOptimizer::new(&model, training);
        group.bench_function(format!("train_step/{kind}"), |b| {
            b.iter(|| {
                let (_, loss) = model.forward_loss(idx.clone(), targets.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optimizer.step(model.clone(), grads, training.learning_rate, training);
                B::sync(&device).expect("sync");
            })
        });
        group.finish();
    }
}

/// 255 new tokens after a 1-token prompt fill a 256-position window: the cache's best case that
/// still never slides.
fn generation(c: &mut Criterion) {
    tinygpt::keep_freed_memory();
    use std::ops::ControlFlow;
    use tinygpt_model::{Sampler, Sampling};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/nanogpt_cpu.ron");
    let mut config = RunConfig::load(&path).expect("configs/nanogpt_cpu.ron parses");
    config.model.block_size = 256;
    let config = config.model.resolve(VOCAB).expect("valid");
    let model: LanguageModel<burn::backend::Flex> = config.init(&Default::default());
    let mut group = c.benchmark_group("generate_255_tokens_block_256");
    group.sample_size(10);
    for cached in [true, false] {
        let name = if cached {
            "kv_cache/flex"
        } else {
            "recompute/flex"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut sampler = Sampler::new(Sampling::default(), 1);
                let mut n = 0;
                let count = |_| {
                    n += 1;
                    ControlFlow::Continue(())
                };
                if cached {
                    model.generate_with(&[0], 255, &mut sampler, count);
                } else {
                    model.generate_uncached_with(&[0], 255, &mut sampler, count);
                }
                n
            })
        });
    }
    group.finish();
}

/// Forward + backward of causal self-attention from a `[batch, time, 3 * width]` projection, at
/// transformer.ron's and nanogpt_cpu.ron's sizes: the fused flex kernel against plain tensor ops.
fn attention(c: &mut Criterion) {
    tinygpt::keep_freed_memory();
    use burn::nn::DropoutConfig;
    use tinygpt_layers::attention::{plain_causal_attention, Heads};
    type B = burn::backend::Autodiff<burn::backend::Flex>;
    let device = Default::default();
    let mut group = c.benchmark_group("attention_forward_backward");
    for (name, batch, time, heads, head_size, dropout) in [
        ("transformer", 32, 8, 4, 8, 0.0),
        ("nanogpt_cpu", 12, 64, 4, 32, 0.1),
    ] {
        let dropout = DropoutConfig::new(dropout).init();
        let qkv = Tensor::<B, 3>::random(
            [batch, time, 3 * heads * head_size],
            Distribution::Normal(0.0, 1.0),
            &device,
        )
        .require_grad();
        for fused in [true, false] {
            let path = if fused { "fused" } else { "plain" };
            group.bench_function(format!("{name}/{path}/flex"), |b| {
                b.iter(|| {
                    let out = if fused {
                        tinygpt_kernels::attention(qkv.clone(), heads, heads, &dropout)
                            .unwrap_or_else(|_| panic!("flex runs the fused kernel"))
                    } else {
                        plain_causal_attention(qkv.clone(), Heads::multi(heads), &dropout, None)
                    };
                    out.sum().backward()
                })
            });
        }
    }
    group.finish();
}

fn backends(c: &mut Criterion) {
    tinygpt::keep_freed_memory();
    let run = transformer();
    let config = run.model.resolve(VOCAB).expect("transformer.ron is valid");
    for kind in BackendKind::ALL {
        if !compiled_in(kind) {
            continue;
        }
        if let Err(e) = dispatch(
            kind,
            Bench {
                c,
                config: &config,
                training: &run.training,
            },
        ) {
            eprintln!("skipping {kind}: {e}");
        }
    }
}

criterion_group!(benches, backends, attention, generation);
criterion_main!(benches);
