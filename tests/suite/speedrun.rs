//! The GPT speedrun's model pieces, each wired as it says: zero-initialised residual projections
//! and head, the embedding skip into every layer, tanh logit soft-capping, and the Muon group.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{backend::Backend, Distribution, Int, Tensor};
use tinygpt_model::{LanguageModel, ModelSpec};
use tinygpt_train::config::RON_EXTENSIONS;

type B = Flex;
type TrainB = Autodiff<Flex>;
const VOCAB: usize = 29;

fn spec(extra: &str) -> ModelSpec {
    ron::Options::default()
        .with_default_extension(RON_EXTENSIONS)
        .from_str(&format!(
            "(n_embd: 32, block_size: 16, position_embedding: false, layers: [RmsNorm(weight: \
             false), SpeedrunBlock(n_head: 4, activation: ReluSquared, qk_norm: true), \
             SpeedrunBlock(n_head: 4), RmsNorm()], lm_head_bias: false, init: Normal(std: \
             0.2), {extra})"
        ))
        .unwrap()
}

/// A model with every weight drawn now: Burn draws a parameter at its first use, and each clone
/// of a model not yet used would draw its own.
fn model<Bk: Backend>(extra: &str, seed: u64) -> LanguageModel<Bk> {
    struct Touch;
    impl<Bk: Backend> burn::module::ModuleVisitor<Bk> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<Bk, D>>) {
            param.val();
        }
    }
    let device = Default::default();
    Bk::seed(&device, seed);
    let model: LanguageModel<Bk> = spec(extra).resolve(VOCAB).unwrap().init(&device);
    model.visit(&mut Touch);
    model
}

fn tokens<Bk: Backend>(dims: [usize; 2]) -> Tensor<Bk, 2, Int> {
    Tensor::<Bk, 2>::random(
        dims,
        Distribution::Uniform(0.0, VOCAB as f64),
        &Default::default(),
    )
    .int()
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

#[test]
fn zero_init_starts_uniform_and_still_learns_every_weight() {
    let model = model::<TrainB>("zero_init: true", 1);
    let idx = tokens::<TrainB>([2, 16]);
    let (logits, loss) = model.forward_loss(idx.clone(), tokens([2, 16]));
    // The head starts at zero: every logit is 0 and the loss is exactly ln(vocab).
    let max: f32 = logits.abs().max().into_scalar();
    assert_eq!(max, 0.0);
    let loss_value: f32 = loss.clone().into_scalar();
    assert!((loss_value as f64 - (VOCAB as f64).ln()).abs() < 1e-5);
    // The head's gradient is not zero, so the first step moves it and the blocks follow.
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let head = model.lm_head.as_ref().unwrap();
    let head_grad = grads.get::<Flex, 2>(head.weight.id).unwrap();
    assert!(head_grad.abs().sum().into_scalar() > 0.0);
    // Only the residual writes start at zero.
    let Some(tinygpt_layers::Layer::SpeedrunBlock(block)) = model.layers.get(1) else {
        panic!("layer 1 is a SpeedrunBlock");
    };
    let zero = |t: Tensor<TrainB, 2>| -> f32 { t.abs().sum().into_scalar() };
    assert_eq!(zero(block.attention.projection.weight.val()), 0.0);
    assert_eq!(
        zero(block.mlp.projection.as_ref().unwrap().weight.val()),
        0.0
    );
    assert!(zero(block.attention.qkv.weight.val()) > 0.0);
    assert!(zero(block.mlp.hidden.weight.val()) > 0.0);
}

#[test]
fn the_embedding_skip_starts_as_the_identity_and_learns() {
    // The same weights without the skip (the generator is shared with other tests: one draw).
    let skip = model::<TrainB>("x0_skip: true", 2);
    let mut plain = skip.clone();
    plain.x0_mix = None;
    // Four layers, two mixing weights each, starting at (1, 0).
    assert_eq!(skip.num_params(), plain.num_params() + 8);
    let idx = tokens::<TrainB>([2, 16]);
    let targets = tokens::<TrainB>([2, 16]);
    let a = plain.forward(idx.clone()).inner();
    let b = skip.forward(idx.clone()).inner();
    assert_eq!(
        values(a),
        values(b),
        "same weights, the skip closed: same logits"
    );
    let (_, loss) = skip.forward_loss(idx.clone(), targets);
    let grads = GradientsParams::from_grads(loss.backward(), &skip);
    let mix = skip.x0_mix.as_ref().unwrap();
    let grad = values(grads.get::<Flex, 2>(mix.id).unwrap());
    assert_eq!(grad.len(), 8);
    assert!(
        grad.iter().skip(2).step_by(2).all(|g| *g != 0.0),
        "every block's x0 weight gets a gradient: {grad:?}"
    );
    // Opened, the skip changes the output: the embedding really reaches every layer.
    let mut opened = skip.clone();
    let mix: Vec<f32> = (0..4).flat_map(|_| [1.0, 0.5]).collect();
    opened.x0_mix = Some(burn::module::Param::from_tensor(Tensor::from_data(
        burn::tensor::TensorData::new(mix, [4, 2]),
        &Default::default(),
    )));
    let c = opened.forward(idx.clone()).inner();
    assert_ne!(values(c), values(skip.forward(idx).inner()));
}

#[test]
fn softcap_is_cap_tanh_of_the_logits() {
    let capped = model::<B>("logit_softcap: 2.0", 3);
    let mut raw = capped.clone();
    raw.logit_softcap = None;
    let idx = tokens::<B>([2, 16]);
    let raw = values(raw.forward(idx.clone()));
    let capped_logits = values(capped.forward(idx.clone()));
    assert!(
        raw.iter().any(|x| x.abs() > 2.0),
        "the test needs logits past the cap"
    );
    for (r, c) in raw.iter().zip(&capped_logits) {
        let want = 2.0 * (r / 2.0).tanh();
        assert!((c - want).abs() < 1e-5, "{r} -> {c}, want {want}");
        assert!(c.abs() < 2.0);
    }
    // Generation reads the same capped logits.
    let mut cache = tinygpt_model::GenerationCache::default();
    let cached = values(capped.forward_cached(idx.clone(), &mut cache));
    for (a, b) in cached.iter().zip(&capped_logits) {
        assert!((a - b).abs() < 1e-4);
    }
}

#[test]
fn bad_settings_say_what_to_do() {
    let zero = ron::Options::default()
        .with_default_extension(RON_EXTENSIONS)
        .from_str::<ModelSpec>("(n_embd: 8, block_size: 4, layers: [], init: Zero)")
        .unwrap()
        .resolve(VOCAB)
        .unwrap_err()
        .to_string();
    assert!(zero.contains("zero_init: true"), "{zero}");
    let cap = spec("logit_softcap: -1.0").resolve(VOCAB).unwrap_err();
    assert!(cap.to_string().contains("logit_softcap"), "{cap}");
}

#[test]
fn the_untied_head_has_weights_of_its_own() {
    let untied = model::<B>("", 4);
    let tied = model::<B>("tie_embeddings: true", 4);
    assert_eq!(untied.num_params(), tied.num_params() + VOCAB * 32);
    let head = untied.lm_head.as_ref().expect("an untied head is a Linear");
    assert_ne!(head.weight.id, untied.token_embedding.weight.id);
    assert!(tied.lm_head.is_none() && tied.tied_head);
}
