//! nanoGPT's training recipe, option by option: clipping by global norm, gradient accumulation,
//! weight decay on matrices only, and dropout only in training.

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Int, Tensor};
use std::path::Path;
use tinygpt_model::{LanguageModel, ModelConfig};
use tinygpt_train::{grads, RunConfig};

type B = Autodiff<NdArray<f32>>;

fn model_config(dropout: f64) -> ModelConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/transformer.ron");
    let mut config = RunConfig::load(&path).unwrap();
    config.model.dropout = dropout;
    config.model.resolve(65).unwrap()
}

fn tokens(batch: usize) -> Tensor<B, 2, Int> {
    Tensor::<B, 2>::random(
        [batch, 8],
        Distribution::Uniform(0.0, 65.0),
        &Default::default(),
    )
    .int()
}

fn gradients(
    model: &LanguageModel<B>,
    x: Tensor<B, 2, Int>,
    y: Tensor<B, 2, Int>,
    scale: f64,
) -> GradientsParams {
    let (_, loss) = model.forward_loss(x, y);
    GradientsParams::from_grads(loss.mul_scalar(scale).backward(), model)
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn clipping_scales_to_the_global_norm() {
    let model: LanguageModel<B> = model_config(0.0).init(&Default::default());
    let g = gradients(&model, tokens(16), tokens(16), 1.0);
    let norm = grads::global_norm(&model, &g);
    let by_hand: f64 = grads::flat_gradients(&model, &g)
        .iter()
        .flatten()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt();
    assert!(
        (norm - by_hand).abs() < 1e-4 * by_hand,
        "{norm} vs {by_hand}"
    );

    let max_norm = norm / 4.0;
    let (clipped, before) = grads::clip_global_norm(&model, g, max_norm);
    assert_eq!(before, norm);
    let after = grads::global_norm(&model, &clipped);
    assert!(
        (after - max_norm).abs() < 1e-4 * max_norm,
        "clipped to {after}, wanted {max_norm}"
    );

    // Below the threshold nothing changes.
    let (same, _) = grads::clip_global_norm(&model, clipped, max_norm * 10.0);
    assert!((grads::global_norm(&model, &same) - after).abs() < 1e-9);
}

#[test]
fn accumulation_equals_one_bigger_batch() {
    let model: LanguageModel<B> = model_config(0.0).init(&Default::default());
    let (x, y) = (tokens(16), tokens(16));
    let whole = gradients(&model, x.clone(), y.clone(), 1.0);
    let half = |range: std::ops::Range<usize>| {
        gradients(
            &model,
            x.clone().slice([range.clone(), 0..8]),
            y.clone().slice([range, 0..8]),
            0.5,
        )
    };
    let summed = grads::accumulate(&model, Some(half(0..8)), half(8..16));
    let diff = max_abs_diff(
        &grads::flat_gradients(&model, &whole),
        &grads::flat_gradients(&model, &summed),
    );
    assert!(diff < 1e-6, "max difference {diff}");
}

/// Collects every parameter's values with its rank.
struct Values(Vec<(usize, Vec<f32>)>);

impl ModuleVisitor<B> for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push((D, param.val().into_data().to_vec().unwrap()));
    }
}

fn values(model: &LanguageModel<B>) -> Vec<(usize, Vec<f32>)> {
    let mut v = Values(Vec::new());
    model.visit(&mut v);
    v.0
}

#[test]
fn weight_decay_can_spare_biases_and_layernorm() {
    let model: LanguageModel<B> = model_config(0.0).init(&Default::default());
    let before = values(&model);
    let (lr, wd) = (0.1, 0.5);
    let factor = (1.0 - lr * wd) as f32;
    let check = |after: Vec<(usize, Vec<f32>)>, matrices_only: bool| {
        let mut ranks_seen = [false; 3];
        for ((rank, old), (_, new)) in before.iter().zip(&after) {
            ranks_seen[*rank] = true;
            let decayed = !matrices_only || *rank >= 2;
            for (o, n) in old.iter().zip(new) {
                let expected = if decayed { o * factor } else { *o };
                assert!(
                    (n - expected).abs() <= 1e-7 * o.abs().max(1.0),
                    "rank {rank}"
                );
            }
        }
        assert!(
            ranks_seen[1] && ranks_seen[2],
            "both kinds of parameters exist"
        );
    };
    check(
        values(&grads::apply_weight_decay(
            model.clone(),
            lr,
            wd,
            true,
            None,
        )),
        true,
    );
    check(
        values(&grads::apply_weight_decay(model, lr, wd, false, None)),
        false,
    );
}

#[test]
fn dropout_is_active_only_in_training() {
    let model: LanguageModel<B> = model_config(0.5).init(&Default::default());
    let x = tokens(4);
    let train_a = model.forward(x.clone()).into_data();
    let train_b = model.forward(x.clone()).into_data();
    assert_ne!(
        train_a, train_b,
        "training forward passes draw fresh dropout masks"
    );
    let eval = model.valid();
    let inner = x.inner();
    assert_eq!(
        eval.forward(inner.clone()).into_data(),
        eval.forward(inner).into_data()
    );
    let _ = model.num_params();
}
