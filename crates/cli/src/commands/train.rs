//! `tinygpt train`: train (or resume, or fine-tune) the model a config describes, on one device
//! or data-parallel over several devices and machines.

use super::{check_memory, invocation, run_backend, shell_word};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use tinygpt_train::{
    open_run, prepare, BackendKind, Cluster, ClusterError, Devices, MemoryEstimate, RunConfig,
    TimeBudget, TrainError, TrainOptions,
};

#[derive(Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["config", "resume"]))]
pub struct TrainArgs {
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
    /// Train for this much training time instead of a number of steps ("10m", "90s", "1h30m";
    /// evaluations and checkpoints not counted); the schedule stretches to it. With --resume:
    /// the run's whole budget, so a larger one trains on.
    #[arg(long, value_name = "DURATION")]
    time_budget: Option<TimeBudget>,
    /// Override the config's random seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print only the final summary.
    #[arg(long)]
    quiet: bool,
    /// Draw the loss curves in the terminal as they grow (instead of the progress bar and the
    /// evaluation lines); `tinygpt watch RUN` shows the same from another terminal.
    #[arg(long, conflicts_with = "quiet")]
    live: bool,
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

pub fn run(args: TrainArgs) -> Result<ExitCode> {
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
    if let Some(budget) = args.time_budget {
        config.training.time_budget = Some(budget);
    }
    if let (Some(checkpoint), Some(budget)) = (&resume, config.training.time_budget) {
        if checkpoint.meta.train_time_s >= budget.as_secs_f64() {
            bail!(
                "the run has already trained for {:.1}s, its whole time budget of {budget}: \
                 pass a larger --time-budget to train further",
                checkpoint.meta.train_time_s
            );
        }
    } else if let Some(checkpoint) = &resume {
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
        progress: !args.quiet && !args.live,
        verbose: !args.quiet && !args.live,
        stop: Some(install_stop_handler()?),
        resume,
    };
    let node_rank = cluster.node_rank;
    let engine = tinygpt_backends::engine(backend, args.parallel().then_some(&devices))?;
    let stop_view = std::sync::atomic::AtomicBool::new(false);
    let trained = std::thread::scope(|scope| {
        if args.live {
            let run_dir = options.run_dir.clone();
            let stop = &stop_view;
            scope.spawn(move || {
                super::watch::follow(&run_dir, stop, std::time::Duration::from_millis(500), false)
            });
        }
        let trained = engine.train(&prepared, &options, &cluster);
        stop_view.store(true, std::sync::atomic::Ordering::Relaxed);
        trained
    });
    let report = match trained {
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
