//! `tinygpt`: inspect a config or model, train or fine-tune a GPT, generate text, evaluate, and
//! export to Hugging Face's GPT-2 format.

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use tinygpt_model::{Sampler, Sampling};
use tinygpt_tokenizer::{TextStream, Tokenizer};
use tinygpt_train::activity::{self, Phase};
use tinygpt_train::memory::{group_digits, human_bytes};
use tinygpt_train::{
    available_memory, dispatch, dispatch_devices, full_split_loss, judge, open_run, prepare,
    prepare_with, train, train_parallel, BackendKind, BackendTask, Cluster, ClusterError, Corpus,
    Devices, DevicesTask, LoadedRun, MemoryEstimate, Prepared, RunConfig, TrainError, TrainOptions,
    TrainReport, Verdict,
};

/// Train and sample GPT language models (the "GPT from scratch" tutorial's character models,
/// from a bigram table to a Transformer, and GPT-2 with its pretrained weights) on the CPU or a
/// CUDA GPU.
#[derive(Parser)]
#[command(name = "tinygpt", version, propagate_version = true)]
#[command(after_help = "Examples:\n  tinygpt train configs/transformer.ron\n  \
    tinygpt generate runs/transformer --prompt \"ROMEO:\"\n  \
    tinygpt generate models/gpt2 --prompt \"ROMEO:\" --temperature 0.8 --top-k 200\n  \
    tinygpt train configs/finetune_shakespeare.ron\n  \
    tinygpt eval runs/finetune_shakespeare\n  \
    tinygpt export runs/finetune_shakespeare --hf out/my-gpt2")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a config's or a model's architecture, layer by layer, with parameter counts, and the
    /// memory training and generation will need (all from the config: no weights are built).
    Info {
        /// A RON config (configs/transformer.ron), a run directory, a .ckpt file, or a Hugging
        /// Face GPT-2 directory (config.json + model.safetensors).
        config: PathBuf,
        /// The backend to estimate memory for [default: flex].
        #[arg(long)]
        backend: Option<BackendKind>,
    },
    /// Train the model a config describes; writes checkpoints, metrics.csv and a sample to the
    /// run directory.
    Train(TrainArgs),
    /// Generate text from a trained run (its newest checkpoint), a checkpoint file, or a Hugging
    /// Face GPT-2 directory.
    Generate(GenerateArgs),
    /// Loss and perplexity of a model on the whole validation split of a corpus.
    Eval(EvalArgs),
    /// Write a GPT-2-shaped model as a Hugging Face directory (config.json + model.safetensors)
    /// that `GPT2LMHeadModel.from_pretrained` loads.
    Export(ExportArgs),
    /// Time training steps (forward, backward, AdamW) of a config's model on random tokens, or
    /// with --generation a model's generation (prefill and new tokens).
    Bench(BenchArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// A run directory, a .ckpt file, or a Hugging Face GPT-2 directory.
    model: PathBuf,
    /// The corpus: a RON config (its data section) or a UTF-8 text file [default: the model's
    /// own config's data, Tiny Shakespeare for a Hugging Face model].
    #[arg(long, value_name = "CONFIG_OR_CORPUS")]
    data: Option<PathBuf>,
    /// Windows per forward pass [default: 4096 tokens' worth].
    #[arg(long)]
    batch_size: Option<usize>,
    /// flex, ndarray, cuda, cuda-bf16 or cuda-f16 [default: flex].
    #[arg(long)]
    backend: Option<BackendKind>,
}

#[derive(Args)]
struct ExportArgs {
    /// A run directory or .ckpt file of a GPT-2-shaped model (or a Hugging Face directory).
    model: PathBuf,
    /// The directory to write config.json and model.safetensors to.
    #[arg(long, value_name = "DIR")]
    hf: PathBuf,
}

#[derive(Args)]
struct BenchArgs {
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
    /// Hugging Face directory); --steps runs are timed after --warmup ones.
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

#[derive(Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["config", "resume"]))]
struct TrainArgs {
    /// Go on even when the memory estimate is far over what the machine has.
    #[arg(long)]
    skip_memory_check: bool,
    /// A RON config, e.g. configs/transformer.ron.
    config: Option<PathBuf>,
    /// Continue an interrupted run from its newest checkpoint (its config comes along).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "out", "seed"])]
    resume: Option<PathBuf>,
    /// Where the computation runs: flex or ndarray (CPU), or cuda / cuda-bf16 / cuda-f16 (needs
    /// the `cuda` feature) [default: flex; with --resume, the backend the run trained on].
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Run directory [default: runs/<config name>, or runs/<config name>-N if that holds a run].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the config's number of training steps (with --resume: train on to this step).
    #[arg(long)]
    max_iters: Option<usize>,
    /// Override the config's random seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print only the final summary.
    #[arg(long)]
    quiet: bool,
    /// Data-parallel training: a number of peers on flex or ndarray (`2`), or the GPUs to use on
    /// CUDA (`0,1,2,3`, `0-7`, or one index). The config's batch is the global batch; each peer
    /// takes its share [default: one device].
    #[arg(long, value_name = "N|LIST")]
    devices: Option<Devices>,
    /// Machines training together; each runs this command with the same flags and its own
    /// --node-rank.
    #[arg(long, default_value_t = 1, value_name = "N")]
    nodes: u32,
    /// This machine's place among --nodes, from 0. Node 0 coordinates and writes the run.
    #[arg(long, default_value_t = 0, value_name = "RANK")]
    node_rank: u32,
    /// Where node 0 listens for the others (needed with --nodes); the same on every node.
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// Where the other nodes reach this one [default: this machine's address towards the
    /// coordinator, port: the coordinator's + 1 + node rank].
    #[arg(long, value_name = "HOST[:PORT]")]
    node_address: Option<String>,
    /// Seconds a peer waits for the others (to join, or at a step) before the run stops with an
    /// error naming the node that did not answer.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    collective_timeout: f64,
}

impl TrainArgs {
    /// The cluster the flags describe (one node unless --nodes).
    fn cluster(&self) -> Result<Cluster> {
        if !(self.collective_timeout > 0.0 && self.collective_timeout.is_finite()) {
            bail!("--collective-timeout must be a positive number of seconds");
        }
        let cluster = Cluster {
            nodes: self.nodes,
            node_rank: self.node_rank,
            coordinator: self.coordinator.clone(),
            node_address: self.node_address.clone(),
            timeout: std::time::Duration::from_secs_f64(self.collective_timeout),
        };
        cluster.validate()?;
        Ok(cluster)
    }

    fn parallel(&self) -> bool {
        self.devices.is_some() || self.nodes > 1
    }
}

#[derive(Args)]
struct GenerateArgs {
    /// Go on even when the memory estimate is far over what the machine has.
    #[arg(long)]
    skip_memory_check: bool,
    /// A run directory written by `tinygpt train`, a .ckpt file, or a Hugging Face GPT-2
    /// directory (config.json + model.safetensors).
    run: PathBuf,
    /// Text to continue [default: a newline for a character model, <|endoftext|> for GPT-2].
    /// Only the last block_size tokens are kept.
    #[arg(long, default_value = "")]
    prompt: String,
    /// How many tokens (characters for a character model) to generate.
    #[arg(long, default_value_t = 500)]
    max_new_tokens: usize,
    /// Sampling temperature: lower is more conservative; 0 always picks the likeliest token.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Sample only among the k likeliest characters.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling: only among the likeliest characters whose probabilities sum to P.
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Where the computation runs: flex, ndarray, cuda, cuda-bf16 or cuda-f16 [default: the
    /// backend the run trained on, if this build has it; else flex].
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Afterwards, print to stderr how long loading, the prompt (prefill) and the new tokens
    /// took, and the peak memory.
    #[arg(long)]
    stats: bool,
}

// Why: see `mimalloc` in the workspace Cargo.toml (freed tensor buffers are reused, not zeroed
// again by the kernel); the wrapper turns a failed allocation into a clear error.
#[global_allocator]
static ALLOCATOR: tinygpt::ReportingAllocator = tinygpt::ReportingAllocator;

fn main() -> ExitCode {
    tinygpt::keep_freed_memory();
    let cli = Cli::parse();
    // The CPU backends and the fused kernels split work with rayon. From a thread outside rayon's
    // pool, each parallel op is handed to the pool while this thread sleeps until it is done,
    // and the pool's idle threads spin against it for the same cores. From inside the pool,
    // small ops run inline and large ones are shared by work stealing: transformer.ron on flex
    // went from 2.1 to 1.7 ms a step.
    let result = rayon::scope(|_| match cli.command {
        Command::Info { config, backend } => {
            info(&config, backend.unwrap_or_default()).map(|()| ExitCode::SUCCESS)
        }
        Command::Train(args) => train_command(args),
        Command::Generate(args) => generate_command(args).map(|()| ExitCode::SUCCESS),
        Command::Eval(args) => eval_command(args).map(|()| ExitCode::SUCCESS),
        Command::Export(args) => export_command(args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench_command(args).map(|()| ExitCode::SUCCESS),
    });
    match result {
        Ok(code) => code,
        // The reader went away (`tinygpt info ... | head`): nothing left to say.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_prepared(path: &Path) -> Result<Prepared> {
    let config = RunConfig::load(path)?;
    Ok(prepare(config, &path.display().to_string())?)
}

/// A path `info`, `generate`, `eval` and `export` read as a model rather than a config.
fn is_model_path(path: &Path) -> bool {
    path.is_dir() || path.extension().is_some_and(|e| e == "ckpt")
}

fn info(path: &Path, backend: BackendKind) -> Result<()> {
    let (model, batch, tokenizer) = if is_model_path(path) {
        let run = open_run(path)?;
        (run.model, run.config.training.batch_size, run.tokenizer)
    } else {
        let prepared = load_prepared(path)?;
        let batch = prepared.config.training.batch_size;
        (prepared.model, batch, prepared.tokenizer)
    };
    let model = &model;
    // Written, not println!'d: `tinygpt info ... | head` closes the pipe early, which is fine.
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let rows = model.summary();
    let name_width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let detail_width = rows.iter().map(|r| r.detail.len()).max().unwrap_or(0);
    let shape_width = rows.iter().map(|r| r.shape.len()).max().unwrap_or(0);
    writeln!(
        out,
        "{}: vocab {} ({}), n_embd {}, block_size {}",
        path.display(),
        model.vocab_size,
        tokenizer.describe(),
        model.n_embd,
        model.block_size
    )?;
    for row in &rows {
        writeln!(
            out,
            "  {:name_width$}  {:detail_width$}  {:shape_width$}  {:>12}",
            row.name,
            row.detail,
            row.shape,
            group_digits(row.params)
        )?;
    }
    writeln!(
        out,
        "total parameters: {}",
        group_digits(model.num_params())
    )?;
    let training = MemoryEstimate::training(model, batch, backend);
    let generation = MemoryEstimate::generation(model, backend);
    writeln!(
        out,
        "memory on {backend}: training (batch {batch} x {}) about {}: {}",
        model.block_size,
        human_bytes(training.total()),
        training.breakdown()
    )?;
    writeln!(
        out,
        "memory on {backend}: generation about {}",
        human_bytes(generation.total())
    )?;
    if backend.is_cpu() {
        match available_memory() {
            Some(available) => writeln!(
                out,
                "this machine: {} ({})",
                human_bytes(available.bytes as f64),
                available.limited_by
            )?,
            None => writeln!(out, "this machine: its available memory is unknown here")?,
        }
    }
    Ok(())
}

/// Stops a job that would not fit in memory, and warns about one that might not; `skip` (the
/// `--skip-memory-check` flag) turns the stop into a warning. Only the CPU backends are checked:
/// their memory is the machine's RAM.
fn check_memory(
    need: &MemoryEstimate,
    backend: BackendKind,
    what: &str,
    shrink: &str,
    skip: bool,
) -> Result<()> {
    if !backend.is_cpu() {
        return Ok(());
    }
    match judge(need, available_memory(), what, shrink) {
        Verdict::Fits => Ok(()),
        Verdict::Tight(message) => {
            eprintln!("warning: {message}");
            Ok(())
        }
        Verdict::TooBig(message) if skip => {
            eprintln!("warning: {message}; going on because of --skip-memory-check");
            Ok(())
        }
        Verdict::TooBig(message) => bail!("{message}; --skip-memory-check tries anyway"),
    }
}

/// `runs/<stem>`, or the first `runs/<stem>-N` that holds no run yet: never overwrite results.
fn default_run_dir(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let base = Path::new("runs");
    let taken = |dir: &Path| dir.join("checkpoints").exists() || dir.join("config.ron").exists();
    let first = base.join(&stem);
    if !taken(&first) {
        return first;
    }
    (2..)
        .map(|n| base.join(format!("{stem}-{n}")))
        .find(|dir| !taken(dir))
        .expect("some suffix is free")
}

struct TrainTask<'a> {
    prepared: &'a Prepared,
    options: TrainOptions,
    /// Data-parallel over the devices and these nodes, or one device when `None`.
    cluster: Option<Cluster>,
}

impl DevicesTask for TrainTask<'_> {
    type Output = Result<TrainReport, TrainError>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>, kind: BackendKind) -> Self::Output {
        match &self.cluster {
            Some(cluster) => {
                train_parallel::<B>(self.prepared, &self.options, &devices, kind, cluster)
            }
            None => train::<B>(self.prepared, &self.options, &devices[0], kind),
        }
    }
}

/// Exit status for a run stopped by a signal: 128 + the signal number, as shells report it.
fn signal_exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(1)
}

/// SIGINT and SIGTERM set `stop` (to the signal's number) instead of killing the process; the
/// trainer then checkpoints and returns. A second Ctrl-C still kills it at once.
fn install_stop_handler() -> Result<Arc<AtomicI32>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicI32::new(0));
    let armed = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Runs first: exits at once if an earlier signal already armed it.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&armed))
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&armed))
            .context("installing the signal handler")?;
        let flag = Arc::clone(&stop);
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal, move || {
                flag.store(signal, Ordering::SeqCst);
            })
        }
        .context("installing the signal handler")?;
    }
    Ok(stop)
}

fn train_command(args: TrainArgs) -> Result<ExitCode> {
    let cluster = args.cluster()?;
    if cluster.nodes > 1 && std::env::var_os("RUST_LOG").is_none() {
        // Burn's collective installs an INFO logger for every connection and tensor transfer
        // unless one is installed already: install a silent one (RUST_LOG set keeps Burn's).
        let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::new());
    }
    if args.parallel() {
        quiet_collective_panics();
    }
    let (config, origin, run_dir, resume) = match (&args.resume, &args.config) {
        (Some(run_dir), _) => {
            let run = open_run(run_dir)?;
            let origin = run.path.display().to_string();
            let tinygpt_train::Weights::Checkpoint(checkpoint) = run.weights else {
                bail!(
                    "{} is a Hugging Face model, not a tinygpt run: fine-tune it with a config \
                     whose training.init_from names it (see configs/finetune_shakespeare.ron)",
                    run_dir.display()
                );
            };
            (run.config, origin, run_dir.clone(), Some(checkpoint))
        }
        (None, Some(path)) => {
            let mut config = RunConfig::load(path)?;
            if let Some(seed) = args.seed {
                config.training.seed = seed;
            }
            let run_dir = args.out.clone().unwrap_or_else(|| default_run_dir(path));
            (config, path.display().to_string(), run_dir, None)
        }
        (None, None) => bail!("give a config to train, or --resume RUN_DIR"),
    };
    let mut config = config;
    if let Some(max_iters) = args.max_iters {
        config.training.max_iters = max_iters;
    }
    if let Some(checkpoint) = &resume {
        if checkpoint.meta.step >= config.training.max_iters {
            bail!(
                "the run is already at step {} (max_iters {}): pass a larger --max-iters to \
                 train further",
                checkpoint.meta.step,
                config.training.max_iters
            );
        }
    }
    let backend = match (&resume, args.backend) {
        (_, Some(chosen)) => {
            if let Some(trained_on) = resume.as_ref().and_then(|c| run_backend(&c.meta.backend)) {
                if trained_on != chosen {
                    eprintln!(
                        "note: the run trained on {trained_on}; continuing on {chosen}, so it \
                         will not reproduce an uninterrupted run exactly"
                    );
                }
            }
            chosen
        }
        (Some(checkpoint), None) => run_backend(&checkpoint.meta.backend).with_context(|| {
            format!(
                "the checkpoint names an unknown backend {:?}: choose one with --backend",
                checkpoint.meta.backend
            )
        })?,
        (None, None) => BackendKind::default(),
    };
    let devices = args.devices.clone().unwrap_or_default();
    let local_peers = devices.peers(backend)?;
    let peers = cluster.world(local_peers);
    let batch_size = config.training.batch_size;
    if !batch_size.is_multiple_of(peers) {
        return Err(ClusterError::BatchDoesNotDivide { batch_size, peers }.into());
    }
    let prepared = prepare(config, &origin)?;
    // Each peer holds a replica and its share of the batch; CPU peers share this machine's RAM.
    let need = MemoryEstimate::training(&prepared.model, batch_size / peers, backend)
        .replicas(if backend.is_cpu() { local_peers } else { 1 });
    check_memory(
        &need,
        backend,
        "training",
        need.what_to_shrink(),
        args.skip_memory_check,
    )?;
    let options = TrainOptions {
        run_dir,
        progress: !args.quiet,
        verbose: !args.quiet,
        stop: Some(install_stop_handler()?),
        resume,
    };
    let node_rank = cluster.node_rank;
    let parallel = args.parallel();
    let result = dispatch_devices(
        backend,
        parallel.then_some(&devices),
        TrainTask {
            prepared: &prepared,
            options,
            cluster: parallel.then_some(cluster),
        },
    )?;
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            let TrainError::Interrupted {
                signal,
                ref run_dir,
                ..
            } = error
            else {
                return Err(error.into());
            };
            if node_rank > 0 {
                eprintln!("training stopped by signal {signal}; node 0 wrote the checkpoint");
                return Ok(ExitCode::from(signal_exit_code(signal)));
            }
            eprintln!("{error}");
            // The run remembers its backend, so this resumes exactly where it stopped.
            eprintln!(
                "Continue with: {} train --resume {}",
                invocation(),
                shell_word(&run_dir.display().to_string())
            );
            return Ok(ExitCode::from(signal_exit_code(signal)));
        }
    };
    let last = report.last_eval;
    let on = if report.peers > 1 {
        format!("{} peers of {}", report.peers, report.backend)
    } else {
        report.backend.to_string()
    };
    if report.peers > 1 {
        println!(
            "replicas identical: all {} peers hold the same weights",
            report.peers
        );
    }
    if node_rank > 0 {
        println!(
            "done: node {node_rank}'s peers trained {} steps with node 0, which wrote the run \
             (val loss {:.4}, whole val split {:.4})",
            last.step, last.val, report.val_loss_full
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "done: {} steps on {} in {:.1}s ({:.0} tokens/s): train loss {:.4}, val loss {:.4} \
         (whole val split: {:.4})",
        last.step,
        on,
        report.wall_time.as_secs_f64(),
        report.tokens_per_sec,
        last.train,
        last.val,
        report.val_loss_full
    );
    println!(
        "run directory: {} (generate with: {} generate {})",
        report.run_dir.display(),
        invocation(),
        shell_word(&report.run_dir.display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}

/// Burn's collective panics in its own threads when a node's connection drops, and then in the
/// peers' calls; the run turns that into one error naming the lost node, so a panic there prints
/// one line instead of a backtrace.
fn quiet_collective_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_collective = info.location().is_some_and(|at| {
            let file = at.file();
            file.contains("burn-collective") || file.contains("burn-communication")
        });
        if in_collective {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            eprintln!("note: Burn's collective stopped: {message}");
        } else {
            default_hook(info);
        }
    }));
}

/// The backend a checkpoint records (`None` for a name this build does not know).
fn run_backend(name: &str) -> Option<BackendKind> {
    name.parse().ok()
}

/// How the user started tinygpt, for the commands it suggests: `cargo xtask` (which sets
/// `TINYGPT_INVOKED_AS`), the path they ran, or `tinygpt` from the PATH.
fn invocation() -> String {
    if let Some(set) = std::env::var("TINYGPT_INVOKED_AS")
        .ok()
        .filter(|s| !s.is_empty())
    {
        return set;
    }
    std::env::args()
        .next()
        .filter(|program| program.contains('/'))
        .map_or_else(|| "tinygpt".into(), |program| shell_word(&program))
}

/// `word` as a shell reads it back: quoted when it holds anything but plain path characters.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

struct GenerateTask<'a> {
    args: &'a GenerateArgs,
    run: tinygpt_train::LoadedRun,
}

impl BackendTask for GenerateTask<'_> {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _kind: BackendKind) -> Self::Output {
        let args = self.args;
        let run = self.run;
        let unknown = run.tokenizer.unknown_chars(&args.prompt);
        if !unknown.is_empty() {
            let listed: Vec<String> = unknown.iter().map(|c| format!("{c:?}")).collect();
            bail!(
                "the prompt contains characters the model never saw: {} (its vocabulary has {} \
                 characters)",
                listed.join(", "),
                run.tokenizer.vocab_size()
            );
        }
        let mut prompt = if args.prompt.is_empty() {
            run.tokenizer.start_tokens()
        } else {
            run.tokenizer.encode(&args.prompt)?
        };
        if let Some(&token) = prompt.iter().find(|&&t| t >= run.model.vocab_size) {
            bail!(
                "the prompt encodes to token {token}, outside the model's vocabulary of {} tokens",
                run.model.vocab_size
            );
        }
        let block_size = run.model.block_size;
        if prompt.len() > block_size {
            eprintln!(
                "note: the prompt is {} tokens; the model sees only its last {block_size} \
                 (block_size)",
                prompt.len()
            );
            prompt.drain(..prompt.len() - block_size);
        }
        activity::enter(Phase::LoadingCheckpoint, run.step());
        let started = std::time::Instant::now();
        let model = run
            .load_model::<B::InnerBackend>(&device)
            .with_context(|| format!("loading weights from {}", run.path.display()))?;
        let loaded = started.elapsed();
        let mut sampler = Sampler::new(
            Sampling {
                temperature: args.temperature,
                top_k: args.top_k,
                top_p: args.top_p,
            },
            args.seed,
        );
        activity::enter(Phase::Sampling, run.step());
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut write_error = None;
        write!(out, "{}", args.prompt)?;
        // Byte-level tokens may end mid-character: print whole characters only.
        let mut text = TextStream::new(&run.tokenizer);
        let generating = std::time::Instant::now();
        let mut first_token = None;
        let mut produced = 0usize;
        model.generate_with(&prompt, args.max_new_tokens, &mut sampler, |token| {
            first_token.get_or_insert_with(|| generating.elapsed());
            produced += 1;
            let piece = text.push(token).unwrap_or_default();
            match write!(out, "{piece}").and_then(|_| out.flush()) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    write_error = Some(e);
                    ControlFlow::Break(())
                }
            }
        });
        let generated = generating.elapsed();
        if args.stats {
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            let first = first_token.unwrap_or(generated);
            eprintln!(
                "stats: weights loaded in {:.0} ms; prompt of {} tokens to the first new token \
                 {:.1} ms; {produced} new tokens in {:.1} ms ({:.1} tokens/s; {:.2} ms per token \
                 after the first); peak resident memory {}",
                ms(loaded),
                prompt.len(),
                ms(first),
                ms(generated),
                produced as f64 / generated.as_secs_f64().max(1e-9),
                ms(generated - first) / produced.saturating_sub(1).max(1) as f64,
                tinygpt_train::memory::resident_memory()
                    .map_or("unknown".into(), |(peak, _)| human_bytes(peak as f64))
            );
        }
        let rest = text.finish();
        match write_error.map_or_else(|| writeln!(out, "{rest}"), Err) {
            // A closed pipe (`| head`) is a normal way to stop reading.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(()),
        }
    }
}

fn generate_command(args: GenerateArgs) -> Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!(
            "--temperature must be 0 or positive, got {}",
            args.temperature
        );
    }
    if args.top_k == Some(0) {
        bail!("--top-k must be at least 1");
    }
    if let Some(p) = args.top_p {
        if !(p > 0.0 && p <= 1.0) {
            bail!("--top-p must be in (0, 1], got {p}");
        }
    }
    let run = open_run(&args.run)?;
    // The run's own backend reproduces what it computed; a run trained on a GPU still generates
    // on a machine or build without one.
    let backend = args.backend.unwrap_or_else(|| {
        run.backend()
            .and_then(run_backend)
            .filter(|kind| kind.compiled_in())
            .unwrap_or_default()
    });
    check_memory(
        &MemoryEstimate::generation(&run.model, backend),
        backend,
        "generation",
        "The model is too large for this machine's memory",
        args.skip_memory_check,
    )?;
    dispatch(backend, GenerateTask { args: &args, run })?
}

struct EvalTask {
    run: LoadedRun,
    prepared: Prepared,
}

impl BackendTask for EvalTask {
    type Output = Result<f64>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _kind: BackendKind) -> Self::Output {
        activity::enter(Phase::LoadingCheckpoint, self.run.step());
        let model = self
            .run
            .load_model::<B::InnerBackend>(&device)
            .with_context(|| format!("loading weights from {}", self.run.path.display()))?;
        activity::enter(Phase::Evaluating, self.run.step());
        Ok(full_split_loss(
            &model,
            &self.prepared,
            tinygpt_data::Split::Val,
            &device,
        ))
    }
}

fn eval_command(args: EvalArgs) -> Result<()> {
    let run = open_run(&args.model)?;
    let mut config = run.config.clone();
    let origin = match &args.data {
        Some(path) if path.extension().is_some_and(|e| e == "ron") => {
            config.data = RunConfig::load(path)?.data;
            path.display().to_string()
        }
        Some(path) => {
            config.data.corpus = Corpus::File {
                path: path.clone(),
                sha256: None,
            };
            path.display().to_string()
        }
        None => match &config.data.corpus {
            Corpus::TinyShakespeare => "Tiny Shakespeare".to_string(),
            Corpus::File { path, .. } | Corpus::Url { path, .. } => path.display().to_string(),
        },
    };
    config.training.batch_size = args
        .batch_size
        .unwrap_or((4096 / run.model.block_size).max(1));
    if config.training.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let prepared = prepare_with(config, &origin, Some(run.tokenizer.clone()))?;
    let tokens = prepared
        .splits
        .window_count(tinygpt_data::Split::Val, prepared.model.block_size)
        * prepared.model.block_size;
    let backend = args.backend.unwrap_or_default();
    check_memory(
        &MemoryEstimate::generation(&run.model, backend),
        backend,
        "evaluation",
        "The model is too large for this machine's memory",
        false,
    )?;
    let model_path = run.path.clone();
    let block_size = prepared.model.block_size;
    let loss = dispatch(backend, EvalTask { run, prepared })??;
    println!(
        "{}: val loss {loss:.4}, perplexity {:.2}, over {} tokens of {origin} (the whole \
         validation split, in windows of {block_size}) on {backend}",
        model_path.display(),
        loss.exp(),
        group_digits(tokens as u64),
    );
    Ok(())
}

fn export_command(args: ExportArgs) -> Result<()> {
    let run = open_run(&args.model)?;
    let device = Default::default();
    let model = run
        .load_model::<burn::backend::NdArray<f32>>(&device)
        .with_context(|| format!("loading weights from {}", run.path.display()))?;
    tinygpt_train::hf::export(&model, &run.model, &run.tokenizer, &args.hf)?;
    println!(
        "wrote {} and {} to {} ({} parameters); load it with \
         GPT2LMHeadModel.from_pretrained({:?})",
        tinygpt_train::hf::CONFIG_FILE,
        tinygpt_train::hf::WEIGHTS_FILE,
        args.hf.display(),
        group_digits(run.model.num_params()),
        args.hf.display().to_string()
    );
    Ok(())
}

struct BenchTask<'a> {
    args: &'a BenchArgs,
    model: tinygpt_model::ModelConfig,
    training: tinygpt_train::TrainingSpec,
    batch_size: usize,
}

impl BackendTask for BenchTask<'_> {
    type Output = tinygpt_train::bench::StepTiming;

    fn run<B: AutodiffBackend>(self, device: B::Device, kind: BackendKind) -> Self::Output {
        tinygpt_train::bench::time_train_steps::<B>(
            &self.model,
            &self.training,
            tinygpt_train::bench::StepPlan {
                batch_size: self.batch_size,
                warmup: self.args.warmup,
                steps: self.args.steps,
            },
            &device,
            kind.name(),
            |i, took| {
                if self.args.progress {
                    let phase = if i < self.args.warmup {
                        "warm-up"
                    } else {
                        "timed"
                    };
                    eprintln!("step {i} ({phase}): {:.1} ms", took.as_secs_f64() * 1e3);
                }
            },
        )
    }
}

/// `bench --devices`: the same steps, data-parallel.
struct ParallelBench<'a> {
    task: BenchTask<'a>,
}

impl DevicesTask for ParallelBench<'_> {
    type Output = Result<tinygpt_train::bench::StepTiming, TrainError>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>, kind: BackendKind) -> Self::Output {
        let task = self.task;
        tinygpt_train::bench::time_parallel_train_steps::<B>(
            &task.model,
            &task.training,
            tinygpt_train::bench::StepPlan {
                batch_size: task.batch_size,
                warmup: task.args.warmup,
                steps: task.args.steps,
            },
            &devices,
            kind.name(),
        )
    }
}

struct GenerationBench<'a> {
    args: &'a BenchArgs,
    run: LoadedRun,
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

impl BackendTask for GenerationBench<'_> {
    type Output = Result<GenerationTiming>;

    fn run<B: AutodiffBackend>(self, device: B::Device, kind: BackendKind) -> Self::Output {
        use rand::{Rng, SeedableRng};
        let args = self.args;
        let model = self.run.load_model::<B::InnerBackend>(&device)?;
        let block_size = self.run.model.block_size;
        if args.prompt_tokens + args.new_tokens > block_size || args.prefill_tokens > block_size {
            bail!(
                "--prompt-tokens + --new-tokens and --prefill-tokens must fit the context of \
                 {block_size} tokens"
            );
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let vocab = self.run.model.vocab_size;
        let mut random =
            |n: usize| -> Vec<usize> { (0..n).map(|_| rng.random_range(0..vocab)).collect() };
        let (prompt, long_prompt) = (
            random(args.prompt_tokens.max(1)),
            random(args.prefill_tokens.max(1)),
        );
        let greedy = Sampler::greedy;
        let time = |prompt: &[usize], new: usize| {
            let started = std::time::Instant::now();
            let tokens = model.generate(prompt, new, &mut greedy());
            assert_eq!(tokens.len(), new);
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
        Ok(GenerationTiming {
            backend: kind.name().into(),
            prompt_tokens: prompt.len(),
            new_tokens: args.new_tokens,
            generate_ms,
            tokens_per_sec: args.new_tokens as f64 / (generate_ms / 1e3),
            prefill_tokens: long_prompt.len(),
            prefill_ms,
        })
    }
}

fn bench_generation(args: &BenchArgs) -> Result<()> {
    let run = open_run(&args.config)?;
    check_memory(
        &MemoryEstimate::generation(&run.model, args.backend),
        args.backend,
        "this benchmark",
        "The model is too large for this machine's memory",
        args.skip_memory_check,
    )?;
    let resident_before = tinygpt_train::memory::resident_memory().map(|(_, now)| now);
    let timing = dispatch(args.backend, GenerationBench { args, run })??;
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

fn bench_command(args: BenchArgs) -> Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.generation {
        return bench_generation(&args);
    }
    let config = RunConfig::load(&args.config)?;
    let model = config
        .model
        .resolve(args.vocab_size)
        .with_context(|| format!("{}", args.config.display()))?;
    let batch_size = args.batch_size.unwrap_or(config.training.batch_size);
    tinygpt_model::set_cpu_kernels(!args.plain_kernels);
    let peers = match &args.devices {
        Some(devices) => devices.peers(args.backend)?,
        None => 1,
    };
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
    let task = BenchTask {
        args: &args,
        model,
        training: config.training.clone(),
        batch_size,
    };
    let timing = match &args.devices {
        Some(devices) => dispatch_devices(args.backend, Some(devices), ParallelBench { task })??,
        None => dispatch(args.backend, task)?,
    };
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
    } else {
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
    }
    Ok(())
}
