//! The [`crate::cpu_attention`] kernel as a Burn operation on the `flex` backend: forward-only on
//! `Flex`, forward plus a hand-written backward step on `Autodiff<Flex>`.
//!
//! The model code stays generic over the backend: [`attention`] checks at run time whether the
//! backend is one of these two (see [`crate::flex`]) and hands the tensor back untouched
//! otherwise, so every other backend runs the plain tensor-op formulation. Tests hold the two
//! paths to the same values and gradients.

use crate::cpu_attention::{self, AttentionDims, WeightDropout};
use crate::flex::{cast, f32_values, flex_kernel_backend, flex_tensor, FlexAutodiff, FlexKind};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};

/// Causal self-attention of `qkv` (`[batch, time, 3 * heads * head_size]`) through the fused
/// kernel when the backend is flex, else `Err(qkv)` for the caller's plain path.
pub fn attention<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    dropout: &Dropout,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let Some(kind) = flex_kernel_backend::<B>() else {
        return Err(qkv);
    };
    let [batch, time, width3] = qkv.dims();
    if qkv.dtype() != DType::F32 || width3 % (3 * heads) != 0 || time == 0 {
        return Err(qkv);
    }
    let dims = AttentionDims {
        batch,
        time,
        heads,
        head_size: width3 / (3 * heads),
    };
    if kind == FlexKind::Inference {
        let qkv = cast::<_, Tensor<Flex, 3>>(qkv);
        let qkv: FlexTensor = qkv.into_primitive().tensor();
        let out = forward(&qkv.to_contiguous(), dims, None, false).0;
        return Ok(cast(Tensor::<Flex, 3>::from_primitive(
            TensorPrimitive::Float(out),
        )));
    }
    let qkv = cast::<_, Tensor<FlexAutodiff, 3>>(qkv);
    // Dropout is on in training (autodiff), as in Burn's module; one seed from the backend's
    // generator keeps `B::seed` in charge.
    let dropout = (dropout.prob > 0.0).then(|| WeightDropout {
        seed: crate::dropout::seed_from_backend::<FlexAutodiff>(&qkv.device()),
        keep: 1.0 - dropout.prob,
    });
    Ok(cast(train_forward(qkv, dims, dropout)))
}

/// [`attention`] in training with a given dropout mask, so tests need not share the backend's
/// process-wide generator with tests running beside them.
#[cfg(test)]
fn train_attention(
    qkv: Tensor<FlexAutodiff, 3>,
    heads: usize,
    dropout: Option<WeightDropout>,
) -> Tensor<FlexAutodiff, 3> {
    let [batch, time, width3] = qkv.dims();
    let dims = AttentionDims {
        batch,
        time,
        heads,
        head_size: width3 / (3 * heads),
    };
    train_forward(qkv, dims, dropout)
}

/// The kernel's forward pass on a contiguous flex tensor; `(output, weights if kept)`.
fn forward(
    qkv: &FlexTensor,
    dims: AttentionDims,
    dropout: Option<WeightDropout>,
    keep_weights: bool,
) -> (FlexTensor, Option<FlexTensor>) {
    let result = cpu_attention::forward(f32_values(qkv), dims, dropout, keep_weights);
    let out = flex_tensor(result.out, [dims.batch, dims.time, dims.width()]);
    let weights = result
        .weights
        .map(|w| flex_tensor(w, [dims.batch, dims.heads, dims.time, dims.time]));
    (out, weights)
}

fn train_forward(
    qkv: Tensor<FlexAutodiff, 3>,
    dims: AttentionDims,
    dropout: Option<WeightDropout>,
) -> Tensor<FlexAutodiff, 3> {
    let qkv = qkv.into_primitive().tensor();
    let out = match FusedAttention
        .prepare::<burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>([qkv
            .node
            .clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let input = qkv.primitive.to_contiguous();
            let (out, weights) = forward(&input, dims, dropout, true);
            let state = SavedForBackward {
                qkv: input,
                weights: weights.expect("asked for the weights"),
                dims,
                dropout,
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(&qkv.primitive.to_contiguous(), dims, dropout, false).0)
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug)]
struct FusedAttention;

#[derive(Debug, Clone)]
struct SavedForBackward {
    qkv: FlexTensor,
    weights: FlexTensor,
    dims: AttentionDims,
    dropout: Option<WeightDropout>,
}

impl Backward<Flex, 1> for FusedAttention {
    type State = SavedForBackward;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [parent] = ops.parents;
        let grad_out = grads.consume::<Flex>(&ops.node);
        let Some(parent) = parent else { return };
        let saved = ops.state;
        let grad_out = grad_out.to_contiguous();
        let grad = cpu_attention::backward(
            f32_values(&saved.qkv),
            f32_values(&saved.weights),
            f32_values(&grad_out),
            saved.dims,
            saved.dropout,
        );
        let d = saved.dims;
        grads.register::<Flex>(
            parent.id,
            flex_tensor(grad, [d.batch, d.time, 3 * d.width()]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::{merge_heads, plain_causal_attention, split_heads};
    use burn::nn::DropoutConfig;
    use burn::tensor::activation::softmax;
    use burn::tensor::{Bool, Distribution, TensorData};

    /// Plain tensor-op attention with an explicit `[batch, heads, time, time]` dropout mask.
    fn with_mask(
        qkv: Tensor<FlexAutodiff, 3>,
        heads: usize,
        mask: Vec<f32>,
    ) -> Tensor<FlexAutodiff, 3> {
        let [q, k, v]: [Tensor<FlexAutodiff, 3>; 3] =
            qkv.chunk(3, 2).try_into().expect("three parts");
        let (q, k, v) = (
            split_heads(q, heads),
            split_heads(k, heads),
            split_heads(v, heads),
        );
        let [batch, _, time, head_size] = q.dims();
        let device = q.device();
        let future = Tensor::<FlexAutodiff, 2, Bool>::tril_mask([time, time], 0, &device);
        let bias = Tensor::<FlexAutodiff, 2>::zeros([time, time], &device)
            .mask_fill(future, f32::NEG_INFINITY)
            .unsqueeze::<4>();
        let scores = q.matmul(k.swap_dims(2, 3)) * (head_size as f64).powf(-0.5) + bias;
        let mask = Tensor::<FlexAutodiff, 4>::from_data(
            TensorData::new(mask, [batch, heads, time, time]),
            &device,
        );
        merge_heads((softmax(scores, 3) * mask).matmul(v))
    }

    /// (output, d loss / d qkv) for loss = sum(output * weights).
    fn run(
        qkv: &Tensor<FlexAutodiff, 3>,
        weights: &Tensor<FlexAutodiff, 3>,
        attend: impl Fn(Tensor<FlexAutodiff, 3>) -> Tensor<FlexAutodiff, 3>,
    ) -> (TensorData, TensorData) {
        let qkv = qkv.clone().detach().require_grad();
        let out = attend(qkv.clone());
        let grads = (out.clone() * weights.clone()).sum().backward();
        let grad = qkv.grad(&grads).expect("qkv requires grad");
        (out.into_data(), grad.into_data())
    }

    fn assert_close(fused: &TensorData, plain: &TensorData, what: &str) {
        let (a, b) = (
            fused.to_vec::<f32>().unwrap(),
            plain.to_vec::<f32>().unwrap(),
        );
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "{what}: fused and plain differ by {worst}");
    }

    #[test]
    fn fused_and_plain_agree_on_values_and_gradients() {
        crate::cpu_math::at_every_simd_level(|_| {
            fused_and_plain_agree_on_values_and_gradients_here()
        });
    }

    fn fused_and_plain_agree_on_values_and_gradients_here() {
        let device = Default::default();
        let no_dropout = DropoutConfig::new(0.0).init();
        // Shapes of head.ron (1 head), transformer.ron and nanogpt_cpu.ron-like sizes, and T = 1.
        for (batch, time, heads, head_size) in
            [(3, 8, 1, 16), (4, 8, 4, 8), (2, 64, 4, 32), (2, 1, 2, 4)]
        {
            let width3 = 3 * heads * head_size;
            let random = |dims| {
                Tensor::<FlexAutodiff, 3>::random(dims, Distribution::Normal(0.0, 1.0), &device)
            };
            let (qkv, weights) = (
                random([batch, time, width3]),
                random([batch, time, width3 / 3]),
            );
            let fused = run(&qkv, &weights, |x| {
                attention(x, heads, &no_dropout).unwrap_or_else(|_| panic!("flex runs the kernel"))
            });
            let plain = run(&qkv, &weights, |x| {
                plain_causal_attention(x, heads, &no_dropout, None)
            });
            assert_close(&fused.0, &plain.0, "output");
            assert_close(&fused.1, &plain.1, "gradient");

            // Inference (no autodiff) takes the kernel too.
            let inner = qkv.clone().inner();
            let fused = attention(inner.clone(), heads, &no_dropout)
                .unwrap_or_else(|_| panic!("flex runs the kernel"));
            let plain = plain_causal_attention(inner, heads, &no_dropout, None);
            assert_close(&fused.into_data(), &plain.into_data(), "inference output");
        }
    }

    #[test]
    fn fused_dropout_is_the_plain_path_with_the_kernels_mask() {
        let device = Default::default();
        let (batch, time, heads, head_size) = (3, 16, 2, 8);
        let random =
            |dims| Tensor::<FlexAutodiff, 3>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let (qkv, weights) = (
            random([batch, time, 3 * heads * head_size]),
            random([batch, time, heads * head_size]),
        );
        let dropout = WeightDropout {
            seed: 0x5eed_d20f,
            keep: 0.8,
        };
        let fused = run(&qkv, &weights, |x| train_attention(x, heads, Some(dropout)));
        let mask = dropout.mask(AttentionDims {
            batch,
            time,
            heads,
            head_size,
        });
        let zeroed = mask
            .iter()
            .enumerate()
            .filter(|(i, &m)| i % time <= (i / time) % time && m == 0.0)
            .count();
        assert!(zeroed > 0, "a 0.2 dropout zeroes some weights");
        let plain = run(&qkv, &weights, |x| with_mask(x, heads, mask.clone()));
        assert_close(&fused.0, &plain.0, "output");
        assert_close(&fused.1, &plain.1, "gradient");
    }

    #[test]
    fn dropout_acts_in_training_only() {
        // With every value 1 an undropped output is exactly the weights' sum, 1; dropout of half
        // of 16 * 17 / 2 causal weights leaves that sum intact with probability 2^-136.
        let dropout = DropoutConfig::new(0.5).init();
        let ones = Tensor::<FlexAutodiff, 3>::ones([1, 16, 6], &Default::default());
        let off_one = |out: Tensor<FlexAutodiff, 3>| {
            let values = out.into_data().to_vec::<f32>().unwrap();
            values.iter().filter(|v| (*v - 1.0).abs() > 1e-4).count()
        };
        let trained =
            attention(ones.clone(), 1, &dropout).unwrap_or_else(|_| panic!("flex runs the kernel"));
        assert!(off_one(trained) > 0, "training drops weights");
        let inferred =
            attention(ones.inner(), 1, &dropout).unwrap_or_else(|_| panic!("flex runs the kernel"));
        assert_eq!(
            off_one(Tensor::from_inner(inferred)),
            0,
            "inference keeps all"
        );
    }

    #[test]
    fn other_backends_get_the_tensor_back() {
        let no_dropout = DropoutConfig::new(0.0).init();
        let qkv = Tensor::<burn::backend::NdArray, 3>::zeros([1, 4, 6], &Default::default());
        assert!(attention(qkv, 1, &no_dropout).is_err());
    }
}
