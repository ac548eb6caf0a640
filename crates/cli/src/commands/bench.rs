//! `tinygpt bench`: median training-step time of a config's model on random tokens, or with
//! `--generation` a model's generation speed (prefill and new tokens).

use super::{check_memory, is_model_path};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::ops::ControlFlow;
use std::path::PathBuf;
use tinygpt_backends::Model;
use tinygpt_model::Sampler;
use tinygpt_train::bench::StepPlan;
use tinygpt_train::memory::{group_digits, human_bytes};
use tinygpt_train::{open_run, BackendKind, Devices, MemoryEstimate, RunConfig};

#[derive(Args)]
pub struct BenchArgs {
    /// Go on even when the memory estimate is far over what the machine has.
    #[arg(long)]
    skip_memory_check: bool,
    /// A RON config, e.g. configs/gpt.ron.
    config: PathBuf,
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first (allocation, autotuning).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Print each step's time to stderr as it finishes (the first steps show compile and
    /// autotune time on CUDA).
    #[arg(long)]
    progress: bool,
    /// Override the config's batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Run plain tensor ops instead of the fused CPU kernels (flex, ndarray), to compare.
    #[arg(long)]
    plain_kernels: bool,
    /// Vocabulary size of the model (Tiny Shakespeare has 65 characters).
    #[arg(long, default_value_t = 65)]
    vocab_size: usize,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
    /// Time data-parallel steps: the batch shared by this many CPU peers (or these GPUs), with
    /// the gradient all-reduce's share of a step.
    #[arg(long, value_name = "N|LIST")]
    devices: Option<Devices>,
    /// Time generation instead of training: CONFIG is then a model (run directory, .ckpt or
    /// Hugging Face directory), or a config whose model gets random weights (the same cost);
    /// --steps runs are timed after --warmup ones.
    #[arg(long)]
    generation: bool,
    /// With --generation: prompt tokens before the new ones.
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    /// With --generation: new tokens, greedy, KV cache on.
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// With --generation: the long prompt whose forward pass (prefill) to the first new token is
    /// timed.
    #[arg(long, default_value_t = 512)]
    prefill_tokens: usize,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    tinygpt_model::set_cpu_kernels(!args.plain_kernels);
    if args.generation {
        return generation(&args);
    }
    let config = RunConfig::load(&args.config)?;
    let model = config
        .model
        .resolve(args.vocab_size)
        .with_context(|| format!("{}", args.config.display()))?;
    let batch_size = args.batch_size.unwrap_or(config.training.batch_size);
    let engine = tinygpt_backends::engine(args.backend, args.devices.as_ref())?;
    let peers = engine.peers();
    let need = MemoryEstimate::training(&model, batch_size / peers.max(1), args.backend)
        .replicas(if args.backend.is_cpu() { peers } else { 1 });
    check_memory(
        &need,
        args.backend,
        "this benchmark",
        "Lower --batch-size or the model's size",
        args.skip_memory_check,
    )?;
    // What the model, its optimizer and the steps add to the process: the peak afterwards less
    // what it held before any of them existed.
    let resident_before = tinygpt_train::memory::resident_memory().map(|(_, now)| now);
    let plan = StepPlan {
        batch_size,
        warmup: args.warmup,
        steps: args.steps,
    };
    let timing = engine.time_train_steps(&model, &config.training, plan, &mut |i, took| {
        if args.progress {
            let phase = if i < args.warmup { "warm-up" } else { "timed" };
            eprintln!("step {i} ({phase}): {:.1} ms", took.as_secs_f64() * 1e3);
        }
    })?;
    let peak_growth = tinygpt_train::memory::resident_memory()
        .zip(resident_before)
        .map(|((peak, _), before)| peak.saturating_sub(before));
    if args.json {
        let mut json = serde_json::to_value(&timing)?;
        json["memory"] = serde_json::json!({
            "estimated_bytes": need.total(),
            "peak_growth_bytes": peak_growth,
        });
        println!("{json}");
        return Ok(());
    }
    println!(
        "{}: {} parameters, batch {} x {} on {}: median {:.2} ms/step (min {:.2}, max {:.2}) \
         over {} steps, {:.0} tokens/s, {:.1} GFLOP/s",
        args.config.display(),
        group_digits(timing.parameters as u64),
        timing.batch_size,
        timing.block_size,
        timing.backend,
        timing.median_ms,
        timing.min_ms,
        timing.max_ms,
        timing.steps,
        timing.tokens_per_sec,
        timing.gflops
    );
    if let Some(all_reduce) = timing.all_reduce_ms {
        println!(
            "{} peers: the gradient all-reduce took a median {:.2} ms, {:.1}% of a step",
            timing.peers,
            all_reduce,
            100.0 * all_reduce / timing.median_ms.max(1e-9)
        );
    }
    if args.backend.is_cpu() {
        println!(
            "memory: estimated {}, measured {} (peak resident growth)",
            human_bytes(need.total()),
            peak_growth.map_or("unknown here".into(), |bytes| human_bytes(bytes as f64))
        );
    }
    Ok(())
}

/// Medians of the generation benchmark.
#[derive(serde::Serialize)]
struct GenerationTiming {
    backend: String,
    prompt_tokens: usize,
    new_tokens: usize,
    generate_ms: f64,
    tokens_per_sec: f64,
    prefill_tokens: usize,
    prefill_ms: f64,
}

fn generation(args: &BenchArgs) -> Result<()> {
    let resident_before = tinygpt_train::memory::resident_memory().map(|(_, now)| now);
    let engine = tinygpt_backends::engine(args.backend, None)?;
    let model: Box<dyn Model> = if is_model_path(&args.config) {
        let run = open_run(&args.config)?;
        check_generation_memory(args, &run.model)?;
        engine.load(&run)?
    } else {
        let config = RunConfig::load(&args.config)?;
        let model = config
            .model
            .resolve(args.vocab_size)
            .with_context(|| format!("{}", args.config.display()))?;
        check_generation_memory(args, &model)?;
        engine.init(&model, 0)
    };
    let block_size = model.config().block_size;
    if args.prompt_tokens + args.new_tokens > block_size || args.prefill_tokens > block_size {
        bail!(
            "--prompt-tokens + --new-tokens and --prefill-tokens must fit the context of \
             {block_size} tokens"
        );
    }
    let timing = time_generation(args, model.as_ref());
    let peak_growth = tinygpt_train::memory::resident_memory()
        .zip(resident_before)
        .map(|((peak, _), before)| peak.saturating_sub(before));
    if args.json {
        let mut json = serde_json::to_value(&timing)?;
        json["peak_growth_bytes"] = serde_json::json!(peak_growth);
        println!("{json}");
    } else {
        println!(
            "{} on {}: {} new tokens after a {}-token prompt in {:.1} ms ({:.1} tokens/s); \
             prefill of {} tokens to the first new token {:.1} ms (medians of {}); peak resident \
             growth {}",
            args.config.display(),
            timing.backend,
            timing.new_tokens,
            timing.prompt_tokens,
            timing.generate_ms,
            timing.tokens_per_sec,
            timing.prefill_tokens,
            timing.prefill_ms,
            args.steps,
            peak_growth.map_or("unknown here".into(), |bytes| human_bytes(bytes as f64))
        );
    }
    Ok(())
}

fn check_generation_memory(args: &BenchArgs, model: &tinygpt_model::ModelConfig) -> Result<()> {
    check_memory(
        &MemoryEstimate::generation(model, args.backend),
        args.backend,
        "this benchmark",
        "The model is too large for this machine's memory",
        args.skip_memory_check,
    )
}

fn time_generation(args: &BenchArgs, model: &dyn Model) -> GenerationTiming {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let vocab = model.config().vocab_size;
    let mut random =
        |n: usize| -> Vec<usize> { (0..n).map(|_| rng.random_range(0..vocab)).collect() };
    let (prompt, long_prompt) = (
        random(args.prompt_tokens.max(1)),
        random(args.prefill_tokens.max(1)),
    );
    let time = |prompt: &[usize], new: usize| {
        let started = std::time::Instant::now();
        let mut produced = 0;
        model.generate(prompt, new, &mut Sampler::greedy(), &mut |_| {
            produced += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(produced, new);
        started.elapsed().as_secs_f64() * 1e3
    };
    let median = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    for _ in 0..args.warmup {
        time(&prompt, args.new_tokens);
        time(&long_prompt, 1);
    }
    let generate_ms = median(
        (0..args.steps)
            .map(|_| time(&prompt, args.new_tokens))
            .collect(),
    );
    let prefill_ms = median((0..args.steps).map(|_| time(&long_prompt, 1)).collect());
    GenerationTiming {
        backend: args.backend.name().into(),
        prompt_tokens: prompt.len(),
        new_tokens: args.new_tokens,
        generate_ms,
        tokens_per_sec: args.new_tokens as f64 / (generate_ms / 1e3),
        prefill_tokens: long_prompt.len(),
        prefill_ms,
    }
}
