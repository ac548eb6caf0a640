//! The [`crate::rope`] kernel as a Burn operation: forward only on a host backend, forward plus
//! its backward step (the inverse rotation) under `Autodiff`.

use crate::attention::AttentionDims;
use crate::host::{cast, host_backend, Host, HostBackend, Mode};
use crate::rope::{self as kernel, RopeTable};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use std::sync::Arc;

/// `qkv` (`[batch, time, (heads + 2 * kv_heads) * head_size]`) with its query and key heads
/// rotated for positions `start..start + time`, through the kernel on the host backends, else
/// `Err(qkv)` for the caller's plain path.
pub fn rope<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    kv_heads: usize,
    table: &Arc<RopeTable>,
    start: usize,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let Some(served) = host_backend::<B>() else {
        return Err(qkv);
    };
    let [batch, time, width] = qkv.dims();
    let columns = heads + 2 * kv_heads;
    let fits = qkv.dtype() == DType::F32
        && columns > 0
        && width.is_multiple_of(columns)
        && width / columns == 2 * table.half
        && start + time <= table.positions();
    if !fits {
        return Err(qkv);
    }
    let at = Rotation {
        dims: AttentionDims {
            batch,
            time,
            heads,
            kv_heads,
            head_size: width / columns,
        },
        table: Arc::clone(table),
        start,
    };
    Ok(match served {
        (Host::Flex, Mode::Inference) => cast(inference_flex(cast(qkv), at)),
        (Host::NdArray, Mode::Inference) => cast(inference_ndarray(cast(qkv), at)),
        (Host::Flex, Mode::Training) => cast(training_flex(cast(qkv), at)),
        (Host::NdArray, Mode::Training) => cast(training_ndarray(cast(qkv), at)),
    })
}

/// What one call rotates, and by which angles.
#[derive(Debug, Clone)]
struct Rotation {
    dims: AttentionDims,
    table: Arc<RopeTable>,
    start: usize,
}

compiled_here! {
    fn inference_flex(qkv: Tensor<Flex, 3>, at: Rotation) -> Tensor<Flex, 3> = inference::<Flex>;
    fn inference_ndarray(qkv: Tensor<NdArray, 3>, at: Rotation) -> Tensor<NdArray, 3> =
        inference::<NdArray>;
    fn training_flex(qkv: Tensor<Autodiff<Flex>, 3>, at: Rotation) -> Tensor<Autodiff<Flex>, 3> =
        training::<Flex>;
    fn training_ndarray(
        qkv: Tensor<Autodiff<NdArray>, 3>,
        at: Rotation,
    ) -> Tensor<Autodiff<NdArray>, 3> = training::<NdArray>;
}

fn rotated<H: HostBackend>(
    qkv: &H::FloatTensorPrimitive,
    at: &Rotation,
) -> H::FloatTensorPrimitive {
    let d = at.dims;
    let out = kernel::forward(H::values(qkv), d, &at.table, at.start);
    H::tensor(out, &[d.batch, d.time, d.qkv_width()])
}

fn inference<H: HostBackend>(qkv: Tensor<H, 3>, at: Rotation) -> Tensor<H, 3> {
    let qkv = H::contiguous(qkv.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(rotated::<H>(&qkv, &at)))
}

fn training<H: HostBackend>(qkv: Tensor<Autodiff<H>, 3>, at: Rotation) -> Tensor<Autodiff<H>, 3> {
    let qkv = qkv.into_primitive().tensor();
    let input = H::contiguous(qkv.primitive.clone());
    let out = rotated::<H>(&input, &at);
    let out = match Rope
        .prepare::<NoCheckpointing>([qkv.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(at, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug)]
struct Rope;

impl<H: HostBackend> Backward<H, 1> for Rope {
    type State = Rotation;

    fn backward(self, ops: Ops<Rotation, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad_out = H::contiguous(grads.consume::<H>(&ops.node));
        let Some(parent) = parent else { return };
        let at = ops.state;
        let d = at.dims;
        let grad = kernel::backward(H::values(&grad_out), d, &at.table, at.start);
        grads.register::<H>(
            parent.id,
            H::tensor(grad, &[d.batch, d.time, d.qkv_width()]),
        );
    }
}
