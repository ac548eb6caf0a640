//! Property tests for the two parsers that read user files: the config parser and the checkpoint
//! reader. Whatever the bytes, they return an error or a value, never panic. More cases:
//! `PROPTEST_CASES=100000 cargo test --release --test suite fuzz`.

use proptest::prelude::*;
use std::path::Path;
use tinygpt_tokenizer::CharTokenizer;
use tinygpt_train::{Checkpoint, CheckpointMeta, LossEstimate, RunConfig};

fn shipped_configs() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut texts: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    texts.sort();
    texts
}

fn valid_checkpoint() -> Vec<u8> {
    Checkpoint {
        meta: CheckpointMeta {
            step: 7,
            config: shipped_configs()[0].clone(),
            vocab: CharTokenizer::fit("hello world\n").unwrap().into(),
            last_eval: Some(LossEstimate {
                step: 7,
                train: 1.5,
                val: 1.6,
            }),
            best_val_loss: Some(1.6),
            backend: "ndarray".into(),
            train_time_s: 1.25,
        },
        model: (0..200u8).collect(),
        optimizer: vec![3; 64],
    }
    .to_bytes()
}

/// 512 cases in the test suite; `PROPTEST_CASES=N` for a longer hunt.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = RunConfig::parse(&text, "fuzz.ron");
    }

    #[test]
    fn config_parser_never_panics_on_mutated_configs(
        which in 0usize..9,
        position in any::<prop::sample::Index>(),
        cut in any::<bool>(),
        insert in "[(),:\\[\\]0-9a-zA-Z_ .\\-\"]{0,8}",
    ) {
        let configs = shipped_configs();
        let text = &configs[which % configs.len()];
        let mut at = position.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mutated = if cut {
            text[..at].to_string()
        } else {
            format!("{}{}{}", &text[..at], insert, &text[at..])
        };
        let _ = RunConfig::parse(&mutated, "fuzz.ron");
    }

    #[test]
    fn checkpoint_reader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Checkpoint::from_bytes(&bytes, Path::new("fuzz.ckpt"));
    }

    #[test]
    fn checkpoint_reader_rejects_every_mutation(
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        truncate in any::<bool>(),
    ) {
        let bytes = valid_checkpoint();
        let at = position.index(bytes.len());
        let mutated = if truncate {
            bytes[..at].to_vec()
        } else {
            let mut b = bytes.clone();
            b[at] ^= flip;
            b
        };
        // The trailing sha256 catches any change; nothing slips through as a valid checkpoint.
        prop_assert!(Checkpoint::from_bytes(&mutated, Path::new("fuzz.ckpt")).is_err());
    }
}

#[test]
fn the_valid_checkpoint_reads_back() {
    let bytes = valid_checkpoint();
    let back = Checkpoint::from_bytes(&bytes, Path::new("ok.ckpt")).unwrap();
    assert_eq!(back.meta.step, 7);
}
