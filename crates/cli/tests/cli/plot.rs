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
