//! The real `tinygpt` binary: train, generate and info on a generated corpus, and clear errors
//! (non-zero exit, a message, no panic) for bad input.

use crate::common::{assert_fails_with, text, tinygpt};
use std::path::Path;
use std::process::{Command, Output};

fn write_config(dir: &Path, name: &str, model: &str, steps: usize) -> String {
    let corpus: String = (0..400)
        .map(|i| ["to be or not to be\n", "that is the question\n"][i % 2])
        .collect();
    std::fs::write(dir.join("corpus.txt"), corpus).unwrap();
    let config = format!(
        "(model: {model}, data: (corpus: File(path: \"corpus.txt\")), \
         training: (batch_size: 8, max_iters: {steps}, learning_rate: 1e-2, eval_interval: 20, \
         eval_iters: 2, sample_tokens: 30))"
    );
    std::fs::write(dir.join(name), config).unwrap();
    name.to_string()
}

const SMALL_MODEL: &str =
    "(n_embd: 16, block_size: 8, layers: [Block(n_head: 2), LayerNorm()], init: Normal(std: 0.02))";

#[test]
fn train_then_generate() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "small.ron", SMALL_MODEL, 40);
    let out = tinygpt(&["train", &config, "--quiet"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("done: 40 steps on flex"), "{stdout}");
    assert!(dir
        .path()
        .join("runs/small/checkpoints/step-0000040.ckpt")
        .is_file());

    // A second run never overwrites the first.
    let out = tinygpt(
        &["train", &config, "--quiet", "--max-iters", "20"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir
        .path()
        .join("runs/small-2/checkpoints/step-0000020.ckpt")
        .is_file());

    let out = tinygpt(
        &[
            "generate",
            "runs/small",
            "--prompt",
            "to be",
            "--max-new-tokens",
            "25",
            "--seed",
            "3",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let generated = text(&out.stdout);
    assert!(generated.starts_with("to be"), "{generated}");
    assert_eq!(
        generated.trim_end_matches('\n').chars().count(),
        5 + 25,
        "{generated:?}"
    );
    let again = tinygpt(
        &[
            "generate",
            "runs/small",
            "--prompt",
            "to be",
            "--max-new-tokens",
            "25",
            "--seed",
            "3",
        ],
        dir.path(),
    );
    assert_eq!(text(&again.stdout), generated, "seeded generation repeats");

    let out = tinygpt(&["info", &config], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info = text(&out.stdout);
    assert!(
        info.contains("Block(n_head: 2, ffn_mult: 4)") && info.contains("total parameters"),
        "{info}"
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = write_config(d, "good.ron", SMALL_MODEL, 1);

    let out = tinygpt(&["train", "missing.ron"], d);
    assert_fails_with(&out, &["missing.ron"]);

    std::fs::write(d.join("syntax.ron"), "(\n  model: (block_size: 8,,\n").unwrap();
    assert_fails_with(&tinygpt(&["train", "syntax.ron"], d), &["syntax.ron:2:"]);

    let layer = write_config(
        d,
        "layer.ron",
        "(n_embd: 16, block_size: 8, layers: [Conv(k: 3)])",
        1,
    );
    assert_fails_with(
        &tinygpt(&["info", &layer], d),
        &["Conv", "Block", "MultiHeadAttention"],
    );

    let heads = write_config(
        d,
        "heads.ron",
        "(n_embd: 16, block_size: 8, layers: [Block(n_head: 3)])",
        1,
    );
    assert_fails_with(&tinygpt(&["train", &heads], d), &["n_head = 3"]);

    let long = write_config(d, "long.ron", "(n_embd: 16, block_size: 100000)", 1);
    assert_fails_with(&tinygpt(&["train", &long], d), &["block_size 100000"]);

    #[cfg(not(feature = "cuda"))]
    assert_fails_with(
        &tinygpt(&["train", &good, "--backend", "cuda"], d),
        &["--features cuda"],
    );

    let no_run = tinygpt(&["generate", "nowhere"], d);
    assert_fails_with(&no_run, &["nowhere", "does not exist"]);
    std::fs::create_dir(d.join("empty")).unwrap();
    assert_fails_with(&tinygpt(&["generate", "empty"], d), &["no checkpoint"]);

    let out = tinygpt(&["train", &good, "--quiet", "--out", "run"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_fails_with(
        &tinygpt(&["generate", "run", "--prompt", "to be ZQ"], d),
        &["'Z'", "'Q'"],
    );
    let ckpt = d.join("run/checkpoints/step-0000001.ckpt");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails_with(
        &tinygpt(&["generate", "run"], d),
        &["truncated or corrupted"],
    );
    std::fs::write(&ckpt, b"{\"not\": \"a checkpoint\"}").unwrap();
    assert_fails_with(
        &tinygpt(&["generate", "run"], d),
        &["not a tinygpt checkpoint"],
    );

    let out = tinygpt(&["train", &good, "--backend", "tpu"], d);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(text(&out.stderr).contains("ndarray, flex, cuda"));
}

/// Starts `tinygpt train ARGS --quiet --out RUN` in `dir`, sends `signal` a little after its
/// first checkpoint exists, and returns what it printed.
#[cfg(unix)]
fn train_then_signal(dir: &Path, args: &[&str], run: &str, signal: &str) -> Output {
    use std::time::{Duration, Instant};
    let child = Command::new(env!("CARGO_BIN_EXE_tinygpt"))
        .arg("train")
        .args(args)
        .args(["--quiet", "--out", run])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Any step's checkpoint: a fast run may have pruned step 0's before the first look.
    let run_dir = dir.join(run);
    let deadline = Instant::now() + Duration::from_secs(60);
    while tinygpt_train::checkpoint::list_step_checkpoints(&run_dir).is_empty() {
        assert!(Instant::now() < deadline, "no first checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait_with_output().unwrap()
}

#[cfg(unix)]
fn interrupt_and_resume(signal: &str, expected_code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, "long.ron", SMALL_MODEL, 1_000_000);
    let output = train_then_signal(d, &[&config], "run", signal);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(expected_code), "{stderr}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
    assert!(stderr.contains("tinygpt train --resume run"), "{stderr}");

    let (step, _) = tinygpt_train::checkpoint::list_step_checkpoints(&d.join("run"))
        .pop()
        .unwrap();
    assert!(step > 0, "the interrupted step was checkpointed");
    let target = (step + 5).to_string();
    let out = tinygpt(
        &[
            "train",
            "--resume",
            "run",
            "--max-iters",
            &target,
            "--quiet",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("done: {target} steps")));
}

#[cfg(unix)]
#[test]
fn ctrl_c_checkpoints_and_exits_130() {
    interrupt_and_resume("-INT", 130);
}

#[cfg(unix)]
#[test]
fn sigterm_checkpoints_and_exits_143() {
    interrupt_and_resume("-TERM", 143);
}

#[test]
fn diverging_loss_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(
        d,
        "diverge.ron",
        "(block_size: 8, position_embedding: false, lm_head: false)",
        200,
    );
    let text_config = std::fs::read_to_string(d.join(&config))
        .unwrap()
        .replace("learning_rate: 1e-2", "learning_rate: 1e38")
        .replace("eval_interval: 20", "eval_interval: 1000");
    std::fs::write(d.join(&config), text_config).unwrap();
    let out = tinygpt(&["train", &config, "--quiet", "--out", "run"], d);
    assert_fails_with(&out, &["NaN or infinite", "last good checkpoint"]);
    // The step-0 checkpoint, written before training diverged, survives.
    let run = tinygpt_train::open_run(&d.join("run")).unwrap();
    assert_eq!(run.step(), 0);
}

#[test]
fn corpus_and_setting_problems_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("empty.txt"), "").unwrap();
    std::fs::write(d.join("binary.txt"), b"abc\xff\xfedef").unwrap();
    std::fs::write(d.join("one.txt"), "aaaaaaaaaaaaaaaa").unwrap();
    std::fs::write(d.join("ok.txt"), "abcdefgh\n".repeat(20)).unwrap();
    let bigram = "(block_size: 4, position_embedding: false, lm_head: false)";
    std::fs::create_dir(d.join("folder.txt")).unwrap();
    let cases: [(&str, &str, &str, &str, &[&str]); 10] = [
        (
            "folder.txt",
            bigram,
            "1e-3",
            "",
            &["cannot read the corpus", "folder.txt"],
        ),
        (
            "ok.txt",
            "(block_size: 4, colour: 3)",
            "1e-3",
            "",
            &["colour"],
        ),
        (
            "ok.txt",
            "(n_embd: 0, block_size: 4)",
            "1e-3",
            "",
            &["n_embd", "at least 1"],
        ),
        ("empty.txt", bigram, "1e-3", "", &["empty.txt", "is empty"]),
        (
            "binary.txt",
            bigram,
            "1e-3",
            "",
            &["binary.txt", "not valid UTF-8", "offset 3"],
        ),
        (
            "one.txt",
            bigram,
            "1e-3",
            "",
            &["one.txt", "1 distinct", "at least 2"],
        ),
        (
            "nothing.txt",
            bigram,
            "1e-3",
            "",
            &["nothing.txt", "does not exist"],
        ),
        ("ok.txt", bigram, "-1.0", "", &["learning_rate", "positive"]),
        ("ok.txt", bigram, "1e-3", ", grad_clip: 0.0", &["grad_clip"]),
        (
            "ok.txt",
            "(block_size: 4, dropout: 1.0)",
            "1e-3",
            "",
            &["dropout", "[0, 1)"],
        ),
    ];
    for (i, (corpus, model, lr, extra, needles)) in cases.into_iter().enumerate() {
        let name = format!("case{i}.ron");
        let text = format!(
            "(model: {model}, data: (corpus: File(path: {corpus:?})), training: (batch_size: 4, \
             max_iters: 2, learning_rate: {lr}, eval_interval: 1, eval_iters: 1{extra}))"
        );
        std::fs::write(d.join(&name), text).unwrap();
        assert_fails_with(&tinygpt(&["train", &name, "--quiet"], d), needles);
    }
}

#[test]
fn failed_checkpoint_writes_keep_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, "small.ron", SMALL_MODEL, 40);

    // An output path under a regular file cannot be created.
    std::fs::write(d.join("file"), "").unwrap();
    assert_fails_with(
        &tinygpt(&["train", &config, "--quiet", "--out", "file/run"], d),
        &["cannot write to the run directory", "file/run"],
    );

    // The step-40 checkpoint cannot be written (a directory blocks its name): training fails
    // there, and the step-20 checkpoint is intact and usable.
    std::fs::create_dir_all(d.join("run/checkpoints/step-0000040.ckpt")).unwrap();
    let out = tinygpt(&["train", &config, "--quiet", "--out", "run"], d);
    assert_fails_with(
        &out,
        &[
            "cannot write checkpoint",
            "previous checkpoint is untouched",
        ],
    );
    let generated = tinygpt(
        &[
            "generate",
            "run/checkpoints/step-0000020.ckpt",
            "--max-new-tokens",
            "5",
        ],
        d,
    );
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let leftovers: Vec<String> = std::fs::read_dir(d.join("run/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn resuming_after_the_corpus_changed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, "small.ron", SMALL_MODEL, 20);
    let out = tinygpt(&["train", &config, "--quiet", "--out", "run"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let corpus = std::fs::read_to_string(d.join("corpus.txt")).unwrap();
    std::fs::write(d.join("corpus.txt"), corpus + "ZEBRA\n").unwrap();
    assert_fails_with(
        &tinygpt(&["train", "--resume", "run", "--max-iters", "40"], d),
        &["vocabulary differs"],
    );
    // A run already at its last step needs a larger --max-iters.
    std::fs::write(
        d.join("corpus.txt"),
        std::fs::read_to_string(d.join("corpus.txt"))
            .unwrap()
            .replace("ZEBRA\n", ""),
    )
    .unwrap();
    assert_fails_with(
        &tinygpt(&["train", "--resume", "run"], d),
        &["already at step 20", "--max-iters"],
    );
}

#[test]
fn huge_generations_stream_in_bounded_memory() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, "small.ron", SMALL_MODEL, 1);
    let out = tinygpt(&["train", &config, "--quiet", "--out", "run"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinygpt"))
        .args([
            "generate",
            "run",
            "--max-new-tokens",
            "18446744073709551615",
        ])
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 300];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    // Characters arrive while generation goes on; closing the pipe ends it cleanly.
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "a closed pipe is a normal end: {stderr}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
}

#[test]
fn a_download_with_the_wrong_checksum_is_refused_and_not_cached() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/input.txt", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        let body = "not the corpus you asked for\n";
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = format!(
        "(model: (block_size: 4, position_embedding: false, lm_head: false), data: (corpus: \
         Url(url: {url:?}, path: \"data/c.txt\", sha256: \"{}\")), training: (batch_size: 4, \
         max_iters: 2, learning_rate: 1e-3, eval_interval: 1, eval_iters: 1))",
        "0".repeat(64)
    );
    std::fs::write(d.join("dl.ron"), config).unwrap();
    assert_fails_with(
        &tinygpt(&["train", "dl.ron"], d),
        &["checksum mismatch", &url],
    );
    server.join().unwrap();
    assert!(
        !d.join("data/c.txt").exists(),
        "a bad download is not cached"
    );
}

/// A run remembers its backend: the command printed at an interruption resumes on it (not on
/// the CLI's default) and ends exactly where the uninterrupted run ends.
#[cfg(unix)]
#[test]
fn the_printed_resume_command_reproduces_a_flex_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Dropout draws from the backend's own generator, so resuming on another backend shows.
    let model = "(n_embd: 16, block_size: 8, layers: [Block(n_head: 2), LayerNorm()], \
                 dropout: 0.1, init: Normal(std: 0.02))";
    let config = write_config(d, "long.ron", model, 1_000_000);
    let interrupted = train_then_signal(d, &[&config, "--backend", "flex"], "part", "-INT");
    let stderr = text(&interrupted.stderr);
    let command: Vec<&str> = stderr
        .lines()
        .find_map(|line| line.strip_prefix("Continue with: "))
        .unwrap_or_else(|| panic!("no resume command in: {stderr}"))
        .split_whitespace()
        .collect();
    assert_eq!(command[1..], ["train", "--resume", "part"], "{stderr}");
    let (stopped_at, _) = tinygpt_train::checkpoint::list_step_checkpoints(&d.join("part"))
        .pop()
        .unwrap();
    let target = (stopped_at + 7).to_string();

    let resumed = Command::new(command[0])
        .args(&command[1..])
        .args(["--max-iters", &target, "--quiet"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(
        text(&resumed.stdout).contains(&format!("done: {target} steps on flex")),
        "{}",
        text(&resumed.stdout)
    );

    let straight = tinygpt(
        &[
            "train",
            &config,
            "--backend",
            "flex",
            "--max-iters",
            &target,
            "--quiet",
            "--out",
            "straight",
        ],
        d,
    );
    assert!(straight.status.success(), "{}", text(&straight.stderr));
    let summary = |run: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join(run).join("summary.json")).unwrap()).unwrap()
    };
    let (resumed, straight) = (summary("part"), summary("straight"));
    for field in [
        "backend",
        "steps",
        "train_loss",
        "val_loss",
        "val_loss_full",
    ] {
        assert_eq!(resumed[field], straight[field], "{field}");
    }

    // Generation defaults to the run's backend too, and says how to continue with xtask when
    // started through it.
    let sample = |extra: &[&str]| {
        let mut args = vec!["generate", "part", "--max-new-tokens", "40"];
        args.extend_from_slice(extra);
        let out = tinygpt(&args, d);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(sample(&[]), sample(&["--backend", "flex"]));
}

#[test]
fn suggested_commands_follow_how_tinygpt_was_started() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "small.ron", SMALL_MODEL, 3);
    let out = Command::new(env!("CARGO_BIN_EXE_tinygpt"))
        .args(["train", &config, "--quiet", "--out", "my run"])
        .env("TINYGPT_INVOKED_AS", "cargo xtask")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("(generate with: cargo xtask generate 'my run')"),
        "{stdout}"
    );
}

/// `tinygpt args...` in `cwd` under an address-space limit of `kib` KiB (`ulimit -v`).
fn tinygpt_limited(kib: u64, args: &[&str], cwd: &Path) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_tinygpt"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("sh runs")
}

/// transformer.ron with `n_embd: 40000` (a typo away from 400): 57.6 billion parameters.
const HUGE_WIDTH: u64 = 40_000;
const HUGE_MODEL: &str = "(n_embd: 40000, block_size: 8, layers: [Block(n_head: 4), \
    Block(n_head: 4), Block(n_head: 4), LayerNorm()], init: Normal(std: 0.02))";

#[test]
fn info_counts_a_huge_model_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "huge.ron", HUGE_MODEL, 10);
    // 2 GB of address space: the weights alone would take 230 GB.
    let out = tinygpt_limited(2_000_000, &["info", &config], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // gpt.py's arithmetic: embeddings, 3 blocks of 12 C² + 10 C, ln_f, and lm_head with bias.
    let (c, vocab, block_size) = (HUGE_WIDTH, 14, 8);
    let expected =
        vocab * c + block_size * c + 3 * (12 * c * c + 10 * c) + 2 * c + c * vocab + vocab;
    let grouped = expected
        .to_string()
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|digits| std::str::from_utf8(digits).unwrap())
        .collect::<Vec<_>>()
        .join(",");
    assert!(stdout.contains("vocab 14 ("), "{stdout}");
    assert!(
        stdout.contains(&format!("total parameters: {grouped}")),
        "expected {grouped} in: {stdout}"
    );
    assert!(
        stdout.contains("training (batch 8 x 8) about 1.15 TB"),
        "{stdout}"
    );
    assert!(stdout.contains("this machine:"), "{stdout}");
}

#[test]
fn training_far_over_the_machines_memory_is_refused_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "huge.ron", HUGE_MODEL, 10);
    let out = tinygpt_limited(6_000_000, &["train", &config], dir.path());
    assert_fails_with(&out, &["training needs about 1.15 TB", "n_embd", "leaves"]);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("backtrace") && !stderr.contains("memory allocation of"));
    assert!(
        !dir.path().join("runs/huge").exists(),
        "nothing was started"
    );
}

#[test]
fn an_allocation_that_fails_anyway_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "huge.ron", HUGE_MODEL, 10);
    let out = tinygpt_limited(
        6_000_000,
        &["train", &config, "--skip-memory-check"],
        dir.path(),
    );
    assert_fails_with(
        &out,
        &[
            "going on because of --skip-memory-check",
            "out of memory while building the model",
            "An allocation of 19.20 GB failed",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("backtrace") && !stderr.contains("memory allocation of"));
}

#[test]
fn info_into_a_pipe_closed_early_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "small.ron", SMALL_MODEL, 10);
    // The reader exits at once (as `head` does after its lines), so tinygpt writes into a
    // closed pipe.
    let out = Command::new("bash")
        .arg("-c")
        .arg("set -o pipefail; \"$0\" info \"$1\" | true")
        .arg(env!("CARGO_BIN_EXE_tinygpt"))
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_time_budget_from_the_command_line_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // max_iters far beyond what a second allows: the budget, not the step count, ends it.
    let config = write_config(d, "small.ron", SMALL_MODEL, 1_000_000);
    let out = tinygpt(
        &["train", &config, "--time-budget", "1s", "--out", "run"],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("for 1s of training time (evaluations and checkpoints not counted)"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("run/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["time_budget_s"], 1.0);
    let trained = summary["train_time_total_s"].as_f64().unwrap();
    assert!((1.0..2.0).contains(&trained), "{summary}");
    let steps = summary["steps"].as_u64().unwrap();
    assert!(steps > 10 && steps < 1_000_000, "{summary}");
    assert_eq!(summary["tokens_seen"].as_u64().unwrap(), steps * 8 * 8);
    // The run's config keeps the budget, so a resume knows it is spent.
    assert!(std::fs::read_to_string(d.join("run/config.ron"))
        .unwrap()
        .contains("time_budget: \"1s\""));
    assert_fails_with(
        &tinygpt(&["train", "--resume", "run"], d),
        &["whole time budget of 1s", "--time-budget"],
    );
    // A malformed budget is a usage error (clap's exit code 2) saying how to write one.
    let bad = tinygpt(&["train", &config, "--time-budget", "soon"], d);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("\"10m\""),
        "{}",
        text(&bad.stderr)
    );
}
