//! The Llama family against Hugging Face (reference/make_llama_fixtures.py): a tiny random
//! `LlamaForCausalLM` (grouped-query attention, a given head_dim, llama3 rope scaling, untied
//! head, bf16 weights in shards, a transformers-4 config.json, SentencePiece-style tokens) and a
//! tiny `Qwen2ForCausalLM` (q/k/v biases, one kv head, tied head, f32, a transformers-5
//! config.json, byte-level tokens, a chat template): token ids, logits, loss, greedy tokens
//! with and without the cache, a conversation's cache across turns, the chat template, export
//! back to the same tensors, and clear errors for broken directories.

use serde_json::Value;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use tinygpt_backends::{engine, Model};
use tinygpt_model::{ReplyEnd, Sampler};
use tinygpt_tokenizer::{AnyTokenizer, ChatMessage, HfTokenizer, TextStream, Tokenizer};
use tinygpt_train::hf::{self, HfConfig};
use tinygpt_train::{open_run, BackendKind, LoadedRun};

const MODELS: [&str; 2] = ["llama", "qwen2"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/fixtures")
}

fn model_dir(name: &str) -> PathBuf {
    fixtures().join("llama").join(name)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("llama_expected.json")).unwrap();
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

fn hf_tokenizer(run: &LoadedRun) -> &HfTokenizer {
    match &run.tokenizer {
        AnyTokenizer::HuggingFace(hf) => hf,
        other => panic!("{} read as {}", run.path.display(), other.describe()),
    }
}

fn load(run: &LoadedRun, kind: BackendKind) -> Box<dyn Model> {
    engine(kind, None).unwrap().load(run).unwrap()
}

/// Greedy tokens with the cache (`generate`) and by re-reading the whole sequence each step.
fn greedy(model: &dyn Model, prompt: &[usize], n: usize) -> (Vec<usize>, Vec<usize>) {
    let mut cached = Vec::new();
    model.generate(prompt, n, &mut Sampler::greedy(), &mut |t| {
        cached.push(t);
        ControlFlow::Continue(())
    });
    let mut sequence = prompt.to_vec();
    for _ in 0..n {
        let logits = model.logits(&sequence);
        let last = logits.last().unwrap();
        let best = (0..last.len())
            .max_by(|&a, &b| last[a].total_cmp(&last[b]))
            .unwrap();
        sequence.push(best);
    }
    (cached, sequence[prompt.len()..].to_vec())
}

/// Logits within 1e-5 of Hugging Face's relative to their scale, the loss within 1e-5
/// relative, 30 greedy tokens identical with and without the cache.
fn matches_hugging_face(run: &LoadedRun, expected: &Value, kind: BackendKind) {
    let model = load(run, kind);
    for (i, input) in expected["inputs"].as_array().unwrap().iter().enumerate() {
        let input = ids(input);
        let logits = model.logits(&input);
        let want = expected["logits"][i].as_array().unwrap();
        assert_eq!(logits.len(), want.len());
        let mut worst = 0f64;
        let mut scale = 0f64;
        let mut loss = 0f64;
        for (t, (row, want_row)) in logits.iter().zip(want).enumerate() {
            let want_row: Vec<f64> = want_row
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(row.len(), want_row.len());
            for (a, b) in row.iter().zip(&want_row) {
                worst = worst.max((*a as f64 - b).abs());
                scale = scale.max(b.abs());
            }
            if t + 1 < input.len() {
                let max = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                loss += max + sum.ln() - row[input[t + 1]] as f64;
            }
        }
        assert!(
            worst <= 1e-5 * scale,
            "{} on {kind:?}, input {i}: max |diff| {worst:e} at scale {scale}",
            run.path.display()
        );
        let loss = loss / (input.len() - 1) as f64;
        let want = expected["loss"][i].as_f64().unwrap();
        assert!((loss - want).abs() <= 1e-5 * want, "loss {loss} vs {want}");
    }
    let prompt = ids(&expected["greedy"]["prompt"]);
    let want = ids(&expected["greedy"]["tokens"]);
    let (cached, uncached) = greedy(model.as_ref(), &prompt, want.len());
    assert_eq!(cached, want, "{kind:?}: with the KV cache");
    assert_eq!(uncached, want, "{kind:?}: without the cache");
}

#[test]
fn llama_and_qwen2_give_hugging_faces_logits_loss_and_greedy_tokens() {
    let expected = expected();
    for name in MODELS {
        let run = open_run(&model_dir(name)).unwrap();
        assert_eq!(
            run.model.num_params() as u64,
            expected[name]["num_params"].as_u64().unwrap(),
            "{name}"
        );
        for kind in [BackendKind::Flex, BackendKind::NdArray] {
            matches_hugging_face(&run, &expected[name], kind);
        }
    }
}

#[test]
fn both_config_spellings_and_both_weight_layouts_are_read() {
    let HfConfig::Llama(llama) = HfConfig::read(&model_dir("llama")).unwrap() else {
        panic!("not a Llama")
    };
    // transformers 4: rope_theta + rope_scaling (llama3), torch_dtype; a given head_dim.
    assert_eq!(llama.architecture, "LlamaForCausalLM");
    assert_eq!(
        (llama.num_attention_heads, llama.num_key_value_heads),
        (4, 2)
    );
    assert_eq!(llama.head_dim, 12);
    assert_eq!(llama.rope.theta, 500_000.0);
    assert!(matches!(
        llama.rope.scaling,
        Some(tinygpt_layers::RopeScaling::Llama3 { factor, .. }) if factor == 8.0
    ));
    assert!(!llama.tie_word_embeddings && !llama.qkv_bias);
    assert!(model_dir("llama").join(hf::INDEX_FILE).is_file());
    // transformers 5: rope_parameters, dtype; Qwen2's biases and tied head.
    let HfConfig::Llama(qwen) = HfConfig::read(&model_dir("qwen2")).unwrap() else {
        panic!("not a Qwen2")
    };
    assert_eq!(qwen.architecture, "Qwen2ForCausalLM");
    assert_eq!(qwen.rope.theta, 1_000_000.0);
    assert!(qwen.tie_word_embeddings && qwen.qkv_bias);
}

#[test]
fn token_ids_match_hugging_faces_byte_level_and_sentencepiece_style_bpe() {
    let expected = expected();
    for name in MODELS {
        let run = open_run(&model_dir(name)).unwrap();
        let tokenizer = &run.tokenizer;
        for case in expected[name]["tokenizer"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            assert_eq!(
                tokenizer.encode(text).unwrap(),
                ids(&case["ids"]),
                "{name}: {text:?}"
            );
            assert_eq!(
                tokenizer.encode_prompt(text).unwrap(),
                ids(&case["with_special"]),
                "{name}: {text:?} with special tokens"
            );
            let decoded = case["decoded"].as_str().unwrap();
            assert_eq!(tokenizer.decode(&ids(&case["ids"])).unwrap(), decoded);
            // Streamed token by token: the same text, no space lost, no half character.
            let mut stream = TextStream::new(tokenizer);
            let mut streamed = String::new();
            for &id in &ids(&case["ids"]) {
                streamed.push_str(&stream.push(id).unwrap());
            }
            streamed.push_str(&stream.finish());
            assert_eq!(streamed, decoded, "{name}: streamed {text:?}");
        }
    }
    // TinyLlama-style: <s> begins generation and a prompt; the end token is </s>.
    let llama = open_run(&model_dir("llama")).unwrap();
    assert_eq!(llama.tokenizer.start_tokens(), vec![1]);
    assert_eq!(llama.tokenizer.end_tokens(), &[2]);
    // SmolLM2/Qwen-style: nothing added; generation_config.json's eos is <|im_end|>.
    let qwen = open_run(&model_dir("qwen2")).unwrap();
    let chat = &expected["qwen2"]["chat"];
    assert_eq!(
        qwen.tokenizer.end_tokens(),
        &[chat["eos_token_id"].as_u64().unwrap() as usize]
    );
}

#[test]
fn the_chat_template_renders_as_transformers_does() {
    let expected = expected();
    let chat = &expected["qwen2"]["chat"];
    let run = open_run(&model_dir("qwen2")).unwrap();
    let tokenizer = hf_tokenizer(&run);
    let messages: Vec<ChatMessage> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    let text = tokenizer.apply_chat_template(&messages, true).unwrap();
    assert_eq!(text, chat["text"].as_str().unwrap());
    assert_eq!(tokenizer.encode(&text).unwrap(), ids(&chat["ids"]));
    // A base model has no template: a clear error, not an empty prompt.
    let llama = open_run(&model_dir("llama")).unwrap();
    let message = hf_tokenizer(&llama)
        .apply_chat_template(&messages, true)
        .unwrap_err()
        .to_string();
    assert!(message.contains("chat_template"), "{message}");
}

/// The tokens of a reply, greedy, up to `n`.
fn reply(chat: &mut dyn tinygpt_backends::Chat, context: &[usize], n: usize) -> Vec<usize> {
    let mut tokens = Vec::new();
    let end = chat.reply(context, n, &mut Sampler::greedy(), &mut |t| {
        tokens.push(t);
        ControlFlow::Continue(())
    });
    assert_eq!(end, ReplyEnd::MaxTokens);
    tokens
}

#[test]
fn a_conversation_keeps_its_cache_across_turns_and_says_when_the_context_is_full() {
    let run = open_run(&model_dir("qwen2")).unwrap();
    let model = load(&run, BackendKind::Flex);
    let first: Vec<usize> = (3..20).collect();
    let mut chat = model.conversation();
    let answer = reply(chat.as_mut(), &first, 6);
    assert_eq!(
        chat.len(),
        first.len() + 5,
        "the last sampled token is not read yet"
    );
    // The next turn: the whole text again, the reply and a new message appended.
    let mut second = first.clone();
    second.extend(&answer);
    second.extend(30..37);
    let continued = reply(chat.as_mut(), &second, 6);
    let fresh = reply(model.conversation().as_mut(), &second, 6);
    assert_eq!(continued, fresh);
    // A text that changed earlier on: the cache is cut back to the common part.
    let mut edited = second.clone();
    edited[4] = 99;
    assert_eq!(
        reply(chat.as_mut(), &edited, 6),
        reply(model.conversation().as_mut(), &edited, 6)
    );
    // The model's context is 128 tokens.
    let long: Vec<usize> = (0..120).map(|i| 3 + i % 50).collect();
    let mut chat = model.conversation();
    let mut produced = 0;
    let end = chat.reply(&long, 50, &mut Sampler::greedy(), &mut |_| {
        produced += 1;
        ControlFlow::Continue(())
    });
    assert_eq!(end, ReplyEnd::ContextFull);
    assert!(produced < 50);
    let full: Vec<usize> = (0..128).map(|i| 3 + i % 50).collect();
    let end = model
        .conversation()
        .reply(&full, 5, &mut Sampler::greedy(), &mut |_| {
            ControlFlow::Continue(())
        });
    assert_eq!(end, ReplyEnd::ContextFull);
}

/// Every tensor of a directory's weight files, by name: shape and values as f32.
fn tensors_of(dir: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in file.tensors() {
            let values: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::BF16 => view
                    .data()
                    .chunks_exact(2)
                    .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                    .collect(),
                other => panic!("{name}: {other:?}"),
            };
            out.insert(name, (view.shape().to_vec(), values));
        }
    }
    out
}

#[test]
fn export_writes_the_same_tensors_config_and_tokenizer_back() {
    let expected = expected();
    let scratch = tempfile::tempdir().unwrap();
    for name in MODELS {
        let source = model_dir(name);
        let run = open_run(&source).unwrap();
        let out = scratch.path().join(name);
        load(&run, BackendKind::NdArray)
            .export_hf(&run.tokenizer, &out)
            .unwrap();
        // Every tensor, by Hugging Face's name, shape and value (bf16 widens to f32 exactly).
        let ours = tensors_of(&out);
        let theirs = tensors_of(&source);
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(ours, theirs, "{name}");
        // The same architecture, and the tokenizer files as imported.
        let (HfConfig::Llama(a), HfConfig::Llama(b)) = (
            HfConfig::read(&source).unwrap(),
            HfConfig::read(&out).unwrap(),
        ) else {
            panic!("{name}: not Llama-family")
        };
        assert_eq!(a.model_spec(None, 0.0), b.model_spec(None, 0.0), "{name}");
        assert_eq!(a.architecture, b.architecture);
        for file in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ] {
            assert_eq!(
                std::fs::read(source.join(file)).unwrap(),
                std::fs::read(out.join(file)).unwrap(),
                "{name}: {file}"
            );
        }
        // And it loads back to the same model.
        let back = open_run(&out).unwrap();
        matches_hugging_face(&back, &expected[name], BackendKind::Flex);
    }
}

/// Copies a fixture directory so a test can break it.
fn copy_of(name: &str, into: &Path) -> PathBuf {
    let dir = into.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(model_dir(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// Rewrites the one-file Qwen2 weights with `change` applied to the tensor list.
fn rewrite_weights(dir: &Path, change: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>)) {
    let mut tensors = tensors_of(dir);
    change(&mut tensors);
    let bytes: BTreeMap<&String, Vec<u8>> = tensors
        .iter()
        .map(|(n, (_, v))| (n, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, (shape, _))| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                &bytes[n],
            )
            .unwrap();
            (n.clone(), view)
        })
        .collect();
    let file = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::write(dir.join(hf::WEIGHTS_FILE), file).unwrap();
}

#[test]
fn broken_directories_are_clear_errors_naming_what_is_wrong() {
    let scratch = tempfile::tempdir().unwrap();
    let error = |dir: &Path| -> String {
        match open_run(dir).and_then(|run| {
            engine(BackendKind::Flex, None)
                .unwrap()
                .load(&run)
                .map(|_| ())
        }) {
            Ok(()) => panic!("{} loaded", dir.display()),
            Err(e) => e.to_string(),
        }
    };
    // What is broken, how, and what the error must name.
    type Breakage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Breakage, &[&str])> = vec![
        (
            "missing tensor",
            Box::new(|dir| {
                rewrite_weights(dir, |t| {
                    t.remove("model.layers.1.mlp.up_proj.weight");
                })
            }),
            &["model.layers.1.mlp.up_proj.weight", "model.safetensors"],
        ),
        (
            "extra tensor",
            Box::new(|dir| {
                rewrite_weights(dir, |t| {
                    t.insert(
                        "model.layers.0.self_attn.q_norm.weight".into(),
                        (vec![8], vec![1.0; 8]),
                    );
                })
            }),
            &["model.layers.0.self_attn.q_norm.weight"],
        ),
        (
            "misshapen tensor",
            Box::new(|dir| {
                rewrite_weights(dir, |t| {
                    t.insert("model.norm.weight".into(), (vec![31], vec![1.0; 31]));
                })
            }),
            &["model.norm.weight", "[31]", "[32]"],
        ),
        (
            "truncated weights",
            Box::new(|dir| {
                let path = dir.join(hf::WEIGHTS_FILE);
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            }),
            &["truncated", "model.safetensors"],
        ),
        (
            "no tokenizer",
            Box::new(|dir| std::fs::remove_file(dir.join("tokenizer.json")).unwrap()),
            &["tokenizer.json"],
        ),
        (
            "no weights",
            Box::new(|dir| std::fs::remove_file(dir.join(hf::WEIGHTS_FILE)).unwrap()),
            &["model.safetensors", "model.safetensors.index.json"],
        ),
        (
            "unknown rope type",
            Box::new(|dir| {
                let path = dir.join(hf::CONFIG_FILE);
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::write(&path, text.replace("\"default\"", "\"dynamic\"")).unwrap();
            }),
            &["\"dynamic\"", "config.json"],
        ),
        (
            "another architecture",
            Box::new(|dir| {
                let path = dir.join(hf::CONFIG_FILE);
                let text = std::fs::read_to_string(&path).unwrap();
                let text = text
                    .replace("\"qwen2\"", "\"falcon\"")
                    .replace("Qwen2ForCausalLM", "FalconForCausalLM");
                std::fs::write(&path, text).unwrap();
            }),
            &["\"falcon\"", "FalconForCausalLM", "LlamaForCausalLM"],
        ),
    ];
    for (what, break_it, named) in cases {
        let dir = copy_of("qwen2", &scratch.path().join(what.replace(' ', "_")));
        break_it(&dir);
        let message = error(&dir);
        for part in named {
            assert!(message.contains(part), "{what}: {part} not in {message}");
        }
    }
    // A shard the index lists but the directory lacks.
    let dir = copy_of("llama", &scratch.path().join("shard"));
    std::fs::remove_file(dir.join("model-00003-of-00005.safetensors")).unwrap();
    let message = error(&dir);
    assert!(
        message.contains("model-00003-of-00005.safetensors"),
        "{message}"
    );
}
