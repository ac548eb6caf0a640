//! GPT-2 against Hugging Face: token ids, logits, loss and greedy generation of a small random
//! `GPT2LMHeadModel` (reference/make_gpt2_fixtures.py), both layouts of its weights file, export
//! back to Hugging Face's names and shapes, and clear errors for bad directories.

use burn::backend::{Flex, NdArray};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use serde_json::Value;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use tinygpt_model::Sampler;
use tinygpt_tokenizer::{Gpt2Tokenizer, Tokenizer};
use tinygpt_train::hf::{self, HfError};
use tinygpt_train::{open_run, LoadedRun};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/fixtures")
}

fn tiny_dir() -> PathBuf {
    fixtures().join("gpt2_tiny")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("gpt2_tiny_expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn token_ids_match_hugging_faces_byte_level_bpe() {
    let text = std::fs::read_to_string(fixtures().join("gpt2_tokens.json")).unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let tokenizer = Gpt2Tokenizer::new();
    let texts = fixture["texts"].as_array().unwrap();
    assert!(texts.len() >= 10);
    for case in texts {
        let text = case["text"].as_str().unwrap();
        let expected = ids(&case["ids"]);
        assert_eq!(tokenizer.encode(text).unwrap(), expected, "{text:?}");
        assert_eq!(tokenizer.decode(&expected).unwrap(), text);
    }
}

fn tokens<B: Backend>(ids: &[usize], device: &B::Device) -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    let len = ids.len();
    Tensor::from_data(TensorData::new(ids, [1, len]), device)
}

/// Logits within 1e-5 of Hugging Face's, relative to the logits' scale; the loss within 1e-5
/// relative; 30 greedy tokens identical, with and without the KV cache.
fn matches_hugging_face<B: Backend>(run: &LoadedRun) {
    let device = Default::default();
    let model = run.load_model::<B>(&device).unwrap();
    let expected = expected();
    for (i, input) in expected["inputs"].as_array().unwrap().iter().enumerate() {
        let input = ids(input);
        let logits: Vec<f32> = model
            .forward(tokens::<B>(&input, &device))
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap();
        let want: Vec<f32> = expected["logits"][i]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect();
        assert_eq!(logits.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-5 * scale,
            "input {i}: max |diff| {worst} at scale {scale}"
        );

        let (_, loss) = model.forward_loss(
            tokens::<B>(&input[..input.len() - 1], &device),
            tokens::<B>(&input[1..], &device),
        );
        let loss: f32 = loss.into_data().convert::<f32>().to_vec().unwrap()[0];
        let want = expected["loss"][i].as_f64().unwrap() as f32;
        assert!(
            (loss - want).abs() <= 1e-5 * want.abs(),
            "loss {loss} vs {want}"
        );
    }
    let prompt = ids(&expected["greedy"]["prompt"]);
    let want = ids(&expected["greedy"]["tokens"]);
    let greedy = Sampler::greedy;
    let cached = model.generate(&prompt, want.len(), &mut greedy());
    assert_eq!(cached, want, "with the KV cache");
    let mut uncached = Vec::new();
    model.generate_uncached_with(&prompt, want.len(), &mut greedy(), |t| {
        uncached.push(t);
        ControlFlow::Continue(())
    });
    assert_eq!(uncached, want, "without the cache");
}

#[test]
fn a_saved_pretrained_gpt2_gives_hugging_faces_logits_loss_and_greedy_tokens() {
    let run = open_run(&tiny_dir()).unwrap();
    assert_eq!(
        run.model.num_params(),
        expected()["num_params"].as_u64().unwrap()
    );
    matches_hugging_face::<NdArray<f32>>(&run);
    matches_hugging_face::<Flex>(&run);
}

/// The fixture's tensors, by name.
fn fixture_tensors() -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(tiny_dir().join(hf::WEIGHTS_FILE)).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), view.data().to_vec()))
        .collect();
    out.sort();
    out
}

fn write_dir(dir: &Path, config: &str, tensors: &[(String, Vec<usize>, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(hf::CONFIG_FILE), config).unwrap();
    let views = tensors.iter().map(|(name, shape, data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .unwrap();
        (name.clone(), view)
    });
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::write(dir.join(hf::WEIGHTS_FILE), bytes).unwrap();
}

fn tiny_config() -> String {
    std::fs::read_to_string(tiny_dir().join(hf::CONFIG_FILE)).unwrap()
}

#[test]
fn the_hubs_original_layout_loads_the_same() {
    // The hub's `gpt2` files: no `transformer.` prefix, and the attention mask buffers.
    let mut tensors: Vec<_> = fixture_tensors()
        .into_iter()
        .map(|(name, shape, data)| {
            (
                name.trim_start_matches("transformer.").to_string(),
                shape,
                data,
            )
        })
        .collect();
    let mask: Vec<u8> = (0..64 * 64).flat_map(|_| 1f32.to_le_bytes()).collect();
    for layer in 0..2 {
        tensors.push((
            format!("h.{layer}.attn.bias"),
            vec![1, 1, 64, 64],
            mask.clone(),
        ));
        tensors.push((
            format!("h.{layer}.attn.masked_bias"),
            vec![],
            (-1e4f32).to_le_bytes().to_vec(),
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &tiny_config(), &tensors);
    matches_hugging_face::<Flex>(&open_run(dir.path()).unwrap());
}

#[test]
fn export_writes_hugging_faces_names_shapes_and_values() {
    let run = open_run(&tiny_dir()).unwrap();
    let model = run.load_model::<NdArray<f32>>(&Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    hf::export(&model, &run.model, &run.tokenizer, &out).unwrap();
    let ours = std::fs::read(out.join(hf::WEIGHTS_FILE)).unwrap();
    let ours = safetensors::SafeTensors::deserialize(&ours).unwrap();
    let mut written: Vec<_> = ours
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), view.data().to_vec()))
        .collect();
    written.sort();
    // Bit for bit what save_pretrained wrote: names, shapes, values.
    assert_eq!(written, fixture_tensors());
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(hf::CONFIG_FILE)).unwrap()).unwrap();
    let original: Value = serde_json::from_str(&tiny_config()).unwrap();
    for key in [
        "model_type",
        "n_layer",
        "n_head",
        "n_embd",
        "n_positions",
        "vocab_size",
        "activation_function",
        "layer_norm_epsilon",
        "tie_word_embeddings",
    ] {
        assert_eq!(config[key], original[key], "{key}");
    }
    // And it reads back as the same model.
    let back = open_run(&out).unwrap();
    matches_hugging_face::<NdArray<f32>>(&back);
}

#[test]
fn bad_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let error = |path: &Path| -> String {
        match open_run(path).and_then(|run| run.load_model::<Flex>(&Default::default()).map(|_| ()))
        {
            Ok(()) => panic!("{} loaded", path.display()),
            Err(e) => e.to_string(),
        }
    };
    // No config.json (and no checkpoints either).
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let message = error(&empty);
    assert!(
        message.contains("config.json") && message.contains("huggingface-cli"),
        "{message}"
    );

    // Another architecture.
    let llama = dir.path().join("llama");
    std::fs::create_dir_all(&llama).unwrap();
    std::fs::write(
        llama.join(hf::CONFIG_FILE),
        r#"{"model_type": "falcon", "architectures": ["FalconForCausalLM"]}"#,
    )
    .unwrap();
    let message = error(&llama);
    assert!(
        message.contains("\"falcon\"")
            && message.contains("FalconForCausalLM")
            && message.contains("GPT2LMHeadModel"),
        "{message}"
    );

    // A truncated weights file.
    let truncated = dir.path().join("truncated");
    std::fs::create_dir_all(&truncated).unwrap();
    std::fs::write(truncated.join(hf::CONFIG_FILE), tiny_config()).unwrap();
    let bytes = std::fs::read(tiny_dir().join(hf::WEIGHTS_FILE)).unwrap();
    std::fs::write(truncated.join(hf::WEIGHTS_FILE), &bytes[..bytes.len() / 2]).unwrap();
    let message = error(&truncated);
    assert!(
        message.contains("truncated") && message.contains("model.safetensors"),
        "{message}"
    );

    // Weights of another width than config.json says.
    let misshapen = dir.path().join("misshapen");
    write_dir(
        &misshapen,
        &tiny_config().replace("\"n_embd\": 32", "\"n_embd\": 64"),
        &fixture_tensors(),
    );
    let message = error(&misshapen);
    assert!(
        message.contains("transformer.wte.weight")
            && message.contains("[512, 32]")
            && message.contains("[512, 64]"),
        "{message}"
    );

    // A missing tensor, and one GPT-2 does not have.
    let mut tensors = fixture_tensors();
    tensors.retain(|(name, _, _)| name != "transformer.h.1.mlp.c_fc.bias");
    write_dir(&dir.path().join("missing"), &tiny_config(), &tensors);
    let message = error(&dir.path().join("missing"));
    assert!(
        message.contains("transformer.h.1.mlp.c_fc.bias"),
        "{message}"
    );
    let mut tensors = fixture_tensors();
    tensors.push((
        "transformer.h.0.attn.rotary.weight".into(),
        vec![1],
        vec![0; 4],
    ));
    write_dir(&dir.path().join("extra"), &tiny_config(), &tensors);
    let message = error(&dir.path().join("extra"));
    assert!(
        message.contains("transformer.h.0.attn.rotary.weight"),
        "{message}"
    );
    assert!(matches!(
        hf::HfGpt2Config::parse(
            "{\"model_type\": \"gpt2\", \"n_layer\": 2}",
            Path::new("c.json")
        ),
        Err(HfError::BadConfig { .. })
    ));
}
