//! A small Transformer trained on a generated corpus learns it, on every CPU backend, and
//! leaves a complete run directory behind.

use rand::{rngs::StdRng, Rng, SeedableRng};
use std::path::Path;
use tinygpt_backends::engine;
use tinygpt_tokenizer::Tokenizer;
use tinygpt_train::checkpoint::{list_step_checkpoints, BEST_CHECKPOINT, CHECKPOINT_DIR};
use tinygpt_train::metrics::read_metrics;
use tinygpt_train::{open_run, prepare, BackendKind, Cluster, RunConfig, TrainOptions};

/// Sentences from a tiny grammar: predictable spelling, some randomness in word choice.
fn generated_corpus(path: &Path) {
    let subjects = ["the cat", "a dog", "my friend", "the king"];
    let verbs = ["sees", "likes", "finds", "keeps"];
    let objects = ["the ball.", "a crown.", "some bread.", "the moon."];
    let mut rng = StdRng::seed_from_u64(42);
    let mut text = String::new();
    for _ in 0..1500 {
        let pick =
            |words: &[&'static str], rng: &mut StdRng| words[rng.random_range(0..words.len())];
        text.push_str(&format!(
            "{} {} {}\n",
            pick(&subjects, &mut rng),
            pick(&verbs, &mut rng),
            pick(&objects, &mut rng)
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn small_config(corpus: &Path, steps: usize) -> RunConfig {
    RunConfig::parse(
        &format!(
            "(
                model: (n_embd: 32, block_size: 16, layers: [Block(n_head: 4), Block(n_head: 4), LayerNorm()],
                        init: Normal(std: 0.02)),
                data: (corpus: File(path: {corpus:?})),
                training: (batch_size: 16, max_iters: {steps}, learning_rate: 3e-3, eval_interval: 100,
                           eval_iters: 10, sample_tokens: 64, keep_checkpoints: 2),
            )"
        ),
        "small.ron",
    )
    .unwrap()
}

fn learns_on(backend: BackendKind) {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    generated_corpus(&corpus);
    let prepared = prepare(small_config(&corpus, 300), "small.ron").unwrap();
    let vocab = prepared.tokenizer.vocab_size();
    let run_dir = dir.path().join("run");
    let report = engine(backend, None)
        .unwrap()
        .train(&prepared, &TrainOptions::new(&run_dir), &Cluster::default())
        .unwrap();

    let first = report.evaluations[0];
    let last = report.last_eval;
    let uniform = (vocab as f64).ln();
    assert!(
        (first.val - uniform).abs() < 0.2,
        "{backend}: starts near ln(vocab): {first:?}"
    );
    assert!(
        last.val < 0.45 * uniform,
        "{backend}: val loss {:.3} should fall far below ln({vocab}) = {uniform:.3}",
        last.val
    );
    assert_eq!(last.step, 300);
    assert!(
        (report.val_loss_full - last.val).abs() < 0.1,
        "{backend}: the whole-split val loss {:.4} and the 10-batch estimate {:.4} measure the \
         same thing",
        report.val_loss_full,
        last.val
    );
    assert_eq!(report.sample.chars().count(), 64);

    // The run directory holds what a user needs.
    let metrics = read_metrics(&run_dir.join("metrics.csv")).unwrap();
    let steps: Vec<usize> = metrics.iter().map(|m| m.step).collect();
    assert_eq!(steps, [0, 100, 200, 300]);
    assert!(metrics.iter().skip(1).all(|m| m.tokens_per_sec > 0.0));
    let kept: Vec<usize> = list_step_checkpoints(&run_dir)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(kept, [200, 300], "keep_checkpoints: 2");
    assert!(run_dir.join(CHECKPOINT_DIR).join(BEST_CHECKPOINT).is_file());
    for file in ["config.ron", "vocab.json", "sample.txt", "summary.json"] {
        assert!(run_dir.join(file).is_file(), "{file}");
    }
    let summary: tinygpt_train::trainer::RunSummary =
        serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary.val_loss_full, Some(report.val_loss_full));
    let run = open_run(&run_dir).unwrap();
    assert_eq!(run.step(), 300);
    assert_eq!(run.tokenizer, prepared.tokenizer);
    assert_eq!(run.config, prepared.config);
}

#[test]
fn learns_a_generated_corpus_on_ndarray() {
    learns_on(BackendKind::NdArray);
}

#[test]
fn learns_a_generated_corpus_on_flex() {
    learns_on(BackendKind::Flex);
}

/// The whole-split loss weights every token equally, whatever the batching: a last, partial
/// batch counts by its windows, and batches of one window give the same mean.
#[test]
fn full_split_loss_is_the_mean_over_windows() {
    use tinygpt_data::Split;
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    generated_corpus(&corpus);
    let mut prepared = prepare(small_config(&corpus, 1), "small.ron").unwrap();
    let model = engine(BackendKind::NdArray, None)
        .unwrap()
        .init(&prepared.model, 7);
    let windows = prepared
        .splits
        .window_count(Split::Val, prepared.model.block_size);
    assert_ne!(windows % 16, 0, "the test needs a partial last batch");
    let batched = model.split_loss(&prepared, Split::Val);
    prepared.config.training.batch_size = 1;
    let one_by_one = model.split_loss(&prepared, Split::Val);
    assert!(
        (batched - one_by_one).abs() < 1e-5,
        "{batched} vs {one_by_one}"
    );
    let uniform = (prepared.tokenizer.vocab_size() as f64).ln();
    assert!(
        (batched - uniform).abs() < 0.2,
        "an untrained model is near ln(vocab)"
    );
}
