//! Time budgets: a budget ends a run, the schedule reaches its decay phase on time, an
//! interrupted run resumed keeps to the same budget; and a Muon run resumes exactly.

use crate::one_at_a_time;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tinygpt_backends::engine;
use tinygpt_train::checkpoint::{latest_checkpoint, list_step_checkpoints, step_checkpoint_path};
use tinygpt_train::metrics::read_metrics;
use tinygpt_train::trainer::RunSummary;
use tinygpt_train::{
    prepare, BackendKind, Checkpoint, Cluster, RunConfig, TrainError, TrainOptions, TrainReport,
};

fn corpus(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("corpus.txt");
    let text: String = (0..400)
        .map(|i| format!("line {} of {}\n", i % 17, i % 5))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// The speedrun's pieces on a model small enough for a test.
fn speedrun(corpus: &Path, training: &str) -> RunConfig {
    RunConfig::parse(
        &format!(
            "(
                model: (n_embd: 16, block_size: 8, position_embedding: false,
                        layers: [RmsNorm(weight: false),
                                 Repeat(n: 2, layer: SpeedrunBlock(n_head: 2, activation: ReluSquared,
                                                                   qk_norm: true, norm_weight: false)),
                                 RmsNorm(weight: false)],
                        lm_head_bias: false, init: Normal(std: 0.02), zero_init: true,
                        x0_skip: true, logit_softcap: 15.0),
                data: (corpus: File(path: {corpus:?})),
                training: (batch_size: 8, learning_rate: 3e-3, muon: (lr: 0.02),
                           eval_iters: 2, sample_tokens: 8, {training}),
            )"
        ),
        "speedrun.ron",
    )
    .unwrap()
}

fn train(config: RunConfig, options: &TrainOptions) -> Result<TrainReport, TrainError> {
    let prepared = prepare(config, "speedrun.ron").unwrap();
    engine(BackendKind::Flex, None)
        .unwrap()
        .train(&prepared, options, &Cluster::default())
}

fn summary(run_dir: &Path) -> RunSummary {
    serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn a_budget_ends_the_run_and_the_schedule_decays_on_time() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let config = speedrun(
        &corpus,
        "time_budget: \"1.5s\", eval_interval: 5, \
         lr_schedule: Wsd(warmup_iters: 2, decay_fraction: 0.5)",
    );
    let run_dir = dir.path().join("run");
    let report = train(config, &TrainOptions::new(&run_dir)).unwrap();
    let train_s = report.train_time.as_secs_f64();
    assert!(train_s >= 1.5, "stopped early, after {train_s:.3}s");
    let steps = report.last_eval.step;
    // One step past the budget at most (the budget is checked before each step).
    let per_step = train_s / steps as f64;
    assert!(
        train_s < 1.5 + 2.0 * per_step + 0.1,
        "ran past the budget: {train_s:.3}s"
    );
    assert!(steps >= 5, "only {steps} steps in 1.5s");
    let s = summary(&run_dir);
    assert_eq!(s.time_budget_s, Some(1.5));
    assert_eq!(s.steps, steps);
    assert_eq!(s.tokens_seen, (steps * 8 * 8) as u64);
    assert!((s.train_time_total_s - train_s).abs() < 1e-6, "{s:?}");

    // Each evaluation's learning rate is the schedule's at the share of the budget spent by
    // then, which the metrics give: each row's tokens/s covers the steps since the row before.
    let rows = read_metrics(&run_dir.join("metrics.csv")).unwrap();
    assert_eq!(
        rows.last().unwrap().step,
        steps,
        "the last step is evaluated"
    );
    let peak = 3e-3;
    let mut trained = 0.0;
    for pair in rows.windows(2) {
        let (before, row) = (&pair[0], &pair[1]);
        trained += (row.step - before.step) as f64 * 64.0 / row.tokens_per_sec;
        let fraction = trained / 1.5;
        let expected = if row.step < 2 {
            peak * (row.step + 1) as f64 / 3.0
        } else if fraction < 0.5 {
            peak
        } else {
            peak * (1.0 - fraction).max(0.0) / 0.5
        };
        assert!(
            (row.lr - expected).abs() < 0.01 * peak,
            "step {}: lr {} at {fraction:.4} of the budget, expected {expected}",
            row.step,
            row.lr
        );
    }
    assert_eq!(rows.last().unwrap().lr, 0.0, "decayed to min_lr at the end");
}

#[test]
fn an_interrupted_budget_run_resumes_to_the_same_budget() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let config = || {
        speedrun(
            &corpus,
            "time_budget: \"2s\", eval_interval: 5, lr_schedule: Wsd(decay_fraction: 0.3)",
        )
    };
    let run_dir = dir.path().join("run");
    let stop = Arc::new(AtomicI32::new(0));
    let mut options = TrainOptions::new(&run_dir);
    options.stop = Some(Arc::clone(&stop));
    // Stop once the run has trained a few steps (its first checkpoints after step 0 exist),
    // however fast this machine is.
    let signal = {
        let stop = Arc::clone(&stop);
        let run_dir = run_dir.clone();
        std::thread::spawn(move || {
            while !list_step_checkpoints(&run_dir)
                .iter()
                .any(|(step, _)| *step >= 5)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(15, Ordering::SeqCst);
        })
    };
    let interrupted = train(config(), &options);
    signal.join().unwrap();
    let Err(TrainError::Interrupted { step, .. }) = interrupted else {
        panic!("the run should stop at the signal: {interrupted:?}");
    };
    let checkpoint = Checkpoint::read(&latest_checkpoint(&run_dir).unwrap()).unwrap();
    assert_eq!(checkpoint.meta.step, step);
    let spent = checkpoint.meta.train_time_s;
    assert!(spent > 0.0 && spent < 2.0, "{spent}");

    let mut options = TrainOptions::new(&run_dir);
    options.resume = Some(checkpoint);
    let resumed = train(config(), &options).unwrap();
    let s = summary(&run_dir);
    assert_eq!(s.resumed_at, Some(step));
    assert!(s.train_time_total_s >= 2.0, "{s:?}");
    assert!(s.train_time_total_s < 3.0, "{s:?}");
    // This invocation trained for what was left of the budget, not a new budget.
    let this_time = resumed.train_time.as_secs_f64();
    assert!(
        (this_time - (s.train_time_total_s - spent)).abs() < 1e-6,
        "{this_time} vs {} - {spent}",
        s.train_time_total_s
    );
    assert!(this_time < 2.0 - spent + 0.5, "{this_time}");
    assert!(resumed.last_eval.step > step);
}

/// Muon's momentum buffers travel in the checkpoint: stopping and resuming changes nothing.
#[test]
fn a_muon_run_resumes_exactly() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    // A constant rate: the first part's max_iters (its end) must not change the schedule.
    let config =
        |steps: usize| speedrun(&corpus, &format!("max_iters: {steps}, eval_interval: 20"));
    let straight_dir = dir.path().join("straight");
    let straight = train(config(60), &TrainOptions::new(&straight_dir)).unwrap();

    let part = dir.path().join("part");
    let first = train(config(30), &TrainOptions::new(&part)).unwrap();
    assert_eq!(first.last_eval.step, 30);
    let checkpoint = Checkpoint::read(&step_checkpoint_path(&part, 30)).unwrap();
    let mut options = TrainOptions::new(&part);
    options.resume = Some(checkpoint);
    let resumed = train(config(60), &options).unwrap();
    assert_eq!(resumed.last_eval, straight.last_eval);
    assert_eq!(resumed.val_loss_full, straight.val_loss_full);
    assert_eq!(resumed.sample, straight.sample);
}
