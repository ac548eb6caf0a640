//! Pictures through the binary: every run draws its own loss.png and loss.svg, `tinygpt plot`
//! compares runs, and what cannot be drawn is a clear error.

use crate::common::{assert_fails_with, text, tinygpt};
use std::path::Path;

fn train(d: &Path, name: &str, n_embd: usize) {
    let config = format!(
        "(model: (n_embd: {n_embd}, block_size: 8, layers: [Block(n_head: 2), LayerNorm()]), \
         data: (corpus: File(path: \"corpus.txt\")), training: (batch_size: 4, max_iters: 20, \
         learning_rate: 1e-2, eval_interval: 5, eval_iters: 2, sample_tokens: 5))"
    );
    std::fs::write(d.join(format!("{name}.ron")), config).unwrap();
    let out = tinygpt(&["train", &format!("{name}.ron"), "--quiet"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A PNG's width and height, from its header.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[1..4], b"PNG", "{} is not a PNG", path.display());
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn runs_draw_their_curves_and_plot_compares_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("corpus.txt"),
        "to be or not to be, that is the question. ".repeat(60),
    )
    .unwrap();
    train(d, "small", 8);
    train(d, "wide", 16);
    for run in ["runs/small", "runs/wide"] {
        assert_eq!(png_size(&d.join(run).join("loss.png")), (1100, 720));
        let svg = std::fs::read_to_string(d.join(run).join("loss.svg")).unwrap();
        assert!(svg.contains("val loss (whole split)"), "{run}");
    }
    for (args, output) in [
        (&["--x", "step"][..], "compare.png"),
        (&["--x", "seconds", "--log-y"], "seconds.svg"),
        (&["--x", "tokens", "--metric", "train_loss"], "tokens.png"),
        (&["--metric", "val_loss_full"], "full.png"),
    ] {
        let mut command = vec!["plot", "runs/small", "runs/wide", "-o", output];
        command.extend_from_slice(args);
        let out = tinygpt(&command, d);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(d.join(output).is_file(), "{output}");
    }
    let svg = std::fs::read_to_string(d.join("seconds.svg")).unwrap();
    assert!(
        svg.contains("\nsmall (") && svg.contains("\nwide ("),
        "legend"
    );

    // What cannot be drawn.
    std::fs::create_dir_all(d.join("empty")).unwrap();
    assert_fails_with(
        &tinygpt(&["plot", "empty"], d),
        &["not a run", "metrics.csv"],
    );
    std::fs::create_dir_all(d.join("fresh")).unwrap();
    std::fs::write(
        d.join("fresh/metrics.csv"),
        "step,train_loss,val_loss,lr,tokens_per_sec,elapsed_s\n",
    )
    .unwrap();
    assert_fails_with(&tinygpt(&["plot", "fresh"], d), &["no loss rows yet"]);
    assert_fails_with(
        &tinygpt(&["plot", "runs/small", "--metric", "accuracy"], d),
        &["accuracy", "val_loss"],
    );
    assert_fails_with(
        &tinygpt(&["plot", "runs/small", "-o", "chart.jpg"], d),
        &[".png or .svg"],
    );
}

#[test]
fn attention_draws_every_head_of_every_kind_of_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("corpus.txt"),
        "to be or not to be,\nthat is the question. ".repeat(60),
    )
    .unwrap();
    train(d, "small", 8);
    let out = tinygpt(
        &[
            "attention",
            "runs/small",
            "--prompt",
            "to be\nor",
            "-o",
            "attn.png",
            "--json",
            "attn.json",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 heatmaps of 8 tokens"),
        "{}",
        text(&out.stdout)
    );
    assert!(png_size(&d.join("attn.png")).0 > 0);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("attn.json")).unwrap()).unwrap();
    assert_eq!(json["tokens"][2], "␣");
    assert_eq!(json["tokens"][5], "⏎");
    let rows = json["maps"][1]["weights"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    let last: f64 = rows[7]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((last - 1.0).abs() < 1e-5, "{last}");

    // One head, as SVG.
    let out = tinygpt(
        &[
            "attention",
            "runs/small",
            "--prompt",
            "to be",
            "--layer",
            "0",
            "--head",
            "1",
            "-o",
            "head.svg",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(d.join("head.svg"))
        .unwrap()
        .contains("layer 0, head 1"));

    // A Llama-family directory: grouped-query heads with rotary positions.
    let qwen2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reference/fixtures/llama/qwen2");
    let out = tinygpt(
        &[
            "attention",
            qwen2.to_str().unwrap(),
            "--prompt",
            "The little model",
            "-o",
            "qwen.png",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("8 heatmaps"),
        "{}",
        text(&out.stdout)
    );

    // What cannot be drawn.
    assert_fails_with(
        &tinygpt(
            &["attention", "runs/small", "--prompt", "to be or not to be"],
            d,
        ),
        &["18 tokens", "at most 8"],
    );
    assert_fails_with(
        &tinygpt(
            &["attention", "runs/small", "--prompt", "to", "--head", "2"],
            d,
        ),
        &["head 2", "0 to 1"],
    );
    assert_fails_with(
        &tinygpt(
            &["attention", "runs/small", "--prompt", "to", "--layer", "1"],
            d,
        ),
        &["layer 1 has no attention", "0"],
    );
    let bigram =
        "(model: (block_size: 8, layers: []), data: (corpus: File(path: \"corpus.txt\")), \
        training: (batch_size: 4, max_iters: 2, learning_rate: 1e-2, eval_interval: 2, \
        eval_iters: 1, sample_tokens: 5))";
    std::fs::write(d.join("bigram.ron"), bigram).unwrap();
    assert!(tinygpt(&["train", "bigram.ron", "--quiet"], d)
        .status
        .success());
    assert_fails_with(
        &tinygpt(&["attention", "runs/bigram", "--prompt", "to"], d),
        &["no attention layer"],
    );
}

#[test]
fn live_and_watch_draw_the_curves_in_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("corpus.txt"),
        "to be or not to be, that is the question. ".repeat(60),
    )
    .unwrap();
    let config = "(model: (n_embd: 8, block_size: 8, layers: [Block(n_head: 2), LayerNorm()]), \
        data: (corpus: File(path: \"corpus.txt\")), training: (batch_size: 4, max_iters: 20, \
        learning_rate: 1e-2, eval_interval: 5, eval_iters: 2, sample_tokens: 5))";
    std::fs::write(d.join("live.ron"), config).unwrap();
    let out = tinygpt(&["train", "live.ron", "--live"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    // Not a terminal: each new state below the last (a run this short may finish between two
    // looks), the final one with the whole-split loss.
    assert!(stderr.contains("step (. train, o val)"), "{stderr}");
    assert!(
        stderr.contains("live: step 20") && stderr.contains("whole val split"),
        "{stderr}"
    );
    assert!(
        !text(&out.stdout).contains("step 5: train loss"),
        "no evaluation lines"
    );
    assert!(text(&out.stdout).contains("done: 20 steps"));

    // `watch` on a finished run draws it once and returns.
    let out = tinygpt(&["watch", "runs/live"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("whole val split") && stderr.contains("Ctrl-C"),
        "{stderr}"
    );
    assert_fails_with(
        &tinygpt(&["watch", "runs/nothing"], d),
        &["not a directory"],
    );
}
