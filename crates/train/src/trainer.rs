//! The training loop: the tutorial's AdamW loop with periodic loss estimates, metrics,
//! checkpoints and a final sample.

use crate::checkpoint::{
    prune_step_checkpoints, step_checkpoint_path, write_atomic, Checkpoint, CheckpointMeta,
    BEST_CHECKPOINT, CHECKPOINT_DIR,
};
use crate::metrics::{MetricsRow, MetricsWriter};
use crate::{BackendKind, Prepared, TrainError};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ElementConversion;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{rngs::StdRng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tinygpt_data::Split;
use tinygpt_model::{LanguageModel, Sampler, Sampling};
use tinygpt_tokenizer::Tokenizer;

/// How a run is carried out (as opposed to what is trained, which the config says).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub run_dir: PathBuf,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Print the loss table and sample to stdout.
    pub verbose: bool,
}

/// One `estimate_loss` result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossEstimate {
    pub step: usize,
    pub train: f64,
    pub val: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub run_dir: PathBuf,
    pub backend: BackendKind,
    pub parameters: usize,
    pub evaluations: Vec<LossEstimate>,
    /// Training time, excluding evaluation, checkpointing and sampling.
    pub train_time: Duration,
    pub wall_time: Duration,
    pub tokens_per_sec: f64,
    pub sample: String,
}

impl TrainReport {
    pub fn final_loss(&self) -> LossEstimate {
        *self
            .evaluations
            .last()
            .expect("every run evaluates at least once")
    }
}

type Recorder32 = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// Independent random streams per purpose and step, so every batch depends only on the seed
/// and the step: a resumed run draws exactly what an uninterrupted one would.
fn stream_rng(seed: u64, stream: u64, index: u64) -> StdRng {
    let mut z = seed
        ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

const TRAIN_STREAM: u64 = 1;
const EVAL_STREAM: u64 = 2;

/// Mean loss over `eval_iters` batches of each split, with the model in eval mode on the inner
/// (non-autodiff) backend: no graph is built and dropout is off.
pub fn estimate_loss<B: Backend>(
    model: &LanguageModel<B>,
    prepared: &Prepared,
    step: usize,
    device: &B::Device,
) -> LossEstimate {
    let t = &prepared.config.training;
    let block_size = prepared.model.block_size;
    let mean = |split: Split, stream: u64| {
        let mut rng = stream_rng(t.seed, EVAL_STREAM + stream, step as u64);
        let mut total = None;
        for _ in 0..t.eval_iters {
            let batch =
                prepared
                    .splits
                    .batch::<B>(split, t.batch_size, block_size, &mut rng, device);
            let (_, loss) = model.forward_loss(batch.inputs, batch.targets);
            total = Some(match total {
                Some(sum) => sum + loss,
                None => loss,
            });
        }
        let sum: f64 = total.expect("eval_iters >= 1").into_scalar().elem();
        sum / t.eval_iters as f64
    };
    LossEstimate {
        step,
        train: mean(Split::Train, 0),
        val: mean(Split::Val, 1 << 32),
    }
}

/// Trains the prepared model on backend `B` from scratch.
pub fn train<B: AutodiffBackend>(
    prepared: &Prepared,
    options: &TrainOptions,
    device: &B::Device,
    backend: BackendKind,
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    let config = &prepared.config;
    let t = &config.training;
    let o = &t.optimizer;
    let run_dir = &options.run_dir;
    std::fs::create_dir_all(run_dir.join(CHECKPOINT_DIR)).map_err(|source| TrainError::RunDir {
        path: run_dir.clone(),
        source,
    })?;
    let config_ron = config.to_ron();
    write_run_file(&run_dir.join("config.ron"), config_ron.as_bytes())?;
    let vocab_json = serde_json::to_vec_pretty(&prepared.tokenizer).expect("vocabulary serialises");
    write_run_file(&run_dir.join("vocab.json"), &vocab_json)?;

    B::seed(device, t.seed);
    let mut model: LanguageModel<B> = prepared.model.init(device);
    let parameters = model.num_params();
    let mut optimizer = AdamWConfig::new()
        .with_beta_1(o.beta1 as f32)
        .with_beta_2(o.beta2 as f32)
        .with_epsilon(o.eps as f32)
        .with_weight_decay(o.weight_decay as f32)
        .init::<B, LanguageModel<B>>();
    let mut metrics = MetricsWriter::create(&run_dir.join("metrics.csv"))?;

    let say = |line: String, bar: &ProgressBar| {
        if options.verbose {
            bar.suspend(|| println!("{line}"));
        }
    };
    let bar = progress_bar(t.max_iters, options.progress);
    say(
        format!(
            "training {parameters} parameters on {backend} for {} steps -> {}",
            t.max_iters,
            run_dir.display()
        ),
        &bar,
    );

    let block_size = prepared.model.block_size;
    let tokens_per_step = (t.batch_size * block_size) as f64;
    let mut evaluations = Vec::new();
    let mut best_val = f64::INFINITY;
    let mut train_time = Duration::ZERO;
    let mut window_time = Duration::ZERO;
    let mut window_steps = 0usize;
    let mut step = 0usize;
    loop {
        if step.is_multiple_of(t.eval_interval) || step == t.max_iters {
            let estimate = estimate_loss(&model.valid(), prepared, step, device);
            if !(estimate.train.is_finite() && estimate.val.is_finite()) {
                return Err(TrainError::NonFinite { step });
            }
            let tokens_per_sec = if window_time.is_zero() {
                0.0
            } else {
                window_steps as f64 * tokens_per_step / window_time.as_secs_f64()
            };
            say(
                format!(
                    "step {step}: train loss {:.4}, val loss {:.4}",
                    estimate.train, estimate.val
                ),
                &bar,
            );
            metrics.append(&MetricsRow {
                step,
                train_loss: estimate.train,
                val_loss: estimate.val,
                lr: t.learning_rate,
                tokens_per_sec,
                elapsed_s: started.elapsed().as_secs_f64(),
            })?;
            let checkpoint = Checkpoint {
                meta: CheckpointMeta {
                    step,
                    config: config_ron.clone(),
                    vocab: prepared.tokenizer.clone(),
                    train_loss: estimate.train,
                    val_loss: estimate.val,
                    backend: backend.name().into(),
                },
                model: Recorder32::default()
                    .record(model.clone().into_record(), ())
                    .map_err(|e| TrainError::Record(e.to_string()))?,
                optimizer: Recorder32::default()
                    .record(optimizer.to_record(), ())
                    .map_err(|e| TrainError::Record(e.to_string()))?,
            };
            checkpoint.write_atomic(&step_checkpoint_path(run_dir, step))?;
            if estimate.val < best_val {
                best_val = estimate.val;
                checkpoint.write_atomic(&run_dir.join(CHECKPOINT_DIR).join(BEST_CHECKPOINT))?;
            }
            prune_step_checkpoints(run_dir, t.keep_checkpoints);
            evaluations.push(estimate);
            window_time = Duration::ZERO;
            window_steps = 0;
        }
        if step == t.max_iters {
            break;
        }

        let step_started = Instant::now();
        let mut rng = stream_rng(t.seed, TRAIN_STREAM, step as u64);
        let batch =
            prepared
                .splits
                .batch::<B>(Split::Train, t.batch_size, block_size, &mut rng, device);
        let (_, loss) = model.forward_loss(batch.inputs, batch.targets);
        let report_loss = step.is_multiple_of(10);
        let loss_value = report_loss.then(|| loss.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(t.learning_rate, model, grads);
        step += 1;
        if let Some(loss) = loss_value {
            let loss: f64 = loss.into_scalar().elem();
            if !loss.is_finite() {
                return Err(TrainError::NonFinite { step });
            }
            let elapsed = window_time + step_started.elapsed();
            bar.set_message(format!(
                "loss {loss:.4} | {:.0} tok/s",
                (window_steps + 1) as f64 * tokens_per_step / elapsed.as_secs_f64().max(1e-9)
            ));
        }
        let spent = step_started.elapsed();
        train_time += spent;
        window_time += spent;
        window_steps += 1;
        bar.set_position(step as u64);
    }
    bar.finish_and_clear();

    let mut sampler = Sampler::new(Sampling::default(), t.seed);
    let model = model.valid();
    let tokens = model.generate(&[], t.sample_tokens, &mut sampler);
    let sample = prepared
        .tokenizer
        .decode(&tokens)
        .expect("the model only produces vocabulary ids");
    write_run_file(&run_dir.join("sample.txt"), sample.as_bytes())?;
    if options.verbose {
        println!(
            "--- sample ({} characters) ---\n{sample}\n---",
            t.sample_tokens
        );
    }
    Ok(TrainReport {
        run_dir: run_dir.clone(),
        backend,
        parameters,
        evaluations,
        train_time,
        wall_time: started.elapsed(),
        tokens_per_sec: t.max_iters as f64 * tokens_per_step / train_time.as_secs_f64().max(1e-9),
        sample,
    })
}

fn write_run_file(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    write_atomic(path, bytes).map_err(|source| TrainError::RunDir {
        path: path.to_path_buf(),
        source,
    })
}

fn progress_bar(steps: usize, enabled: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(steps as u64),
        if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Loads a model from checkpoint bytes for backend `B`.
pub fn load_model<B: Backend>(
    prepared_model: &tinygpt_model::ModelConfig,
    record: &[u8],
    device: &B::Device,
) -> Result<LanguageModel<B>, TrainError> {
    let record = Recorder32::default()
        .load(record.to_vec(), device)
        .map_err(|e| TrainError::Record(e.to_string()))?;
    Ok(prepared_model.init::<B>(device).load_record(record))
}
