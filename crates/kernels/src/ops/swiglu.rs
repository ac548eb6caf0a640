//! The [`crate::swiglu`] gate as a Burn operation: forward only on a host backend, forward plus
//! its backward step under `Autodiff`.

use crate::host::{cast, host_backend, Host, HostBackend, Mode};
use crate::swiglu as kernel;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};

/// `silu(gate) * up` of `gate_up` (`[batch, time, 2 * hidden]`: the gate's columns, then the up
/// projection's) through the kernel on the host backends, else `Err(gate_up)` for the caller's
/// plain path.
pub fn swiglu<B: Backend>(gate_up: Tensor<B, 3>) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let Some(served) = host_backend::<B>() else {
        return Err(gate_up);
    };
    let [batch, time, width] = gate_up.dims();
    if gate_up.dtype() != DType::F32 || !width.is_multiple_of(2) || width == 0 {
        return Err(gate_up);
    }
    let shape = [batch, time, width / 2];
    Ok(match served {
        (Host::Flex, Mode::Inference) => cast(inference_flex(cast(gate_up), shape)),
        (Host::NdArray, Mode::Inference) => cast(inference_ndarray(cast(gate_up), shape)),
        (Host::Flex, Mode::Training) => cast(training_flex(cast(gate_up), shape)),
        (Host::NdArray, Mode::Training) => cast(training_ndarray(cast(gate_up), shape)),
    })
}

compiled_here! {
    fn inference_flex(gate_up: Tensor<Flex, 3>, shape: [usize; 3]) -> Tensor<Flex, 3> =
        inference::<Flex>;
    fn inference_ndarray(gate_up: Tensor<NdArray, 3>, shape: [usize; 3]) -> Tensor<NdArray, 3> =
        inference::<NdArray>;
    fn training_flex(
        gate_up: Tensor<Autodiff<Flex>, 3>,
        shape: [usize; 3],
    ) -> Tensor<Autodiff<Flex>, 3> = training::<Flex>;
    fn training_ndarray(
        gate_up: Tensor<Autodiff<NdArray>, 3>,
        shape: [usize; 3],
    ) -> Tensor<Autodiff<NdArray>, 3> = training::<NdArray>;
}

fn inference<H: HostBackend>(gate_up: Tensor<H, 3>, shape: [usize; 3]) -> Tensor<H, 3> {
    let input = H::contiguous(gate_up.into_primitive().tensor());
    let out = kernel::forward(H::values(&input), shape[2]);
    Tensor::from_primitive(TensorPrimitive::Float(H::tensor(out, &shape)))
}

fn training<H: HostBackend>(
    gate_up: Tensor<Autodiff<H>, 3>,
    shape: [usize; 3],
) -> Tensor<Autodiff<H>, 3> {
    let gate_up = gate_up.into_primitive().tensor();
    let input = H::contiguous(gate_up.primitive.clone());
    let out = H::tensor(kernel::forward(H::values(&input), shape[2]), &shape);
    let out = match Gate
        .prepare::<NoCheckpointing>([gate_up.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Saved::<H> { input, shape }, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug)]
struct Gate;

#[derive(Debug, Clone)]
struct Saved<H: HostBackend> {
    input: H::FloatTensorPrimitive,
    shape: [usize; 3],
}

impl<H: HostBackend> Backward<H, 1> for Gate {
    type State = Saved<H>;

    fn backward(self, ops: Ops<Saved<H>, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad_out = H::contiguous(grads.consume::<H>(&ops.node));
        let Some(parent) = parent else { return };
        let Saved { input, shape } = ops.state;
        let grad = kernel::backward(H::values(&input), H::values(&grad_out), shape[2]);
        grads.register::<H>(
            parent.id,
            H::tensor(grad, &[shape[0], shape[1], 2 * shape[2]]),
        );
    }
}
