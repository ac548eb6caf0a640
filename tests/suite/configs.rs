//! Every shipped config parses, survives a round trip through the checkpoint's RON, and builds
//! a model with the parameter count of the PyTorch original (vocabulary of 65 characters, or
//! GPT-2's 50,257 tokens), which the config alone also gives.

use std::path::{Path, PathBuf};
use tinygpt_tokenizer::{TokenizerSpec, GPT2_VOCAB_SIZE};
use tinygpt_train::hf::HfGpt2Config;
use tinygpt_train::RunConfig;

const TINY_SHAKESPEARE_VOCAB: usize = 65;

/// GPT-2 small's `config.json`, as the hub's `gpt2` has it.
fn gpt2_small() -> HfGpt2Config {
    HfGpt2Config {
        n_layer: 12,
        n_head: 12,
        n_embd: 768,
        n_positions: 1024,
        vocab_size: 50257,
        n_inner: 3072,
        layer_norm_epsilon: 1e-5,
        activation: tinygpt_layers::Activation::GeluTanh,
        initializer_range: 0.02,
    }
}

/// SmolLM2-135M's `config.json`, with the fields that shape the model as the hub's has them.
const SMOLLM2_135M: &str = r#"{
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
    "vocab_size": 49152, "rms_norm_eps": 1e-05, "rope_theta": 100000, "rope_scaling": null,
    "tie_word_embeddings": true, "torch_dtype": "bfloat16", "bos_token_id": 0, "eos_token_id": 0
}"#;

/// A config; one that starts from `models/gpt2` or `models/smollm2-135m` reads that model's
/// config.json from a temporary directory instead (the weights are not needed to build the
/// architecture).
fn load(path: &Path, scratch: &Path) -> RunConfig {
    let mut text = std::fs::read_to_string(path).unwrap();
    let pretrained = [
        ("models/gpt2", gpt2_small().to_json()),
        ("models/smollm2-135m", SMOLLM2_135M.to_string()),
    ];
    for (model, config) in pretrained {
        let quoted = format!("{model:?}");
        if text.contains(&quoted) {
            let dir = scratch.join(model);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config.json"), config).unwrap();
            text = text.replace(&quoted, &format!("{:?}", dir.display().to_string()));
        }
    }
    RunConfig::parse(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"))
}

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

fn expected_params(name: &str) -> Option<usize> {
    Some(match name {
        "bigram" => 4_225,
        "head" => 7_553,
        "multihead" => 7_553,
        "feedforward" => 8_609,
        "transformer" => 42_369,
        // 65 x 32 embedding, 3 Llama blocks of 12,608, the final RMSNorm, a 32 x 65 head.
        "llama_char" => 42_016,
        // 65 x 128 embedding, 4 speedrun blocks of 196,672 (no biases, no norm weights, QK-norm
        // 2 x 32), 6 x 2 skip scalars, a 128 x 65 head without bias.
        "speedrun_cpu" => 803_340,
        // nanoGPT's CPU shape with gpt.py's blocks: 4 x 198,272 + embeddings, ln_f and lm_head.
        "nanogpt_cpu" | "nanogpt_cpu_recipe" => 816_705,
        "gpt" | "nanogpt_shakespeare_char" => 10_788_929,
        // GPT-2 small (tied head), as Hugging Face counts `gpt2`.
        "gpt2" => 124_439_808,
        // The same with the context cropped to 256 positions: 768 x 768 fewer.
        "finetune_shakespeare" => 123_849_984,
        // 50,257 x 128 embedding + 64 x 128 positions + 4 GPT-2 blocks + ln_f.
        "shakespeare_bpe" => 7_234_432,
        // SmolLM2-135M as Hugging Face counts it (tied head): 49,152 x 576 embedding, 30
        // LlamaBlocks of 3,540,096, the final RMSNorm.
        "finetune_smollm2" => 134_515_008,
        _ => return None,
    })
}

#[test]
fn every_config_builds_with_the_stated_parameter_count() {
    let mut seen = Vec::new();
    let scratch = tempfile::tempdir().unwrap();
    let engine = tinygpt_backends::engine(tinygpt_train::BackendKind::NdArray, None).unwrap();
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("ron") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let config = load(&path, scratch.path());
        let text = std::fs::read_to_string(&path).unwrap();
        let vocab = match config.data.tokenizer {
            TokenizerSpec::Char => TINY_SHAKESPEARE_VOCAB,
            TokenizerSpec::Gpt2 => GPT2_VOCAB_SIZE,
            TokenizerSpec::Pretrained => config.model.vocab_size.unwrap(),
        };
        assert!(
            text.trim_start().starts_with("//"),
            "{name}.ron must open with a comment saying what it is"
        );
        let model_config = config
            .model
            .resolve(vocab)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // Built lazily: the count needs no random weights.
        let model = engine.init(&model_config, 0);
        let expected = expected_params(&name)
            .unwrap_or_else(|| panic!("configs/{name}.ron has no expected parameter count here"));
        assert_eq!(model.num_params(), expected, "{name}");
        assert_eq!(
            model_config.num_params(),
            expected as u64,
            "{name}: counted from the config without building the model"
        );
        let summed: u64 = model_config.summary().iter().map(|r| r.params).sum();
        assert_eq!(
            summed, expected as u64,
            "{name}: the summary rows add up to the total"
        );

        let reparsed = RunConfig::parse(&config.to_ron(), "round trip").unwrap();
        assert_eq!(reparsed, config, "{name}: to_ron/parse round trip");
        seen.push(name);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "bigram",
            "feedforward",
            "finetune_shakespeare",
            "finetune_smollm2",
            "gpt",
            "gpt2",
            "head",
            "llama_char",
            "multihead",
            "nanogpt_cpu",
            "nanogpt_cpu_recipe",
            "nanogpt_shakespeare_char",
            "shakespeare_bpe",
            "speedrun_cpu",
            "transformer"
        ]
    );
}

fn config_error(text: &str) -> String {
    RunConfig::parse(text, "test.ron").unwrap_err().to_string()
}

const TRAINING: &str =
    "training: (batch_size: 4, max_iters: 10, learning_rate: 1e-3, eval_interval: 5, eval_iters: 2)";

#[test]
fn config_errors_are_caught_before_training() {
    // Syntax errors carry line and column.
    let err = config_error("(\n  model: (block_size: 8,,\n");
    assert!(err.starts_with("test.ron:2:"), "{err}");

    let err = config_error(&format!("(model: (block_size: 8, colour: 3), {TRAINING})"));
    assert!(err.contains("colour"), "{err}");

    let err = config_error(&format!(
        "(model: (n_embd: 32, block_size: 8, layers: [Conv1d(kernel: 4)]), {TRAINING})"
    ));
    for name in tinygpt_model::REGISTERED_LAYERS {
        assert!(err.contains(name), "unknown layer lists {name}: {err}");
    }

    let err = config_error(&format!(
        "(model: (n_embd: 30, block_size: 8, layers: [Block(n_head: 4)]), {TRAINING})"
    ));
    assert!(err.contains("n_head = 4") && err.contains("30"), "{err}");

    let err = config_error(&format!("(model: (n_embd: 0, block_size: 8), {TRAINING})"));
    assert!(err.contains("n_embd"), "{err}");

    let err = config_error(&format!("(model: (n_embd: 8, block_size: 0), {TRAINING})"));
    assert!(err.contains("block_size"), "{err}");

    let err = config_error(
        "(model: (block_size: 8), training: (batch_size: 4, max_iters: 10, learning_rate: 0.0, \
         eval_interval: 5, eval_iters: 2))",
    );
    assert!(err.contains("learning_rate"), "{err}");

    let err = config_error(&format!(
        "(model: (block_size: 8, dropout: 1.5), {TRAINING})"
    ));
    assert!(err.contains("dropout"), "{err}");
}

#[test]
fn block_size_larger_than_the_data_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("tiny.txt");
    std::fs::write(&corpus, "abcabcabcabcabcabcabcabcabcabc").unwrap();
    let config = RunConfig::parse(
        &format!(
            "(model: (block_size: 8, position_embedding: false, lm_head: false), \
             data: (corpus: File(path: {corpus:?})), {TRAINING})"
        ),
        "test.ron",
    )
    .unwrap();
    let err = tinygpt_train::prepare(config, "test.ron")
        .unwrap_err()
        .to_string();
    assert!(err.contains("block_size 8") && err.contains("val"), "{err}");
}
