//! The real `tinygpt` binary on a GPT-2-shaped Hugging Face directory (GPT-2's 50,257-token
//! vocabulary, tiny otherwise): info, generate, fine-tune, generate from the fine-tune, eval,
//! export; and clear errors for what cannot work.

use crate::common::{assert_fails_with, text, tinygpt};
use std::path::Path;
use tinygpt_backends::{engine, BackendKind};
use tinygpt_tokenizer::AnyTokenizer;
use tinygpt_train::hf::HfGpt2Config;
use tinygpt_train::LoadedRun;

/// The token embedding's weights of a model on disk (run, checkpoint or Hugging Face directory).
fn token_embedding(run: &LoadedRun) -> Vec<f32> {
    let model = engine(BackendKind::NdArray, None)
        .unwrap()
        .load(run)
        .unwrap();
    model
        .parameters()
        .into_iter()
        .find(|p| p.name == "token_embedding.weight")
        .expect("every model has a token embedding")
        .values
}

/// The largest difference between two weight vectors of the same shape.
fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// 1 Block of 2 heads, 16 wide, 64 positions, GPT-2's vocabulary: 808,448 parameters.
fn small_gpt2() -> HfGpt2Config {
    HfGpt2Config {
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        n_positions: 64,
        vocab_size: 50257,
        n_inner: 64,
        layer_norm_epsilon: 1e-5,
        activation: tinygpt_layers::Activation::GeluTanh,
        initializer_range: 0.02,
    }
}

/// A random GPT-2-shaped Hugging Face directory, as the reference script or the hub would give.
fn write_hf_dir(dir: &Path) {
    let config = small_gpt2().model_spec(None, 0.0).resolve(50257).unwrap();
    engine(BackendKind::NdArray, None)
        .unwrap()
        .init(&config, 0)
        .export_hf(&AnyTokenizer::Gpt2(Default::default()), dir)
        .unwrap();
}

fn write_corpus(dir: &Path) {
    let corpus: String = (0..300)
        .map(|i| {
            [
                "ROMEO: to be or not to be\n",
                "JULIET: that is the question\n",
            ][i % 2]
        })
        .collect();
    std::fs::write(dir.join("corpus.txt"), corpus).unwrap();
}

#[test]
fn pretrained_directory_info_generate_finetune_eval_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_hf_dir(&d.join("gpt2"));
    write_corpus(d);

    let out = tinygpt(&["info", "gpt2"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("GPT-2 BPE") && stdout.contains("total parameters: 808,448"),
        "{stdout}"
    );
    assert!(stdout.contains("tied to token_embedding"), "{stdout}");

    let out = tinygpt(
        &[
            "generate",
            "gpt2",
            "--prompt",
            "ROMEO:",
            "--max-new-tokens",
            "20",
            "--temperature",
            "0.8",
            "--top-k",
            "200",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ROMEO:"));

    // A prompt longer than the context is cropped to its last block_size tokens, and says so.
    let long = "word ".repeat(100);
    let out = tinygpt(
        &[
            "generate",
            "gpt2",
            "--prompt",
            &long,
            "--max-new-tokens",
            "3",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("only its last 64"),
        "{}",
        text(&out.stderr)
    );

    let finetune = "(data: (corpus: File(path: \"corpus.txt\"), tokenizer: Gpt2), \
        training: (init_from: HuggingFace(path: \"gpt2\", block_size: 32), batch_size: 2, \
        max_iters: 4, learning_rate: 3e-5, eval_interval: 2, eval_iters: 1, sample_tokens: 10))";
    std::fs::write(d.join("finetune.ron"), finetune).unwrap();
    let out = tinygpt(&["train", "finetune.ron", "--quiet"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("done: 4 steps"),
        "{}",
        text(&out.stdout)
    );

    // It started from the pretrained weights: four steps at lr 3e-5 move them by little, where a
    // fresh init would differ by about 0.03.
    let run = tinygpt_train::open_run(&d.join("runs/finetune")).unwrap();
    assert_eq!(run.model.block_size, 32);
    let tuned = token_embedding(&run);
    let source = token_embedding(&tinygpt_train::open_run(&d.join("gpt2")).unwrap());
    let moved = max_difference(&tuned, &source);
    assert!(moved > 0.0 && moved < 1e-3, "{moved}");

    let out = tinygpt(
        &[
            "generate",
            "runs/finetune",
            "--prompt",
            "JULIET:",
            "--max-new-tokens",
            "10",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    for model in ["gpt2", "runs/finetune"] {
        let out = tinygpt(&["eval", model, "--data", "corpus.txt"], d);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("val loss") && stdout.contains("perplexity"),
            "{stdout}"
        );
    }

    let out = tinygpt(&["export", "runs/finetune", "--hf", "out/my-gpt2"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = tinygpt_train::open_run(&d.join("out/my-gpt2")).unwrap();
    assert_eq!(exported.model.block_size, 32);
    assert_eq!(token_embedding(&exported), tuned);

    // A Hugging Face directory is not a run to resume.
    let out = tinygpt(&["train", "--resume", "gpt2"], d);
    assert_fails_with(&out, &["Hugging Face model", "init_from"]);
}

#[test]
fn what_cannot_work_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_corpus(d);
    std::fs::create_dir_all(d.join("empty")).unwrap();
    for command in [
        &["info", "empty"][..],
        &["generate", "empty"],
        &["eval", "empty"],
    ] {
        assert_fails_with(
            &tinygpt(command, d),
            &["config.json", "huggingface-cli download"],
        );
    }

    // A character-level run cannot become a Hugging Face GPT-2.
    let config = "(model: (n_embd: 16, block_size: 8, layers: [Block(n_head: 2), LayerNorm()]), \
        data: (corpus: File(path: \"corpus.txt\")), training: (batch_size: 4, max_iters: 2, \
        learning_rate: 1e-3, eval_interval: 2, eval_iters: 1, sample_tokens: 5))";
    std::fs::write(d.join("char.ron"), config).unwrap();
    let out = tinygpt(&["train", "char.ron", "--quiet"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_fails_with(
        &tinygpt(&["export", "runs/char", "--hf", "out"], d),
        &["character-level", "tokenizer: Gpt2"],
    );
    assert!(!d.join("out").exists());

    // Fine-tuning GPT-2 on character tokens.
    write_hf_dir(&d.join("gpt2"));
    let config = "(data: (corpus: File(path: \"corpus.txt\")), training: (init_from: \
        HuggingFace(path: \"gpt2\"), batch_size: 2, max_iters: 2, learning_rate: 3e-5, \
        eval_interval: 2, eval_iters: 1))";
    std::fs::write(d.join("bad.ron"), config).unwrap();
    assert_fails_with(
        &tinygpt(&["train", "bad.ron"], d),
        &["tokenizer: Pretrained", "Gpt2"],
    );
    // A config without a model that names no pretrained one.
    std::fs::write(
        d.join("nomodel.ron"),
        "(training: (batch_size: 2, max_iters: 2, learning_rate: 1e-3, eval_interval: 2, eval_iters: 1))",
    )
    .unwrap();
    assert_fails_with(
        &tinygpt(&["train", "nomodel.ron"], d),
        &["no model section", "init_from"],
    );
}

#[test]
fn fine_tuning_starts_from_a_tinygpt_run_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_corpus(d);
    let base = "(model: (n_embd: 16, block_size: 16, layers: [Block(n_head: 2), LayerNorm()], \
        init: Normal(std: 0.02)), data: (corpus: File(path: \"corpus.txt\")), training: \
        (batch_size: 4, max_iters: 20, learning_rate: 1e-2, eval_interval: 20, eval_iters: 1, \
        sample_tokens: 5))";
    std::fs::write(d.join("base.ron"), base).unwrap();
    let out = tinygpt(&["train", "base.ron", "--quiet"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The architecture and the tokenizer come from the run; the context is cropped to 8.
    let tune = "(data: (corpus: File(path: \"corpus.txt\")), training: (init_from: \
        Run(path: \"runs/base\", block_size: 8), batch_size: 4, max_iters: 2, \
        learning_rate: 1e-5, eval_interval: 2, eval_iters: 1, sample_tokens: 5))";
    std::fs::write(d.join("tune.ron"), tune).unwrap();
    let out = tinygpt(&["train", "tune.ron", "--quiet"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tuned = tinygpt_train::open_run(&d.join("runs/tune")).unwrap();
    assert_eq!(tuned.model.block_size, 8);
    let base = tinygpt_train::open_run(&d.join("runs/base")).unwrap();
    let moved = max_difference(&token_embedding(&tuned), &token_embedding(&base));
    assert!(moved > 0.0 && moved < 1e-3, "{moved}");

    // Another architecture than the run's is refused, and so is a longer context.
    let other = tune.replace(
        "(data:",
        "(model: (n_embd: 32, block_size: 8, layers: [Block(n_head: 2), LayerNorm()]), data:",
    );
    std::fs::write(d.join("other.ron"), other).unwrap();
    assert_fails_with(
        &tinygpt(&["train", "other.ron"], d),
        &["architecture differs", "runs/base"],
    );
    std::fs::write(
        d.join("long.ron"),
        tune.replace("block_size: 8", "block_size: 32"),
    )
    .unwrap();
    assert_fails_with(
        &tinygpt(&["train", "long.ron"], d),
        &["block_size 32", "longer"],
    );
}
