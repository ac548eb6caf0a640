//! The whole model on every CPU backend: causality, initial loss, save/load and generation.

use burn::backend::{Flex, NdArray};
use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::{backend::Backend, Distribution, ElementConversion, Int, Tensor};
use tinygpt_model::{LanguageModel, ModelConfig, Sampler, Sampling};
use tinygpt_train::RunConfig;

const VOCAB: usize = 65;

/// The repository, where `configs/` lives; `TINYGPT_ROOT` overrides it for test executables run
/// on another machine (`cargo xtask gpu-check`).
fn repo_root() -> std::path::PathBuf {
    std::env::var_os("TINYGPT_ROOT")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

fn model_config(name: &str) -> ModelConfig {
    let path = repo_root().join(format!("configs/{name}.ron"));
    RunConfig::load(&path)
        .unwrap()
        .model
        .resolve(VOCAB)
        .unwrap()
}

fn random_tokens<B: Backend>(dims: [usize; 2], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::<B, 2>::random(dims, Distribution::Uniform(0.0, VOCAB as f64), device).int()
}

fn causal<B: Backend>(name: &str) {
    let device = Default::default();
    B::seed(&device, 3);
    let config = model_config(name);
    let model: LanguageModel<B> = config.init(&device);
    let t = config.block_size;
    let idx = random_tokens::<B>([2, t], &device);
    let logits = model.forward(idx.clone());
    assert_eq!(logits.dims(), [2, t, VOCAB]);
    let cut = t / 2;
    // Change every token from `cut` on; logits before `cut` must not move.
    let changed = idx.clone().slice_assign(
        [0..2, cut..t],
        (idx.slice([0..2, cut..t]) + 1).remainder_scalar(VOCAB as i64),
    );
    let after = model.forward(changed);
    let past = |x: Tensor<B, 3>| x.slice([0..2, 0..cut, 0..VOCAB]);
    past(logits.clone())
        .into_data()
        .assert_approx_eq::<f32>(&past(after.clone()).into_data(), Default::default());
    let moved: f32 = (logits - after).abs().max().into_scalar().elem();
    assert!(
        moved > 1e-5,
        "{name}: changing tokens must change later logits"
    );
}

#[test]
fn every_stage_is_causal_on_ndarray() {
    for name in [
        "head",
        "multihead",
        "feedforward",
        "transformer",
        "nanogpt_cpu",
    ] {
        causal::<NdArray<f32>>(name);
    }
}

#[test]
fn every_stage_is_causal_on_flex() {
    for name in [
        "head",
        "multihead",
        "feedforward",
        "transformer",
        "nanogpt_cpu",
    ] {
        causal::<Flex>(name);
    }
}

fn initial_loss<B: Backend>() -> f64 {
    let device = Default::default();
    B::seed(&device, 11);
    let model: LanguageModel<B> = model_config("transformer").init(&device);
    let idx = random_tokens::<B>([32, 8], &device);
    let targets = random_tokens::<B>([32, 8], &device);
    let (_, loss) = model.forward_loss(idx, targets);
    loss.into_scalar().elem()
}

#[test]
fn initial_loss_of_transformer_is_near_ln_vocab() {
    let uniform = (VOCAB as f64).ln(); // 4.174
    for loss in [initial_loss::<NdArray<f32>>(), initial_loss::<Flex>()] {
        assert!(
            (loss - uniform).abs() < 0.05,
            "initial loss {loss}, ln(65) = {uniform}"
        );
    }
}

fn save_load_identical<B: Backend>() {
    let device = Default::default();
    let config = model_config("transformer");
    let model: LanguageModel<B> = config.init(&device);
    let idx = random_tokens::<B>([3, 8], &device);
    let before = model.forward(idx.clone());
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = recorder.record(model.into_record(), ()).unwrap();
    // A freshly initialised model differs until the record is loaded.
    let fresh: LanguageModel<B> = config.init(&device);
    let differs: f32 = (fresh.forward(idx.clone()) - before.clone())
        .abs()
        .max()
        .into_scalar()
        .elem();
    assert!(differs > 1e-4);
    let loaded = fresh.load_record(recorder.load(bytes, &device).unwrap());
    let after = loaded.forward(idx);
    assert_eq!(
        before.into_data(),
        after.into_data(),
        "bit-identical logits"
    );
}

#[test]
fn save_then_load_gives_identical_logits() {
    save_load_identical::<NdArray<f32>>();
    save_load_identical::<Flex>();
}

#[test]
fn generate_returns_exactly_n_tokens_in_the_vocabulary() {
    let device = Default::default();
    for name in ["bigram", "transformer"] {
        let model: LanguageModel<NdArray<f32>> = model_config(name).init(&device);
        for n in [0, 1, 37] {
            // A prompt longer than block_size is cropped, not rejected.
            let mut sampler = Sampler::new(Sampling::default(), 5);
            let tokens = model.generate(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], n, &mut sampler);
            assert_eq!(tokens.len(), n);
            assert!(tokens.iter().all(|&t| t < VOCAB));
        }
        let draw = |seed| model.generate(&[], 20, &mut Sampler::new(Sampling::default(), seed));
        assert_eq!(draw(1), draw(1), "{name}: seeded");
        let greedy = Sampling {
            temperature: 0.0,
            ..Sampling::default()
        };
        assert_eq!(
            model.generate(&[], 20, &mut Sampler::new(greedy, 1)),
            model.generate(&[], 20, &mut Sampler::new(greedy, 2)),
            "{name}: temperature 0 ignores the seed"
        );
    }
}

/// The same checks on CUDA, when built with `--features cuda` and a GPU is present.
#[cfg(feature = "cuda")]
#[test]
fn cuda_causality_initial_loss_and_save_load() {
    use burn::tensor::backend::AutodiffBackend;
    use tinygpt_backends::{dispatch, BackendError, BackendKind, BackendTask};
    struct OnCuda;
    impl BackendTask for OnCuda {
        type Output = ();
        fn run<B: AutodiffBackend>(self, _device: B::Device, _kind: BackendKind) {
            for name in [
                "head",
                "multihead",
                "feedforward",
                "transformer",
                "nanogpt_cpu",
            ] {
                causal::<B::InnerBackend>(name);
            }
            let loss = initial_loss::<B::InnerBackend>();
            assert!(
                (loss - (VOCAB as f64).ln()).abs() < 0.05,
                "initial loss {loss}"
            );
            save_load_identical::<B::InnerBackend>();
        }
    }
    match dispatch(BackendKind::Cuda, OnCuda) {
        Ok(()) => println!("cuda: causality, initial loss and save/load checked"),
        Err(e @ BackendError::CudaUnavailable(_)) => println!("SKIPPED on CUDA: {e}"),
        Err(e) => panic!("{e}"),
    }
}

fn cached_logits_match_full_forward<B: Backend>(name: &str) {
    let device = Default::default();
    let config = model_config(name);
    let model: LanguageModel<B> = config.init(&device);
    let t = config.block_size;
    let idx = random_tokens::<B>([1, t], &device);
    let full = model.forward(idx.clone());
    // A prompt of half the window at once, then one token at a time.
    let mut cache = tinygpt_model::GenerationCache::default();
    let mut pieces = vec![model.forward_cached(idx.clone().slice([0..1, 0..t / 2]), &mut cache)];
    for i in t / 2..t {
        pieces.push(model.forward_cached(idx.clone().slice([0..1, i..i + 1]), &mut cache));
    }
    assert_eq!(cache.len(), t);
    Tensor::cat(pieces, 1)
        .into_data()
        .assert_approx_eq::<f32>(&full.into_data(), burn::tensor::Tolerance::absolute(1e-5));
}

#[test]
fn cached_forward_matches_the_full_forward() {
    for name in ["head", "transformer", "nanogpt_cpu"] {
        cached_logits_match_full_forward::<NdArray<f32>>(name);
        cached_logits_match_full_forward::<Flex>(name);
    }
}

#[test]
fn cached_generation_gives_the_uncached_tokens() {
    use std::ops::ControlFlow;
    let device = Default::default();
    for name in ["bigram", "transformer", "nanogpt_cpu"] {
        let config = model_config(name);
        let model: LanguageModel<Flex> = config.init(&device);
        // Past the window, so the sliding re-encode is exercised too.
        let n = 2 * config.block_size + 5;
        for sampling in [
            Sampling::default(),
            Sampling {
                temperature: 0.0,
                ..Sampling::default()
            },
        ] {
            let run = |cached: bool| {
                let mut sampler = Sampler::new(sampling, 21);
                let mut tokens = Vec::new();
                let collect = |t| {
                    tokens.push(t);
                    ControlFlow::Continue(())
                };
                if cached {
                    model.generate_with(&[3, 1, 4], n, &mut sampler, collect);
                } else {
                    model.generate_uncached_with(&[3, 1, 4], n, &mut sampler, collect);
                }
                tokens
            };
            assert_eq!(run(true), run(false), "{name}, {sampling:?}");
        }
    }
}
