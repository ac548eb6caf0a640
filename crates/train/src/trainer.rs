//! The training loop: the tutorial's AdamW loop with periodic loss estimates, metrics,
//! checkpoints and a final sample.

use crate::activity::{self, Phase};
use crate::checkpoint::{
    prune_step_checkpoints, step_checkpoint_path, write_atomic, Checkpoint, CheckpointMeta,
    BEST_CHECKPOINT, CHECKPOINT_DIR,
};
use crate::metrics::{MetricsRow, MetricsWriter};
use crate::parallel::{self, Cluster, ClusterError, Peer};
use crate::schedule::Progress;
use crate::{grads, BackendKind, InitFrom, Prepared, RunConfig, RunOptimizer, TrainError};
use burn::collective::ReduceOperation;
use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsParams;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
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
    /// Becomes non-zero (the signal number) when the run should stop: it then finishes the
    /// current step, writes a checkpoint and returns [`TrainError::Interrupted`].
    pub stop: Option<Arc<AtomicI32>>,
    /// Continue from this checkpoint instead of starting from scratch.
    pub resume: Option<Checkpoint>,
}

impl TrainOptions {
    /// A fresh run into `run_dir`, silent.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
            progress: false,
            verbose: false,
            stop: None,
            resume: None,
        }
    }

    fn stop_signal(&self) -> Option<i32> {
        let signal = self.stop.as_ref()?.load(Ordering::SeqCst);
        (signal != 0).then_some(signal)
    }
}

/// One `estimate_loss` result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
    /// Data-parallel peers (devices × nodes); 1 on one device.
    pub peers: usize,
    pub parameters: usize,
    /// The estimates made by this invocation (a resumed run omits the earlier ones).
    pub evaluations: Vec<LossEstimate>,
    /// The estimate at the final step.
    pub last_eval: LossEstimate,
    /// The final model's loss over the whole validation split ([`full_split_loss`]).
    pub val_loss_full: f64,
    /// Training time of this invocation, excluding evaluation, checkpointing and sampling.
    pub train_time: Duration,
    /// Tokens trained on over the whole run (every peer's, every micro-batch's).
    pub tokens_seen: u64,
    pub wall_time: Duration,
    pub tokens_per_sec: f64,
    pub sample: String,
}

type Recorder32 = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// Independent random streams per purpose and step, so every batch depends only on the seed
/// and the step: a resumed run draws exactly what an uninterrupted one would.
fn stream_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed
        ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn stream_rng(seed: u64, stream: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(stream_seed(seed, stream, index))
}

const TRAIN_STREAM: u64 = 1;
const EVAL_STREAM: u64 = 2;
const DROPOUT_STREAM: u64 = 3;

/// Mean loss over `eval_iters` batches of each split, with the model in eval mode on the inner
/// (non-autodiff) backend: no graph is built and dropout is off.
pub fn estimate_loss<B: Backend>(
    model: &LanguageModel<B>,
    prepared: &Prepared,
    step: usize,
    device: &B::Device,
) -> LossEstimate {
    estimate_loss_shared(model, prepared, step, device, None)
        .expect("one device needs no collective")
}

/// [`estimate_loss`] with each of `peer`'s peers evaluating its rows of the same batches; the
/// peers' means are averaged, so every peer gets the one-device estimate.
fn estimate_loss_shared<B: Backend>(
    model: &LanguageModel<B>,
    prepared: &Prepared,
    step: usize,
    device: &B::Device,
    peer: Option<&Peer>,
) -> Result<LossEstimate, TrainError> {
    let t = &prepared.config.training;
    let block_size = prepared.model.block_size;
    let rows = peer.map_or(0..t.batch_size, |p| p.rows(t.batch_size));
    let sum = |split: Split, stream: u64| {
        let mut rng = stream_rng(t.seed, EVAL_STREAM + stream, step as u64);
        let losses = (0..t.eval_iters).map(|_| {
            let batch = prepared.splits.batch_rows::<B>(
                split,
                t.batch_size,
                rows.clone(),
                block_size,
                &mut rng,
                device,
            );
            model.forward_loss(batch.inputs, batch.targets).1
        });
        losses
            .reduce(|sum, loss| sum + loss)
            .expect("at least one batch is evaluated")
    };
    let sums = Tensor::cat(vec![sum(Split::Train, 0), sum(Split::Val, 1 << 32)], 0);
    let sums = parallel::all_reduce_if(peer, sums, ReduceOperation::Mean, "the loss estimate")?;
    let sums: Vec<f64> = sums
        .into_data()
        .convert::<f64>()
        .to_vec()
        .expect("two loss sums read back");
    Ok(LossEstimate {
        step,
        train: sums[0] / t.eval_iters as f64,
        val: sums[1] / t.eval_iters as f64,
    })
}

/// The mean loss over every token of a split: the split tiled into non-overlapping
/// `block_size` windows, each position predicted from the context since its window began (what
/// `estimate_loss` samples at random, without the sampling noise). Batches of the training
/// batch size.
pub fn full_split_loss<B: Backend>(
    model: &LanguageModel<B>,
    prepared: &Prepared,
    split: Split,
    device: &B::Device,
) -> f64 {
    full_split_loss_shared(model, prepared, split, device, None)
        .expect("one device needs no collective")
}

/// [`full_split_loss`] with the batches dealt out among `peer`'s peers and the sums added.
fn full_split_loss_shared<B: Backend>(
    model: &LanguageModel<B>,
    prepared: &Prepared,
    split: Split,
    device: &B::Device,
    peer: Option<&Peer>,
) -> Result<f64, TrainError> {
    let block_size = prepared.model.block_size;
    let windows = prepared.splits.window_count(split, block_size);
    let batch_size = prepared.config.training.batch_size;
    let (rank, world) = peer.map_or((0, 1), |p| (p.rank, p.world));
    let losses = prepared
        .splits
        .windows::<B>(split, block_size, batch_size, device)
        .enumerate()
        .filter(|(index, _)| index % world == rank)
        .map(|(_, batch)| {
            let rows = batch.inputs.dims()[0];
            let (_, loss) = model.forward_loss(batch.inputs, batch.targets);
            // Every window has block_size tokens, so weighting each batch's mean by its rows
            // gives the mean over tokens.
            loss.mul_scalar(rows as f64)
        });
    let total = losses
        .reduce(|sum, loss| sum + loss)
        .unwrap_or_else(|| Tensor::zeros([1], device));
    let total = parallel::all_reduce_if(peer, total, ReduceOperation::Sum, "the validation loss")?;
    Ok(total.into_scalar().elem::<f64>() / windows as f64)
}

/// Trains the prepared model on backend `B`, from scratch or from `options.resume`.
pub fn train<B: AutodiffBackend>(
    prepared: &Prepared,
    options: &TrainOptions,
    device: &B::Device,
    backend: BackendKind,
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    let model = initial_model::<B>(prepared, options, device)?;
    train_replica(prepared, options, device, backend, None, model, started)
}

/// Trains on several devices (and nodes) at once, data-parallel: each peer trains a replica on
/// its rows of the one-device batch, and the gradients are averaged before every step, so the
/// run follows the one-device run up to float summation order. Rank 0 (on node 0) writes the
/// run directory; its report is returned (another node's report has no sample).
pub fn train_parallel<B: AutodiffBackend>(
    prepared: &Prepared,
    options: &TrainOptions,
    devices: &[B::Device],
    backend: BackendKind,
    cluster: &Cluster,
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    cluster.validate()?;
    let world = cluster.world(devices.len());
    let batch_size = prepared.config.training.batch_size;
    if world == 0 || !batch_size.is_multiple_of(world) {
        return Err(ClusterError::BatchDoesNotDivide {
            batch_size,
            peers: world,
        }
        .into());
    }
    if world == 1 {
        return train::<B>(prepared, options, &devices[0], backend);
    }
    // Built once, before the peers start: the CPU backends' generator is one per process.
    let model = initial_model::<B>(prepared, options, &devices[0])?;
    let results = parallel::run_peers::<B, _, _>(devices, cluster, |_, device, peer| {
        let replica = model.clone().fork(device);
        train_replica(
            prepared,
            options,
            device,
            backend,
            Some(peer),
            replica,
            started,
        )
    })?;
    // The first error that is not another peer's reaction to it (an all-reduce that failed
    // because a peer left) says what went wrong; otherwise rank 0's result stands.
    let mut results = results;
    let root_cause = results
        .iter()
        .position(|r| matches!(r, Err(e) if !matches!(e, TrainError::Collective { .. })));
    results.swap_remove(root_cause.unwrap_or(0))
}

/// The model a run starts from: initialised from the seed, `init_from`'s weights, or the
/// checkpoint it resumes.
fn initial_model<B: AutodiffBackend>(
    prepared: &Prepared,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<LanguageModel<B>, TrainError> {
    let t = &prepared.config.training;
    activity::run_dir(
        options.run_dir.clone(),
        options.resume.as_ref().map(|c| c.meta.step),
    );
    activity::enter(Phase::BuildingModel, 0);
    B::seed(device, t.seed);
    let model: LanguageModel<B> = match (&t.init_from, &options.resume) {
        (Some(init_from), None) => {
            activity::enter(Phase::LoadingCheckpoint, 0);
            pretrained(init_from, prepared, device)?
        }
        _ => prepared.model.init(device),
    };
    let model = match &options.resume {
        None => model,
        Some(checkpoint) => {
            check_resumable(checkpoint, prepared)?;
            activity::enter(Phase::LoadingCheckpoint, checkpoint.meta.step);
            load_model_record(model, &checkpoint.model, device)?
        }
    };
    materialize(&model);
    Ok(model)
}

/// Draws every lazily initialised parameter now, in module order, from the generator `B::seed`
/// just seeded. Burn initialises a parameter at its first use, and each clone of a model holds
/// its own pending draw: replicas cloned before that would each draw different weights.
pub(crate) fn materialize<B: Backend, M: Module<B>>(model: &M) {
    struct Touch;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            param.val();
        }
    }
    model.visit(&mut Touch);
}

/// One replica's training: the whole run on one device (`peer` None), or one peer's part of a
/// data-parallel run, where rank 0 alone writes files and prints.
fn train_replica<B: AutodiffBackend>(
    prepared: &Prepared,
    options: &TrainOptions,
    device: &B::Device,
    backend: BackendKind,
    peer: Option<&Peer>,
    model: LanguageModel<B>,
    started: Instant,
) -> Result<TrainReport, TrainError> {
    let config = &prepared.config;
    let t = &config.training;
    let run_dir = &options.run_dir;
    let lead = peer.is_none_or(|p| p.rank == 0);
    let config_ron = config.to_ron();
    if lead {
        std::fs::create_dir_all(run_dir.join(CHECKPOINT_DIR)).map_err(|source| {
            TrainError::RunDir {
                path: run_dir.clone(),
                source,
            }
        })?;
        write_run_file(&run_dir.join("config.ron"), config_ron.as_bytes())?;
        let vocab_json =
            serde_json::to_vec_pretty(&prepared.tokenizer).expect("vocabulary serialises");
        write_run_file(&run_dir.join("vocab.json"), &vocab_json)?;
    }
    let mut model = match peer {
        // Rank 0's weights everywhere, even where another node initialised differently.
        Some(peer) => parallel::sync_from_rank0(model, peer)?,
        None => model,
    };
    let parameters = model.num_params();
    let mut optimizer = RunOptimizer::new(&model, t);
    let mut state = RunState::default();
    let metrics_path = run_dir.join("metrics.csv");
    let mut metrics = match &options.resume {
        None => lead
            .then(|| MetricsWriter::create(&metrics_path))
            .transpose()?,
        Some(checkpoint) => {
            optimizer = optimizer.load_bytes(&checkpoint.optimizer, device)?;
            state = RunState {
                step: checkpoint.meta.step,
                last_eval: checkpoint.meta.last_eval,
                best_val: checkpoint.meta.best_val_loss,
                resumed_at: Some(checkpoint.meta.step),
                trained: Duration::from_secs_f64(checkpoint.meta.train_time_s.max(0.0)),
            };
            lead.then(|| MetricsWriter::resume(&metrics_path, checkpoint.meta.step))
                .transpose()?
        }
    };
    let checkpointer = Checkpointer {
        run_dir,
        config_ron: &config_ron,
        prepared,
        backend,
        lead,
    };
    let peers = peer.map_or(1, |p| p.world);
    let on = if peers > 1 {
        format!("{peers} × {backend}")
    } else {
        backend.to_string()
    };

    let say = |line: String, bar: &ProgressBar| {
        if options.verbose && lead {
            bar.suspend(|| println!("{line}"));
        }
    };
    let budget = t.time_budget;
    // The run ends when the budget is spent (or, without one, after max_iters steps). Peers
    // decide on `state.trained`, which they agree on (the mean of their clocks).
    let finished = |state: &RunState| match budget {
        Some(budget) => state.trained >= budget.duration(),
        None => state.step >= t.max_iters,
    };
    let lr_at = |state: &RunState| {
        let progress = match budget {
            Some(budget) => Progress {
                step: state.step,
                fraction: budget.fraction(state.trained),
            },
            None => Progress::of_steps(state.step, t.max_iters),
        };
        t.lr_schedule
            .lr_at_progress(progress, t.learning_rate, t.max_iters)
    };
    let bar = match budget {
        Some(budget) => progress_bar(
            budget.as_secs_f64().ceil() as u64,
            "s of training",
            options.progress && lead,
        ),
        None => progress_bar(t.max_iters as u64, "", options.progress && lead),
    };
    let bar_position = |state: &RunState| match budget {
        Some(_) => state.trained.as_secs(),
        None => state.step as u64,
    };
    bar.set_position(bar_position(&state));
    let length = match budget {
        Some(budget) => {
            format!("{budget} of training time (evaluations and checkpoints not counted)")
        }
        None => format!("{} steps", t.max_iters),
    };
    let muon = match optimizer.muon_params() {
        0 => String::new(),
        n => format!(", Muon on {n} matrices"),
    };
    say(
        match state.resumed_at {
            None => format!(
                "training {parameters} parameters on {on} for {length}{muon} -> {}",
                run_dir.display()
            ),
            Some(step) => format!(
                "resuming {} at step {step} ({:.1}s trained) of {length} on {on}",
                run_dir.display(),
                state.trained.as_secs_f64()
            ),
        },
        &bar,
    );

    let block_size = prepared.model.block_size;
    // Every micro-batch of an accumulated step trains on its tokens.
    let tokens_per_step = (t.batch_size * t.gradient_accumulation_steps * block_size) as f64;
    let mut evaluations = Vec::new();
    let mut train_time = Duration::ZERO;
    let mut window_time = Duration::ZERO;
    let mut window_steps = 0usize;
    let mut steps_run = 0usize;
    // This replica's own clock; on one device it is `state.trained`.
    let mut local_trained = state.trained;
    // Peers stop together: at the step the all-reduce says some peer was signalled.
    let mut agreed_stop: Option<i32> = None;
    loop {
        let step = state.step;
        let done = finished(&state);
        let eval_due = step.is_multiple_of(t.eval_interval) || done;
        // A resumed run already logged (or was not due) the evaluation at its first step.
        if eval_due && state.resumed_at != Some(step) {
            activity::enter(Phase::Evaluating, step);
            let estimate = estimate_loss_shared(&model.valid(), prepared, step, device, peer)?;
            if !(estimate.train.is_finite() && estimate.val.is_finite()) {
                return Err(TrainError::NonFinite { step });
            }
            say(
                format!(
                    "step {step}: train loss {:.4}, val loss {:.4}",
                    estimate.train, estimate.val
                ),
                &bar,
            );
            let row = MetricsRow {
                step,
                train_loss: estimate.train,
                val_loss: estimate.val,
                lr: lr_at(&state),
                tokens_per_sec: if window_time.is_zero() {
                    0.0
                } else {
                    window_steps as f64 * tokens_per_step / window_time.as_secs_f64()
                },
                elapsed_s: started.elapsed().as_secs_f64(),
            };
            if let Some(metrics) = &mut metrics {
                metrics.append(&row)?;
            }
            let is_best = state.best_val.is_none_or(|best| estimate.val < best);
            if is_best {
                state.best_val = Some(estimate.val);
            }
            state.last_eval = Some(estimate);
            checkpointer.save(&model, &optimizer, &state, is_best)?;
            evaluations.push(estimate);
            window_time = Duration::ZERO;
            window_steps = 0;
        }
        if done {
            break;
        }
        let stop = match peer {
            Some(_) => agreed_stop,
            None => options.stop_signal(),
        };
        if let Some(signal) = stop {
            bar.finish_and_clear();
            if !eval_due || state.resumed_at == Some(step) {
                checkpointer.save(&model, &optimizer, &state, false)?;
            }
            return Err(TrainError::Interrupted {
                signal,
                step,
                run_dir: run_dir.clone(),
            });
        }

        activity::enter(Phase::Training, step);
        let step_started = Instant::now();
        // Dropout draws from the backend's generator: reseed it per step so a resumed run
        // makes the same draws as an uninterrupted one.
        match peer {
            None => B::seed(device, stream_seed(t.seed, DROPOUT_STREAM, step as u64)),
            Some(peer) => {
                // Masks keyed by (seed, step, rank): each peer draws its own for its rows.
                let stream = DROPOUT_STREAM + ((peer.rank as u64) << 32);
                let seed = stream_seed(t.seed, stream, step as u64);
                B::seed(device, seed);
                // The CPU backends' generator is shared by the peer threads: key the masks here.
                tinygpt_kernels::seed_thread_masks(Some(seed));
            }
        }
        let lr = lr_at(&state);
        // Micro-batches draw in sequence from the step's stream: k micro-batches of n windows
        // are exactly the windows of one batch of k * n.
        let mut rng = stream_rng(t.seed, TRAIN_STREAM, step as u64);
        let micro_batches = t.gradient_accumulation_steps;
        let mut grads = None;
        let mut step_loss = None;
        let rows = peer.map_or(0..t.batch_size, |p| p.rows(t.batch_size));
        // A peer reports its loss every step: it rides with the gradients at no extra cost.
        let report_loss = peer.is_some() || step.is_multiple_of(10);
        for _ in 0..micro_batches {
            let batch = prepared.splits.batch_rows::<B>(
                Split::Train,
                t.batch_size,
                rows.clone(),
                block_size,
                &mut rng,
                device,
            );
            let (_, loss) = model.forward_loss(batch.inputs, batch.targets);
            let loss = if micro_batches > 1 {
                loss.div_scalar(micro_batches as f64)
            } else {
                loss
            };
            if report_loss {
                let detached = loss.clone().detach();
                step_loss = Some(match step_loss {
                    Some(sum) => sum + detached,
                    None => detached,
                });
            }
            let micro_grads = GradientsParams::from_grads(loss.backward(), &model);
            grads = Some(grads::accumulate(&model, grads, micro_grads));
        }
        let grads = grads.expect("gradient_accumulation_steps >= 1");
        let mut agreed_trained = None;
        let (grads, reduced_loss) = match peer {
            None => (grads, None),
            Some(peer) => {
                // [signal, loss, seconds trained]: the mean signal is non-zero when any peer
                // was signalled; the mean clock is the one all peers keep to the budget by.
                let signal = options.stop_signal().unwrap_or(0);
                let loss = step_loss.take().expect("peers report every step").inner();
                let clock = (local_trained + step_started.elapsed()).as_secs_f64();
                let device = loss.device();
                let control = Tensor::cat(
                    vec![
                        Tensor::from_floats([signal as f32], &device),
                        loss,
                        Tensor::from_floats([clock as f32], &device),
                    ],
                    0,
                );
                let (grads, control) =
                    parallel::all_reduce_gradients(&model, grads, control, peer)?;
                let control: Vec<f64> = control
                    .into_data()
                    .convert::<f64>()
                    .to_vec()
                    .expect("three control values read back");
                agreed_trained = Some(Duration::from_secs_f64(control[2].max(0.0)));
                if control[0] > 0.0 {
                    // This peer's own signal, or SIGTERM's number for one sent to another peer.
                    agreed_stop = Some(if signal != 0 { signal } else { 15 });
                }
                (grads, Some(control[1]))
            }
        };
        model = optimizer.step(model, grads, lr, t);
        state.step += 1;
        // Read after the update is queued, so a GPU is not left idle waiting for the read.
        let loss_value =
            reduced_loss.or_else(|| step_loss.map(|loss| loss.into_scalar().elem::<f64>()));
        if let Some(loss) = loss_value {
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
        local_trained += spent;
        state.trained = agreed_trained.unwrap_or(local_trained);
        window_time += spent;
        window_steps += 1;
        steps_run += 1;
        bar.set_position(bar_position(&state));
    }
    bar.finish_and_clear();

    let model = model.valid();
    if let Some(peer) = peer {
        let difference = parallel::replica_difference(&model, peer)?;
        if difference != 0.0 {
            return Err(TrainError::ReplicasDiverged { difference });
        }
        tinygpt_kernels::seed_thread_masks(None);
    }
    activity::enter(Phase::Evaluating, state.step);
    let val_loss_full = full_split_loss_shared(&model, prepared, Split::Val, device, peer)?;
    let last_eval = state.last_eval.expect("the final step is always evaluated");
    let wall_time = started.elapsed();
    let tokens_per_sec = steps_run as f64 * tokens_per_step / train_time.as_secs_f64().max(1e-9);
    let tokens_seen = (state.step as f64 * tokens_per_step) as u64;
    if !lead {
        return Ok(TrainReport {
            run_dir: run_dir.clone(),
            backend,
            peers,
            parameters,
            evaluations,
            last_eval,
            val_loss_full,
            train_time,
            tokens_seen,
            wall_time,
            tokens_per_sec,
            sample: String::new(),
        });
    }
    let mut sampler = Sampler::new(Sampling::default(), t.seed);
    activity::enter(Phase::Sampling, state.step);
    let tokens = model.generate(
        &prepared.tokenizer.start_tokens(),
        t.sample_tokens,
        &mut sampler,
    );
    let sample = prepared
        .tokenizer
        .decode(&tokens)
        .expect("the model only produces vocabulary ids");
    write_run_file(&run_dir.join("sample.txt"), sample.as_bytes())?;
    let summary = RunSummary {
        backend: backend.name().into(),
        peers,
        parameters,
        steps: last_eval.step,
        train_loss: last_eval.train,
        val_loss: last_eval.val,
        val_loss_full: Some(val_loss_full),
        best_val_loss: state.best_val.unwrap_or(last_eval.val),
        wall_time_s: wall_time.as_secs_f64(),
        train_time_s: train_time.as_secs_f64(),
        train_time_total_s: state.trained.as_secs_f64(),
        time_budget_s: budget.map(|b| b.as_secs_f64()),
        tokens_seen,
        tokens_per_sec,
        resumed_at: state.resumed_at,
    };
    let summary_json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    write_run_file(&run_dir.join("summary.json"), &summary_json)?;
    draw_charts(run_dir);
    if options.verbose {
        println!(
            "--- sample ({} characters) ---\n{sample}\n---",
            t.sample_tokens
        );
    }
    Ok(TrainReport {
        run_dir: run_dir.clone(),
        backend,
        peers,
        parameters,
        evaluations,
        last_eval,
        val_loss_full,
        train_time,
        tokens_seen,
        wall_time,
        tokens_per_sec,
        sample,
    })
}

/// `summary.json`: a finished run in one line of numbers, for reports such as `xtask ladder`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub backend: String,
    /// Data-parallel peers (devices × nodes) that trained it.
    #[serde(default = "one")]
    pub peers: usize,
    pub parameters: usize,
    pub steps: usize,
    pub train_loss: f64,
    /// The final estimate from `eval_iters` random batches, as the tutorial's `estimate_loss`.
    pub val_loss: f64,
    /// The exact loss over the whole validation split ([`full_split_loss`]).
    #[serde(default)]
    pub val_loss_full: Option<f64>,
    pub best_val_loss: f64,
    /// The whole invocation: evaluations, checkpoints and the sample included.
    pub wall_time_s: f64,
    /// Optimisation steps only, this invocation's.
    pub train_time_s: f64,
    /// Optimisation steps of the whole run, resumed parts included: what a time budget counts.
    #[serde(default)]
    pub train_time_total_s: f64,
    /// The run's time budget, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_budget_s: Option<f64>,
    /// Tokens trained on over the whole run.
    #[serde(default)]
    pub tokens_seen: u64,
    pub tokens_per_sec: f64,
    /// The step this invocation resumed from, if it did (times then cover only the rest).
    pub resumed_at: Option<usize>,
}

fn one() -> usize {
    1
}

/// Where a run stands; what a checkpoint must carry besides weights and optimizer state.
#[derive(Debug, Clone, Default)]
struct RunState {
    step: usize,
    last_eval: Option<LossEstimate>,
    best_val: Option<f64>,
    resumed_at: Option<usize>,
    /// Training time spent up to `step` (agreed among peers), resumed parts included.
    trained: Duration,
}

/// The weights `init_from` names, for the prepared architecture (its context may be shorter).
fn pretrained<B: Backend>(
    init_from: &InitFrom,
    prepared: &Prepared,
    device: &B::Device,
) -> Result<LanguageModel<B>, TrainError> {
    match init_from {
        InitFrom::HuggingFace { path, .. } => {
            Ok(crate::hf::load_model(path, &prepared.model, device)?)
        }
        InitFrom::Run { path, .. } => {
            let opened;
            let run = match &prepared.init_run {
                Some(run) => run.as_ref(),
                None => {
                    opened = crate::open_run(path)?;
                    &opened
                }
            };
            let mut source = run.config.model.clone();
            source.block_size = prepared.config.model.block_size;
            source.dropout = prepared.config.model.dropout;
            if source != prepared.config.model {
                return Err(TrainError::Mismatch(format!(
                    "the config's architecture differs from the run it starts from ({}); only \
                     block_size and dropout may change",
                    path.display()
                )));
            }
            if prepared.model.block_size > run.model.block_size {
                return Err(TrainError::Mismatch(format!(
                    "block_size {} is longer than the context {} was trained with ({})",
                    prepared.model.block_size,
                    path.display(),
                    run.model.block_size
                )));
            }
            // The prepared architecture (its dropout) at the source's context, then cropped.
            let mut at_source = prepared.model.clone();
            at_source.block_size = run.model.block_size;
            let checkpoint = run.checkpoint().expect("a tinygpt run has a checkpoint");
            Ok(load_model::<B>(&at_source, &checkpoint.model, device)?
                .crop_block_size(prepared.model.block_size))
        }
    }
}

/// A checkpoint can only continue the run it came from.
fn check_resumable(checkpoint: &Checkpoint, prepared: &Prepared) -> Result<(), TrainError> {
    if checkpoint.meta.vocab != prepared.tokenizer {
        return Err(TrainError::Mismatch(
            "the checkpoint's vocabulary differs from the corpus's: the corpus changed since \
             the run started"
                .into(),
        ));
    }
    let saved = RunConfig::parse(&checkpoint.meta.config, "checkpoint config")?;
    if saved.model != prepared.config.model {
        return Err(TrainError::Mismatch(
            "the checkpoint's architecture differs from the config's".into(),
        ));
    }
    Ok(())
}

struct Checkpointer<'a> {
    run_dir: &'a Path,
    config_ron: &'a str,
    prepared: &'a Prepared,
    backend: BackendKind,
    /// Whether this replica writes (rank 0 of a data-parallel run does, for all of them).
    lead: bool,
}

impl Checkpointer<'_> {
    fn save<B: AutodiffBackend>(
        &self,
        model: &LanguageModel<B>,
        optimizer: &RunOptimizer<B>,
        state: &RunState,
        is_best: bool,
    ) -> Result<(), TrainError> {
        if !self.lead {
            return Ok(());
        }
        activity::enter(Phase::Checkpointing, state.step);
        let checkpoint = Checkpoint {
            meta: CheckpointMeta {
                step: state.step,
                config: self.config_ron.to_string(),
                vocab: self.prepared.tokenizer.clone(),
                last_eval: state.last_eval,
                best_val_loss: state.best_val,
                backend: self.backend.name().into(),
                train_time_s: state.trained.as_secs_f64(),
            },
            model: Recorder32::default()
                .record(model.clone().into_record(), ())
                .map_err(|e| TrainError::Record(e.to_string()))?,
            optimizer: optimizer.to_bytes()?,
        };
        checkpoint.write_atomic(&step_checkpoint_path(self.run_dir, state.step))?;
        activity::checkpoint_written(state.step);
        if is_best {
            checkpoint.write_atomic(&self.run_dir.join(CHECKPOINT_DIR).join(BEST_CHECKPOINT))?;
        }
        prune_step_checkpoints(self.run_dir, self.prepared.config.training.keep_checkpoints);
        draw_charts(self.run_dir);
        Ok(())
    }
}

/// `loss.png` and `loss.svg` from the run's metrics so far. A chart that cannot be drawn is a
/// warning: it never stops a run.
fn draw_charts(run_dir: &Path) {
    if let Err(e) = tinygpt_plot::write_run_charts(run_dir) {
        eprintln!("warning: no loss chart: {e}");
    }
}

fn write_run_file(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    write_atomic(path, bytes).map_err(|source| TrainError::RunDir {
        path: path.to_path_buf(),
        source,
    })
}

/// A bar of `len` steps (or seconds of a budget: `unit` then says so).
fn progress_bar(len: u64, unit: &str, enabled: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}}{unit} {{msg}} (eta {{eta}})"
        ))
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
    load_model_record(prepared_model.init::<B>(device), record, device)
}

fn load_model_record<B: Backend>(
    model: LanguageModel<B>,
    record: &[u8],
    device: &B::Device,
) -> Result<LanguageModel<B>, TrainError> {
    let record = Recorder32::default()
        .load(record.to_vec(), device)
        .map_err(|e| TrainError::Record(format!("model weights: {e}")))?;
    Ok(model.load_record(record))
}
