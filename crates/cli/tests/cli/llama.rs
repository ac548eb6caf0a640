//! The real `tinygpt` binary on Llama-family Hugging Face directories (the tiny Qwen2 and Llama
//! of reference/make_llama_fixtures.py): info, generate (stopping at the end-of-sequence token),
//! chat, fine-tune with the model's own tokenizer, eval, export; and clear errors.

use crate::common::{assert_fails_with, text, tinygpt};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tinygpt_backends::{engine, BackendKind};
use tinygpt_model::Sampler;
use tinygpt_tokenizer::Tokenizer;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../reference/fixtures/llama")
        .join(name)
}

fn copy_fixture(name: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// `tinygpt args...` with `input` on stdin.
fn tinygpt_with_input(args: &[&str], input: &str, cwd: &Path) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinygpt"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tinygpt binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn info_generate_stops_at_the_end_token_and_chat_replies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_fixture("qwen2", &d.join("qwen2"));

    let out = tinygpt(&["info", "qwen2"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("LlamaBlock")
            && stdout.contains("byte-level BPE")
            && stdout.contains("total parameters: 30,464"),
        "{stdout}"
    );

    // Greedy tokens of a prompt, from the library; then the end token made one of them.
    let prompt = "The little model";
    let run = tinygpt_train::open_run(&d.join("qwen2")).unwrap();
    let model = engine(BackendKind::Flex, None).unwrap().load(&run).unwrap();
    let prompt_ids = run.tokenizer.encode_prompt(prompt).unwrap();
    let mut greedy = Vec::new();
    model.generate(&prompt_ids, 12, &mut Sampler::greedy(), &mut |t| {
        greedy.push(t);
        ControlFlow::Continue(())
    });
    let end = greedy[4];
    let stop = greedy.iter().position(|&t| t == end).unwrap();
    std::fs::write(
        d.join("qwen2/generation_config.json"),
        format!("{{\"eos_token_id\": {end}}}"),
    )
    .unwrap();
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "qwen2",
            "--prompt",
            prompt,
            "--temperature",
            "0",
            "--max-new-tokens",
            "12",
            "--backend",
            "flex",
        ];
        args.extend_from_slice(extra);
        let out = tinygpt(&args, d);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let decode = |ids: &[usize]| run.tokenizer.decode(ids).unwrap();
    assert_eq!(
        generate(&[]),
        format!("{prompt}{}\n", decode(&greedy[..stop]))
    );
    assert_eq!(
        generate(&["--ignore-eos"]),
        format!("{prompt}{}\n", decode(&greedy))
    );
    copy_fixture("qwen2", &d.join("qwen2"));

    // One turn of chat is `generate --chat`; a second turn goes on from the first.
    let out = tinygpt(
        &[
            "generate",
            "qwen2",
            "--chat",
            "--prompt",
            "Hello",
            "--temperature",
            "0",
            "--max-new-tokens",
            "8",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let one_turn = text(&out.stdout);
    let out = tinygpt_with_input(
        &[
            "chat",
            "qwen2",
            "--temperature",
            "0",
            "--max-new-tokens",
            "8",
        ],
        "Hello\n\nHow are you?\n",
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let chat = text(&out.stdout);
    assert!(chat.starts_with(&one_turn), "{chat:?} vs {one_turn:?}");
    assert!(chat.len() > one_turn.len(), "{chat:?}");

    // A base model has no chat template.
    copy_fixture("llama", &d.join("llama"));
    let out = tinygpt_with_input(&["chat", "llama"], "Hello\n", d);
    assert_fails_with(&out, &["chat_template", "generate"]);
}

#[test]
fn finetune_with_the_models_own_tokenizer_then_eval_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_fixture("llama", &d.join("llama"));
    let corpus: String = (0..200)
        .map(|i| {
            [
                "The little model reads a line.\n",
                "Grouped heads share keys.\n",
            ][i % 2]
        })
        .collect();
    std::fs::write(d.join("corpus.txt"), corpus).unwrap();

    // GPT-2's tokens are not this model's.
    let wrong = "(data: (corpus: File(path: \"corpus.txt\"), tokenizer: Gpt2), \
        training: (init_from: HuggingFace(path: \"llama\", block_size: 32), batch_size: 2, \
        max_iters: 4, learning_rate: 1e-3, eval_interval: 2, eval_iters: 1))";
    std::fs::write(d.join("wrong.ron"), wrong).unwrap();
    assert_fails_with(
        &tinygpt(&["train", "wrong.ron"], d),
        &["tokenizer: Pretrained"],
    );

    let finetune = "(data: (corpus: File(path: \"corpus.txt\"), tokenizer: Pretrained), \
        training: (init_from: HuggingFace(path: \"llama\", block_size: 32), batch_size: 2, \
        max_iters: 4, learning_rate: 1e-3, eval_interval: 2, eval_iters: 1, sample_tokens: 10))";
    std::fs::write(d.join("finetune.ron"), finetune).unwrap();
    let out = tinygpt(&["train", "finetune.ron", "--quiet"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("done: 4 steps"),
        "{}",
        text(&out.stdout)
    );

    let out = tinygpt(&["eval", "runs/finetune", "--data", "corpus.txt"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("perplexity"),
        "{}",
        text(&out.stdout)
    );

    let out = tinygpt(
        &[
            "generate",
            "runs/finetune",
            "--prompt",
            "The",
            "--max-new-tokens",
            "5",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("The"));

    let out = tinygpt(&["export", "runs/finetune", "--hf", "out/tuned"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("AutoModelForCausalLM"),
        "{}",
        text(&out.stdout)
    );
    let tuned = tinygpt_train::open_run(&d.join("runs/finetune")).unwrap();
    let exported = tinygpt_train::open_run(&d.join("out/tuned")).unwrap();
    assert_eq!(exported.model.block_size, 32);
    assert_eq!(exported.tokenizer, tuned.tokenizer);
    let weights = |run: &tinygpt_train::LoadedRun| {
        engine(BackendKind::NdArray, None)
            .unwrap()
            .load(run)
            .unwrap()
            .parameters()
    };
    assert_eq!(weights(&exported), weights(&tuned));
}
