//! Data-parallel training on Burn's collective, with peers on threads of this process: N peers
//! on the same global batch follow the one-device run, and checkpoints move between peer counts.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use std::path::Path;
use tinygpt_train::checkpoint::step_checkpoint_path;
use tinygpt_train::metrics::MetricsRow;
use tinygpt_train::{
    dispatch_devices, prepare, train_parallel, BackendKind, Checkpoint, Cluster, Devices,
    DevicesTask, RunConfig, TrainError, TrainOptions, TrainReport,
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

struct Run {
    options: TrainOptions,
    config: RunConfig,
}

impl DevicesTask for Run {
    type Output = Result<TrainReport, TrainError>;
    fn run<B: AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
        kind: BackendKind,
    ) -> Result<TrainReport, TrainError> {
        let prepared = prepare(self.config, "parallel.ron").unwrap();
        train_parallel::<B>(
            &prepared,
            &self.options,
            &devices,
            kind,
            &Cluster::default(),
        )
    }
}

/// One process-wide collective and one generator per backend: the runs here take turns.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(
    kind: BackendKind,
    peers: usize,
    options: TrainOptions,
    config: RunConfig,
) -> Result<TrainReport, TrainError> {
    dispatch_devices(kind, Some(&Devices::Number(peers)), Run { options, config }).unwrap()
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
    struct Collect(Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.extend(
                param
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .unwrap(),
            );
        }
    }
    type B = burn::backend::NdArray<f32>;
    let checkpoint = Checkpoint::read(checkpoint_path).unwrap();
    let config = RunConfig::parse(&checkpoint.meta.config, "checkpoint").unwrap();
    let model_config = config
        .model
        .resolve(tinygpt_tokenizer::Tokenizer::vocab_size(
            &checkpoint.meta.vocab,
        ))
        .unwrap();
    let model =
        tinygpt_train::load_model::<B>(&model_config, &checkpoint.model, &Default::default())
            .unwrap();
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
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
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
