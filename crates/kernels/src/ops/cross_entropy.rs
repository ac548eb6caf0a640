//! Cross-entropy as one operation: as tensor ops the loss is seven operations forward and as many
//! backward, each allocating and recording an autodiff node, and its two exps were a third of a
//! bigram training step.

use crate::cross_entropy as kernel;
use crate::host::{cast, host_backend, indices, Host, HostBackend, Mode};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorPrimitive};
use std::sync::Arc;

/// Mean cross-entropy of `logits` (`[rows, vocab]`) against `targets` (`[rows]`) through the
/// kernel on the host backends, else the tensors back for the plain path.
#[allow(clippy::type_complexity)]
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Result<Tensor<B, 1>, (Tensor<B, 2>, Tensor<B, 1, Int>)> {
    let Some(served) = host_backend::<B>() else {
        return Err((logits, targets));
    };
    if logits.dtype() != DType::F32 {
        return Err((logits, targets));
    }
    let [rows, vocab] = logits.dims();
    let targets = indices(targets, vocab, |t| {
        format!("target {t} is outside the vocabulary of {vocab}")
    });
    debug_assert_eq!(targets.len(), rows);
    Ok(match served {
        (Host::Flex, Mode::Inference) => cast(inference_flex(cast(logits), &targets)),
        (Host::Flex, Mode::Training) => cast(training_flex(cast(logits), targets)),
        (Host::NdArray, Mode::Inference) => cast(inference_ndarray(cast(logits), &targets)),
        (Host::NdArray, Mode::Training) => cast(training_ndarray(cast(logits), targets)),
    })
}

compiled_here! {
    fn inference_flex(logits: Tensor<Flex, 2>, targets: &[usize]) -> Tensor<Flex, 1> =
        inference::<Flex>;
    fn inference_ndarray(logits: Tensor<NdArray, 2>, targets: &[usize]) -> Tensor<NdArray, 1> =
        inference::<NdArray>;
    fn training_flex(
        logits: Tensor<Autodiff<Flex>, 2>,
        targets: Arc<[usize]>,
    ) -> Tensor<Autodiff<Flex>, 1> = training::<Flex>;
    fn training_ndarray(
        logits: Tensor<Autodiff<NdArray>, 2>,
        targets: Arc<[usize]>,
    ) -> Tensor<Autodiff<NdArray>, 1> = training::<NdArray>;
}

fn inference<H: HostBackend>(logits: Tensor<H, 2>, targets: &[usize]) -> Tensor<H, 1> {
    let vocab = logits.dims()[1];
    let logits = H::contiguous(logits.into_primitive().tensor());
    let (loss, _) = kernel::forward(H::values(&logits), vocab, targets, false);
    Tensor::from_primitive(TensorPrimitive::Float(H::tensor(vec![loss], &[1])))
}

fn training<H: HostBackend>(
    logits: Tensor<Autodiff<H>, 2>,
    targets: Arc<[usize]>,
) -> Tensor<Autodiff<H>, 1> {
    let vocab = logits.dims()[1];
    let logits = logits.into_primitive().tensor();
    let run = |keep_softmax| {
        let values = H::contiguous(logits.primitive.clone());
        let (loss, probs) = kernel::forward(H::values(&values), vocab, &targets, keep_softmax);
        (H::tensor(vec![loss], &[1]), probs)
    };
    let loss = match FusedCrossEntropy
        .prepare::<NoCheckpointing>([logits.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (loss, probs) = run(true);
            let probs = probs.expect("asked for the softmax");
            let state = Saved {
                probs: Arc::from(probs),
                targets: targets.clone(),
                vocab,
            };
            prep.finish(state, loss)
        }
        OpsKind::UnTracked(prep) => prep.finish(run(false).0),
    };
    Tensor::from_primitive(TensorPrimitive::Float(loss))
}

#[derive(Debug)]
struct FusedCrossEntropy;

#[derive(Debug, Clone)]
struct Saved {
    probs: Arc<[f32]>,
    targets: Arc<[usize]>,
    vocab: usize,
}

impl<H: HostBackend> Backward<H, 1> for FusedCrossEntropy {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad_loss = H::contiguous(grads.consume::<H>(&ops.node));
        let Some(parent) = parent else { return };
        let Saved {
            probs,
            targets,
            vocab,
        } = ops.state;
        let grad_loss = *H::values(&grad_loss)
            .first()
            .expect("the loss gradient is one value");
        let grad = kernel::backward(&probs, vocab, &targets, grad_loss);
        grads.register::<H>(parent.id, H::tensor(grad, &[targets.len(), vocab]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

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
        let logits = Tensor::<NdArray<f64>, 2>::zeros([2, 3], &device);
        let targets = Tensor::from_data(TensorData::new(vec![0i64, 1], [2]), &device);
        assert!(cross_entropy(logits, targets).is_err());
    }
}
