//! The [`crate::attention`] kernel as a Burn operation: forward only on a host backend,
//! forward plus its backward step under `Autodiff`.

use crate::attention::{self as kernel, AttentionDims, WeightDropout};
use crate::host::{cast, host_backend, Host, HostBackend, Mode};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex, NdArray};
use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};

/// Causal self-attention of `qkv` (`[batch, time, (heads + 2 * kv_heads) * head_size]`: queries,
/// keys, values) through the fused kernel on the host backends, else `Err(qkv)` for the caller's
/// plain path. Dropout on the
/// weights is on in training (autodiff), as in Burn's module, its mask seeded from the backend's
/// generator so `B::seed` stays in charge.
pub fn attention<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    kv_heads: usize,
    dropout: &Dropout,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let Some(served) = host_backend::<B>() else {
        return Err(qkv);
    };
    let Some(dims) = dims(&qkv, heads, kv_heads) else {
        return Err(qkv);
    };
    let dropout = |device: &B::Device| {
        (dropout.prob > 0.0).then(|| WeightDropout {
            seed: crate::dropout::seed_from_backend::<B>(device),
            keep: 1.0 - dropout.prob,
        })
    };
    Ok(match served {
        (Host::Flex, Mode::Inference) => cast(inference_flex(cast(qkv), dims)),
        (Host::NdArray, Mode::Inference) => cast(inference_ndarray(cast(qkv), dims)),
        (Host::Flex, Mode::Training) => {
            let dropout = dropout(&qkv.device());
            cast(training_flex(cast(qkv), dims, dropout))
        }
        (Host::NdArray, Mode::Training) => {
            let dropout = dropout(&qkv.device());
            cast(training_ndarray(cast(qkv), dims, dropout))
        }
    })
}

compiled_here! {
    fn inference_flex(qkv: Tensor<Flex, 3>, dims: AttentionDims) -> Tensor<Flex, 3> =
        inference::<Flex>;
    fn inference_ndarray(qkv: Tensor<NdArray, 3>, dims: AttentionDims) -> Tensor<NdArray, 3> =
        inference::<NdArray>;
    fn training_flex(
        qkv: Tensor<Autodiff<Flex>, 3>,
        dims: AttentionDims,
        dropout: Option<WeightDropout>,
    ) -> Tensor<Autodiff<Flex>, 3> = training::<Flex>;
    fn training_ndarray(
        qkv: Tensor<Autodiff<NdArray>, 3>,
        dims: AttentionDims,
        dropout: Option<WeightDropout>,
    ) -> Tensor<Autodiff<NdArray>, 3> = training::<NdArray>;
}

/// [`attention`] in training on a host backend `H` with a given dropout mask (`None`: none), so
/// a test can hold it to a plain path with the same mask.
pub fn attention_with_dropout<H: HostBackend>(
    qkv: Tensor<Autodiff<H>, 3>,
    heads: usize,
    kv_heads: usize,
    dropout: Option<WeightDropout>,
) -> Tensor<Autodiff<H>, 3> {
    let dims = dims(&qkv, heads, kv_heads)
        .expect("an f32 qkv whose width is (heads + 2 * kv_heads) * head_size");
    training::<H>(qkv, dims, dropout)
}

/// The kernel's view of `qkv`, when it can run it.
fn dims<B: Backend>(qkv: &Tensor<B, 3>, heads: usize, kv_heads: usize) -> Option<AttentionDims> {
    let [batch, time, width] = qkv.dims();
    let columns_per_size = heads + 2 * kv_heads;
    let fits = kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && width.is_multiple_of(columns_per_size)
        && time > 0;
    (qkv.dtype() == DType::F32 && fits).then_some(AttentionDims {
        batch,
        time,
        heads,
        kv_heads,
        head_size: width / columns_per_size,
    })
}

/// `(output, weights if kept)` of the kernel's forward pass.
fn forward<H: HostBackend>(
    qkv: &H::FloatTensorPrimitive,
    dims: AttentionDims,
    dropout: Option<WeightDropout>,
    keep_weights: bool,
) -> (H::FloatTensorPrimitive, Option<H::FloatTensorPrimitive>) {
    let result = kernel::forward(H::values(qkv), dims, dropout, keep_weights);
    let out = H::tensor(result.out, &[dims.batch, dims.time, dims.width()]);
    let weights = result
        .weights
        .map(|w| H::tensor(w, &[dims.batch, dims.heads, dims.time, dims.time]));
    (out, weights)
}

fn inference<H: HostBackend>(qkv: Tensor<H, 3>, dims: AttentionDims) -> Tensor<H, 3> {
    let qkv = H::contiguous(qkv.into_primitive().tensor());
    let out = forward::<H>(&qkv, dims, None, false).0;
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

fn training<H: HostBackend>(
    qkv: Tensor<Autodiff<H>, 3>,
    dims: AttentionDims,
    dropout: Option<WeightDropout>,
) -> Tensor<Autodiff<H>, 3> {
    let qkv = qkv.into_primitive().tensor();
    let out = match FusedAttention
        .prepare::<NoCheckpointing>([qkv.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let input = H::contiguous(qkv.primitive.clone());
            let (out, weights) = forward::<H>(&input, dims, dropout, true);
            let state = SavedForBackward::<H> {
                qkv: input,
                weights: weights.expect("asked for the weights"),
                dims,
                dropout,
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => {
            let input = H::contiguous(qkv.primitive.clone());
            prep.finish(forward::<H>(&input, dims, dropout, false).0)
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug)]
struct FusedAttention;

#[derive(Debug, Clone)]
struct SavedForBackward<H: HostBackend> {
    qkv: H::FloatTensorPrimitive,
    weights: H::FloatTensorPrimitive,
    dims: AttentionDims,
    dropout: Option<WeightDropout>,
}

impl<H: HostBackend> Backward<H, 1> for FusedAttention {
    type State = SavedForBackward<H>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [parent] = ops.parents;
        let grad_out = H::contiguous(grads.consume::<H>(&ops.node));
        let Some(parent) = parent else { return };
        let saved = ops.state;
        let grad = kernel::backward(
            H::values(&saved.qkv),
            H::values(&saved.weights),
            H::values(&grad_out),
            saved.dims,
            saved.dropout,
        );
        let d = saved.dims;
        grads.register::<H>(
            parent.id,
            H::tensor(grad, &[d.batch, d.time, d.qkv_width()]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::DropoutConfig;

    #[test]
    fn other_backends_get_the_tensor_back() {
        let no_dropout = DropoutConfig::new(0.0).init();
        let qkv = Tensor::<NdArray<f64>, 3>::zeros([1, 4, 6], &Default::default());
        assert!(attention(qkv, 1, 1, &no_dropout).is_err());
    }

    #[test]
    fn dropout_acts_in_training_only() {
        // With every value 1 an undropped output is exactly the weights' sum, 1; dropout of half
        // of 16 * 17 / 2 causal weights leaves that sum intact with probability 2^-136.
        fn check<H: HostBackend>() {
            let dropout = DropoutConfig::new(0.5).init();
            let ones = Tensor::<Autodiff<H>, 3>::ones([1, 16, 6], &Default::default());
            let off_one =
                |values: Vec<f32>| values.iter().filter(|v| (*v - 1.0).abs() > 1e-4).count();
            let trained = attention(ones.clone(), 1, 1, &dropout)
                .unwrap_or_else(|_| panic!("the kernel runs"));
            assert!(
                off_one(trained.into_data().to_vec().unwrap()) > 0,
                "training drops weights"
            );
            let inferred = attention(ones.inner(), 1, 1, &dropout)
                .unwrap_or_else(|_| panic!("the kernel runs"));
            assert_eq!(
                off_one(inferred.into_data().to_vec().unwrap()),
                0,
                "inference keeps all"
            );
        }
        check::<Flex>();
        check::<NdArray>();
    }
}
