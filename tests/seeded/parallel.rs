//! Data-parallel training on Burn's collective, with peers on threads of this process: N peers
//! on the same global batch follow the one-device run, and checkpoints move between peer counts.

use crate::one_at_a_time;
use std::path::Path;
use tinygpt_backends::engine;
use tinygpt_train::checkpoint::step_checkpoint_path;
use tinygpt_train::metrics::MetricsRow;
use tinygpt_train::{
    open_run, prepare, BackendKind, Checkpoint, Cluster, Devices, RunConfig, TrainError,
    TrainOptions, TrainReport,
};

fn config(corpus: &Path, max_iters: usize, batch_size: usize) -> RunConfig {
    RunConfig::parse(
        &format!(
            "(
                model: (n_embd: 16, block_size: 8, layers: [Block(n_head: 2), LayerNorm()],
                        dropout: 0.0, init: Normal(std: 0.02)),
                data: (corpus: File(path: {corpus:?})),
                training: (batch_size: {batch_size}, max_iters: {max_iters}, learning_rate: 1e-2,
                           gradient_accumulation_steps: 2, grad_clip: 0.5,
                           optimizer: (weight_decay: 0.1, decay_matrices_only: true),
                           eval_interval: 1, eval_iters: 2, sample_tokens: 8),
            )"
        ),
        "parallel.ron",
    )
    .unwrap()
}

fn run(
    kind: BackendKind,
    peers: usize,
    options: TrainOptions,
    config: RunConfig,
) -> Result<TrainReport, TrainError> {
    let prepared = prepare(config, "parallel.ron").unwrap();
    engine(kind, Some(&Devices::Number(peers))).unwrap().train(
        &prepared,
        &options,
        &Cluster::default(),
    )
}

fn corpus(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("corpus.txt");
    let text: String = (0..300)
        .map(|i| format!("line {} of {}; {}\n", i % 17, i % 5, i % 3))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn metrics(run_dir: &Path) -> Vec<MetricsRow> {
    tinygpt_train::metrics::read_metrics(&run_dir.join("metrics.csv")).unwrap()
}

/// Every parameter of a checkpoint, flattened in module order.
fn parameters(checkpoint_path: &Path) -> Vec<f32> {
    let run = open_run(checkpoint_path).unwrap();
    let model = engine(BackendKind::NdArray, None)
        .unwrap()
        .load(&run)
        .unwrap();
    model
        .parameters()
        .into_iter()
        .flat_map(|parameter| parameter.values)
        .collect()
}

fn assert_close(what: &str, a: &[f32], b: &[f32], tolerance: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= tolerance, "{what}: differ by {worst}");
}

fn assert_same_curve(what: &str, a: &[MetricsRow], b: &[MetricsRow], tolerance: f64) {
    assert_eq!(a.len(), b.len(), "{what}: rows");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.step, y.step);
        assert!(
            (x.train_loss - y.train_loss).abs() <= tolerance
                && (x.val_loss - y.val_loss).abs() <= tolerance,
            "{what}: step {}: {} / {} against {} / {}",
            x.step,
            x.train_loss,
            x.val_loss,
            y.train_loss,
            y.val_loss
        );
    }
}

/// Two peers on the same global batch follow the one-device run: losses of the first 5 steps
/// within 1e-5, parameters after 5 steps within 1e-4 (the trainer itself checks that the
/// replicas hold identical weights at the end).
fn two_peers_follow_one_device(kind: BackendKind) {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    let single = run(kind, 1, TrainOptions::new(&one), config(&corpus, 5, 4)).unwrap();
    let parallel = run(kind, 2, TrainOptions::new(&two), config(&corpus, 5, 4)).unwrap();
    assert_eq!((single.peers, parallel.peers), (1, 2));
    let curve = metrics(&one);
    assert_eq!(curve.len(), 6, "steps 0 to 5");
    // Training moved the loss: the comparison is not between two untrained models.
    assert!(
        curve[5].train_loss < curve[0].train_loss - 0.05,
        "{curve:?}"
    );
    assert_same_curve("2 peers", &metrics(&two), &curve, 1e-5);
    assert_close(
        "parameters after 5 steps",
        &parameters(&step_checkpoint_path(&two, 5)),
        &parameters(&step_checkpoint_path(&one, 5)),
        1e-4,
    );
    assert!((parallel.val_loss_full - single.val_loss_full).abs() < 1e-5);
    assert!(!parallel.sample.is_empty());
    // Rank 0 alone wrote the run: one metrics row per evaluation, one sample.
    assert!(two.join("sample.txt").is_file());
}

#[test]
fn two_flex_peers_follow_one_device() {
    two_peers_follow_one_device(BackendKind::Flex);
}

#[test]
fn two_ndarray_peers_follow_one_device() {
    two_peers_follow_one_device(BackendKind::NdArray);
}

/// A checkpoint is the one-device format: 2 peers → 1 and 1 → 2 continue the same curve.
#[test]
fn runs_resume_across_peer_counts() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let straight = dir.path().join("straight");
    run(
        BackendKind::Flex,
        1,
        TrainOptions::new(&straight),
        config(&corpus, 6, 4),
    )
    .unwrap();
    let reference = metrics(&straight);
    for (first, then) in [(2, 1), (1, 2)] {
        let part = dir.path().join(format!("{first}-then-{then}"));
        run(
            BackendKind::Flex,
            first,
            TrainOptions::new(&part),
            config(&corpus, 3, 4),
        )
        .unwrap();
        let mut options = TrainOptions::new(&part);
        options.resume = Some(Checkpoint::read(&step_checkpoint_path(&part, 3)).unwrap());
        let resumed = run(BackendKind::Flex, then, options, config(&corpus, 6, 4)).unwrap();
        assert_eq!(resumed.peers, then);
        let what = format!("{first} peers, then {then}");
        assert_same_curve(&what, &metrics(&part), &reference, 1e-5);
        assert_close(
            &what,
            &parameters(&step_checkpoint_path(&part, 6)),
            &parameters(&step_checkpoint_path(&straight, 6)),
            1e-4,
        );
    }
}

#[test]
fn a_batch_that_does_not_divide_is_refused() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let run_dir = dir.path().join("run");
    let err = run(
        BackendKind::Flex,
        3,
        TrainOptions::new(&run_dir),
        config(&corpus, 2, 4),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("batch_size 4") && message.contains("3 peers"),
        "{message}"
    );
    assert!(!run_dir.exists(), "nothing is written before the check");
}

/// With dropout, each peer masks its rows from a stream keyed by (seed, step, rank): the run is
/// reproducible for a peer count, and the replicas still end identical (the trainer checks).
#[test]
fn dropout_runs_are_reproducible_for_a_peer_count() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let with_dropout = || {
        let mut config = config(&corpus, 4, 4);
        config.model.dropout = 0.2;
        config
    };
    let curves: Vec<Vec<(usize, f64, f64)>> = ["a", "b", "one"]
        .iter()
        .map(|name| {
            let run_dir = dir.path().join(name);
            let peers = if *name == "one" { 1 } else { 2 };
            let report = run(
                BackendKind::Flex,
                peers,
                TrainOptions::new(&run_dir),
                with_dropout(),
            )
            .unwrap();
            assert_eq!(report.peers, peers);
            metrics(&run_dir)
                .iter()
                .map(|row| (row.step, row.train_loss, row.val_loss))
                .collect()
        })
        .collect();
    assert_eq!(curves[0], curves[1], "the same 2-peer run twice");
    // Masks are drawn per peer, so the 2-peer run is not the one-device run once training
    // starts (step 0 is evaluated before any mask is drawn).
    let gap = |i: usize| (curves[0][i].1 - curves[2][i].1).abs();
    assert!(
        gap(0) < 1e-5,
        "step 0: {:?} {:?}",
        curves[0][0],
        curves[2][0]
    );
    assert!(
        gap(4) > 1e-6,
        "step 4: {:?} {:?}",
        curves[0][4],
        curves[2][4]
    );
}

/// The all-reduce itself: three peers agree on the mean and the sum of their values.
#[test]
fn peers_all_reduce_to_the_same_mean_and_sum() {
    use burn::backend::{Autodiff, Flex};
    use burn::collective::ReduceOperation;
    use burn::tensor::Tensor;
    let _turn = one_at_a_time();
    let devices = vec![Default::default(); 3];
    let results = tinygpt_train::parallel::run_peers::<Autodiff<Flex>, _, _>(
        &devices,
        &Cluster::default(),
        |_, device, peer| {
            let mine = Tensor::<Flex, 1>::from_floats(
                [peer.rank as f32, 10.0 * peer.rank as f32 + 1.0],
                device,
            );
            let mean = peer.all_reduce(mine.clone(), ReduceOperation::Mean, "test")?;
            let sum = peer.all_reduce(mine.clone(), ReduceOperation::Sum, "test")?;
            let only0 = if peer.rank == 0 {
                mine.clone()
            } else {
                mine.zeros_like()
            };
            let from0 = peer.all_reduce(only0, ReduceOperation::Sum, "test")?;
            Ok([mean, sum, from0].map(|t| t.into_data().to_vec::<f32>().unwrap()))
        },
    )
    .unwrap();
    for result in results {
        let [mean, sum, from0] = result.unwrap();
        assert_eq!(mean, vec![1.0, 11.0]);
        assert_eq!(sum, vec![3.0, 33.0]);
        assert_eq!(from0, vec![0.0, 1.0]);
    }
}
