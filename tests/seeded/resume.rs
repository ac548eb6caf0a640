//! Resuming a run reproduces the uninterrupted run exactly, dropout included.

use crate::one_at_a_time;
use std::path::Path;
use tinygpt_backends::engine;
use tinygpt_train::checkpoint::step_checkpoint_path;
use tinygpt_train::{
    prepare, BackendKind, Checkpoint, Cluster, LossEstimate, RunConfig, TrainError, TrainOptions,
    TrainReport,
};

fn config(corpus: &Path, max_iters: usize) -> RunConfig {
    RunConfig::parse(
        &format!(
            "(
                model: (n_embd: 16, block_size: 8, layers: [Block(n_head: 2), LayerNorm()],
                        dropout: 0.1, init: Normal(std: 0.02)),
                data: (corpus: File(path: {corpus:?})),
                training: (batch_size: 8, max_iters: {max_iters}, learning_rate: 3e-3,
                           eval_interval: 50, eval_iters: 4, sample_tokens: 16),
            )"
        ),
        "resume.ron",
    )
    .unwrap()
}

fn train_on(
    kind: BackendKind,
    options: TrainOptions,
    config: RunConfig,
) -> Result<TrainReport, TrainError> {
    let prepared = prepare(config, "resume.ron").unwrap();
    engine(kind, None)
        .unwrap()
        .train(&prepared, &options, &Cluster::default())
}

fn run_on(kind: BackendKind, options: TrainOptions, config: RunConfig) -> TrainReport {
    train_on(kind, options, config).unwrap()
}

fn run(options: TrainOptions, config: RunConfig) -> TrainReport {
    run_on(BackendKind::Flex, options, config)
}

/// Trains 200 steps straight, and 130 then resumed to 200; returns the evaluations at steps
/// 0, 50, 100, 150 and 200 of each, and the two samples.
fn straight_and_resumed(kind: BackendKind) -> [(Vec<LossEstimate>, String); 2] {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    let text: String = (0..300)
        .map(|i| format!("line {} of {}\n", i % 17, i % 5))
        .collect();
    std::fs::write(&corpus, text).unwrap();

    let straight = run_on(
        kind,
        TrainOptions::new(dir.path().join("straight")),
        config(&corpus, 200),
    );

    // Stop at 130, between evaluations (as an interruption would), then continue to 200.
    let part = dir.path().join("part");
    let first = run_on(kind, TrainOptions::new(&part), config(&corpus, 130));
    assert_eq!(first.last_eval.step, 130);
    let checkpoint = Checkpoint::read(&step_checkpoint_path(&part, 130)).unwrap();
    assert_eq!(checkpoint.meta.step, 130);
    let mut options = TrainOptions::new(&part);
    options.resume = Some(checkpoint);
    let resumed = run_on(kind, options, config(&corpus, 200));
    assert_eq!(resumed.evaluations.len(), 2, "150 and 200");

    // The metrics file reads as one run: the straight run's rows plus the stop at 130.
    let steps: Vec<usize> = tinygpt_train::metrics::read_metrics(&part.join("metrics.csv"))
        .unwrap()
        .iter()
        .map(|row| row.step)
        .collect();
    assert_eq!(steps, [0, 50, 100, 130, 150, 200]);

    let logged = [0, 50, 100, 150, 200];
    let pick = |evals: Vec<LossEstimate>| -> Vec<LossEstimate> {
        evals
            .into_iter()
            .filter(|e| logged.contains(&e.step))
            .collect()
    };
    let pieced: Vec<LossEstimate> = first
        .evaluations
        .into_iter()
        .chain(resumed.evaluations)
        .collect();
    [
        (pick(straight.evaluations), straight.sample),
        (pick(pieced), resumed.sample),
    ]
}

#[test]
fn resumed_run_matches_the_uninterrupted_one_exactly_on_flex() {
    let [straight, resumed] = straight_and_resumed(BackendKind::Flex);
    assert_eq!(resumed, straight);
}

/// ndarray's backward pass is not bit-reproducible even between two fresh runs (a kernel's
/// summation order varies), so on ndarray the resumed run is held to a tolerance.
#[test]
fn resumed_run_matches_the_uninterrupted_one_closely_on_ndarray() {
    let [(straight, _), (resumed, _)] = straight_and_resumed(BackendKind::NdArray);
    assert_eq!(straight.len(), resumed.len());
    for (a, b) in straight.iter().zip(&resumed) {
        assert_eq!(a.step, b.step);
        assert!(
            (a.train - b.train).abs() < 1e-2 && (a.val - b.val).abs() < 1e-2,
            "{a:?} vs {b:?}"
        );
    }
}

#[test]
fn a_checkpoint_for_another_architecture_is_refused() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, "abcdefgh\n".repeat(100)).unwrap();
    let run_dir = dir.path().join("run");
    run(TrainOptions::new(&run_dir), config(&corpus, 10));
    let checkpoint = Checkpoint::read(&step_checkpoint_path(&run_dir, 10)).unwrap();

    let mut other = config(&corpus, 20);
    other.model.n_embd = Some(32);
    let mut options = TrainOptions::new(&run_dir);
    options.resume = Some(checkpoint);
    let err = train_on(BackendKind::NdArray, options, other)
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("architecture"), "{err}");
}
