//! Cross-entropy as one kernel on the `flex` backend: the loss and, for the backward pass, the
//! softmax it computed along the way, so the gradient is `softmax - one_hot(target)` scaled by
//! the mean, with no second exp.
//!
//! As tensor ops the loss is seven operations forward and as many backward, each allocating and
//! recording an autodiff node, and its two exps were a third of a bigram training step.
//! [`cross_entropy`] hands the tensors back untouched on every other backend (see
//! `tinygpt_layers::flex`); tests hold the two paths to the same loss and gradient.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorPrimitive};
use std::sync::Arc;
use tinygpt_layers::cpu_math;
use tinygpt_layers::flex::{
    cast, f32_values, flex_kernel_backend, flex_tensor, FlexAutodiff, FlexKind,
};

/// Mean cross-entropy of `logits` (`[rows, vocab]`) against `targets` (`[rows]`) through the
/// kernel when the backend is flex, else the tensors back for the plain path.
#[allow(clippy::type_complexity)]
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Result<Tensor<B, 1>, (Tensor<B, 2>, Tensor<B, 1, Int>)> {
    let Some(kind) = flex_kernel_backend::<B>() else {
        return Err((logits, targets));
    };
    if logits.dtype() != DType::F32 {
        return Err((logits, targets));
    }
    let [rows, vocab] = logits.dims();
    let targets: Arc<[usize]> = targets
        .into_data()
        .convert::<i64>()
        .iter::<i64>()
        .map(|t| {
            usize::try_from(t)
                .ok()
                .filter(|&t| t < vocab)
                .unwrap_or_else(|| panic!("target {t} is outside the vocabulary of {vocab}"))
        })
        .collect();
    let shape = Shape { rows, vocab };
    if kind == FlexKind::Inference {
        let logits: FlexTensor = cast::<_, Tensor<Flex, 2>>(logits).into_primitive().tensor();
        let loss = forward(&logits, shape, &targets, false).0;
        return Ok(cast(Tensor::<Flex, 1>::from_primitive(
            TensorPrimitive::Float(loss),
        )));
    }
    let logits = cast::<_, Tensor<FlexAutodiff, 2>>(logits)
        .into_primitive()
        .tensor();
    let loss = match FusedCrossEntropy
        .prepare::<NoCheckpointing>([logits.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (loss, probs) = forward(&logits.primitive, shape, &targets, true);
            let probs = probs.expect("asked for the softmax");
            prep.finish(
                Saved {
                    probs,
                    targets,
                    shape,
                },
                loss,
            )
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(&logits.primitive, shape, &targets, false).0)
        }
    };
    Ok(cast(Tensor::<FlexAutodiff, 1>::from_primitive(
        TensorPrimitive::Float(loss),
    )))
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    rows: usize,
    vocab: usize,
}

/// `(mean loss [1], softmax [rows, vocab] if kept)`.
fn forward(
    logits: &FlexTensor,
    shape: Shape,
    targets: &[usize],
    keep_softmax: bool,
) -> (FlexTensor, Option<FlexTensor>) {
    let logits = logits.to_contiguous();
    let logits = f32_values(&logits);
    let mut probs = logits.to_vec();
    let mut log_sum_exp = vec![0.0f32; shape.rows];
    cpu_math::softmax_rows(&mut probs, shape.vocab, false, &mut log_sum_exp);
    // -log softmax(x)[target] = log_sum_exp - x[target]
    let total: f64 = logits
        .chunks(shape.vocab)
        .zip(&log_sum_exp)
        .zip(targets)
        .map(|((row, lse), &target)| (lse - row[target]) as f64)
        .sum();
    let loss = flex_tensor(vec![(total / shape.rows as f64) as f32], [1]);
    let probs = keep_softmax.then(|| flex_tensor(probs, [shape.rows, shape.vocab]));
    (loss, probs)
}

#[derive(Debug)]
struct FusedCrossEntropy;

#[derive(Debug, Clone)]
struct Saved {
    probs: FlexTensor,
    targets: Arc<[usize]>,
    shape: Shape,
}

impl Backward<Flex, 1> for FusedCrossEntropy {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad_loss = grads.consume::<Flex>(&ops.node).to_contiguous();
        let Some(parent) = parent else { return };
        let Saved {
            probs,
            targets,
            shape,
        } = ops.state;
        let scale = grad_loss
            .as_slice::<f32>()
            .and_then(|g| g.first().copied())
            .expect("the loss gradient is one f32")
            / shape.rows as f32;
        let mut grad: Vec<f32> = f32_values(&probs).iter().map(|p| p * scale).collect();
        for (row, &target) in grad.chunks_mut(shape.vocab).zip(targets.iter()) {
            row[target] -= scale;
        }
        let grad = flex_tensor(grad, [shape.rows, shape.vocab]);
        grads.register::<Flex>(parent.id, grad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plain_cross_entropy;
    use burn::tensor::{Distribution, TensorData};

    fn targets<B: Backend>(rows: usize, vocab: usize) -> Tensor<B, 1, Int> {
        let ids: Vec<i64> = (0..rows).map(|i| ((i * 7 + 3) % vocab) as i64).collect();
        Tensor::from_data(TensorData::new(ids, [rows]), &Default::default())
    }

    fn max_difference(a: TensorData, b: TensorData) -> f32 {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn fused_and_plain_agree_on_loss_and_gradient() {
        tinygpt_layers::cpu_math::at_every_simd_level(|_| {
            fused_and_plain_agree_on_loss_and_gradient_here()
        });
    }

    fn fused_and_plain_agree_on_loss_and_gradient_here() {
        let device = Default::default();
        for (rows, vocab, spread) in [(256, 65, 1.0), (3, 5, 30.0), (1, 65, 0.0)] {
            let logits = Tensor::<FlexAutodiff, 2>::random(
                [rows, vocab],
                Distribution::Normal(0.0, spread),
                &device,
            );
            let run = |fused: bool| {
                let logits = logits.clone().detach().require_grad();
                let targets = targets::<FlexAutodiff>(rows, vocab);
                let loss = if fused {
                    cross_entropy(logits.clone(), targets)
                        .unwrap_or_else(|_| panic!("flex runs the kernel"))
                } else {
                    plain_cross_entropy(logits.clone(), targets)
                };
                // A loss weight other than 1 checks that the incoming gradient is used.
                let grads = (loss.clone() * 3.0).backward();
                (loss.into_data(), logits.grad(&grads).unwrap().into_data())
            };
            let (fused, plain) = (run(true), run(false));
            assert!(max_difference(fused.0, plain.0) < 1e-5, "loss");
            assert!(max_difference(fused.1, plain.1) < 1e-6, "gradient");

            let inner = logits.clone().inner();
            let fused = cross_entropy(inner.clone(), targets::<Flex>(rows, vocab))
                .unwrap_or_else(|_| panic!("flex runs the kernel"));
            let plain = plain_cross_entropy(inner, targets::<Flex>(rows, vocab));
            assert!(max_difference(fused.into_data(), plain.into_data()) < 1e-5);
        }
    }

    #[test]
    #[should_panic(expected = "target 5 is outside the vocabulary of 5")]
    fn a_target_outside_the_vocabulary_is_named() {
        let logits = Tensor::<Flex, 2>::zeros([1, 5], &Default::default());
        let targets = Tensor::from_data(TensorData::new(vec![5i64], [1]), &Default::default());
        let _ = cross_entropy(logits, targets);
    }

    #[test]
    fn other_backends_get_the_tensors_back() {
        let device = Default::default();
        let logits = Tensor::<burn::backend::NdArray, 2>::zeros([2, 3], &device);
        assert!(cross_entropy(logits, targets(2, 3)).is_err());
    }
}
