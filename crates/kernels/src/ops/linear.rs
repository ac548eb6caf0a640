//! The [`crate::linear`] kernel as a Burn operation on ndarray, whose own matrix product is the
//! slow part of its training step; flex multiplies through `gemm` already and keeps its own path.

use crate::host::{cast, host_backend, Host, HostBackend, Mode};
use crate::linear::{self as kernel, LinearDims};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};

/// The inputs of a Linear layer: `x [rows, d_in]`, `weight [d_in, d_out]`, `bias [d_out]`.
pub type LinearInputs<B> = (Tensor<B, 2>, Tensor<B, 2>, Option<Tensor<B, 1>>);

/// `x · weight + bias` through the kernel on ndarray, else the inputs back for Burn's `Linear`.
pub fn linear<B: Backend>(inputs: LinearInputs<B>) -> Result<Tensor<B, 2>, LinearInputs<B>> {
    let (x, weight, bias) = &inputs;
    let f32s = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    match host_backend::<B>() {
        Some((Host::NdArray, mode)) if f32s => {
            let [rows, d_in] = x.dims();
            let d = LinearDims {
                rows,
                d_in,
                d_out: weight.dims()[1],
            };
            Ok(match mode {
                Mode::Inference => cast(inference::<NdArray>(cast(inputs), d)),
                Mode::Training => cast(training::<NdArray>(cast(inputs), d)),
            })
        }
        _ => Err(inputs),
    }
}

fn values<H: HostBackend>(tensor: Tensor<H, 2>) -> H::FloatTensorPrimitive {
    H::contiguous(tensor.into_primitive().tensor())
}

fn inference<H: HostBackend>((x, weight, bias): LinearInputs<H>, d: LinearDims) -> Tensor<H, 2> {
    let (x, weight) = (values(x), values(weight));
    let bias = bias.map(|b| H::contiguous(b.into_primitive().tensor()));
    let out = kernel::forward(
        H::values(&x),
        H::values(&weight),
        bias.as_ref().map(H::values),
        d,
    );
    Tensor::from_primitive(TensorPrimitive::Float(H::tensor(out, &[d.rows, d.d_out])))
}

fn training<H: HostBackend>(
    (x, weight, bias): LinearInputs<Autodiff<H>>,
    d: LinearDims,
) -> Tensor<Autodiff<H>, 2> {
    let (x, weight) = (
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    );
    let (xv, wv) = (
        H::contiguous(x.primitive.clone()),
        H::contiguous(weight.primitive.clone()),
    );
    let saved = Saved::<H> {
        x: xv.clone(),
        weight: wv.clone(),
        dims: d,
    };
    let out = match bias {
        Some(bias) => {
            let bias = bias.into_primitive().tensor();
            let bv = H::contiguous(bias.primitive.clone());
            let out = kernel::forward(H::values(&xv), H::values(&wv), Some(H::values(&bv)), d);
            let out = H::tensor(out, &[d.rows, d.d_out]);
            match LinearWithBias
                .prepare::<NoCheckpointing>([
                    x.node.clone(),
                    weight.node.clone(),
                    bias.node.clone(),
                ])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(saved, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            }
        }
        None => {
            let out = kernel::forward(H::values(&xv), H::values(&wv), None, d);
            let out = H::tensor(out, &[d.rows, d.d_out]);
            match LinearNoBias
                .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(saved, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            }
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug, Clone)]
struct Saved<H: HostBackend> {
    x: H::FloatTensorPrimitive,
    weight: H::FloatTensorPrimitive,
    dims: LinearDims,
}

/// Registers the gradients of the parents that need one: input, weight, and bias if any.
fn register<H: HostBackend>(
    saved: Saved<H>,
    grad_out: H::FloatTensorPrimitive,
    [x, weight, bias]: [Option<burn::backend::autodiff::NodeId>; 3],
    grads: &mut Gradients,
) {
    let d = saved.dims;
    let grad_out = H::contiguous(grad_out);
    let dy = H::values(&grad_out);
    if let Some(id) = x {
        let grad = kernel::grad_input(dy, H::values(&saved.weight), d);
        grads.register::<H>(id, H::tensor(grad, &[d.rows, d.d_in]));
    }
    if let Some(id) = weight {
        let grad = kernel::grad_weight(H::values(&saved.x), dy, d);
        grads.register::<H>(id, H::tensor(grad, &[d.d_in, d.d_out]));
    }
    if let Some(id) = bias {
        grads.register::<H>(id, H::tensor(kernel::grad_bias(dy, d), &[d.d_out]));
    }
}

#[derive(Debug)]
struct LinearWithBias;

impl<H: HostBackend> Backward<H, 3> for LinearWithBias {
    type State = Saved<H>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_out = grads.consume::<H>(&ops.node);
        let ids = ops.parents.map(|parent| parent.map(|p| p.id));
        register::<H>(ops.state, grad_out, ids, grads);
    }
}

#[derive(Debug)]
struct LinearNoBias;

impl<H: HostBackend> Backward<H, 2> for LinearNoBias {
    type State = Saved<H>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_out = grads.consume::<H>(&ops.node);
        let [x, weight] = ops.parents.map(|parent| parent.map(|p| p.id));
        register::<H>(ops.state, grad_out, [x, weight, None], grads);
    }
}
