//! The [`crate::linear`] kernel as a Burn operation on the host backends, with an optional ReLU
//! in its output buffer. ndarray's own matrix product was the slow part of its training step;
//! flex multiplies through `gemm` too, but the kernel's one call per product, single-threaded
//! below a size, and the ReLU inside it took 3% off a transformer.ron step on flex and 6% off
//! nanogpt_cpu (AMD EPYC Zen 5).

use crate::host::{cast, host_backend, Host, HostBackend, Mode};
use crate::linear::{self as kernel, LinearDims};
use crate::ops::record::{record, Gradient};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::NodeId;
use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};

/// The inputs of a Linear layer: `x [rows, d_in]`, `weight [d_in, d_out]`, `bias [d_out]`.
pub type LinearInputs<B> = (Tensor<B, 2>, Tensor<B, 2>, Option<Tensor<B, 1>>);

/// `x · weight + bias` through the kernel on the host backends, else the inputs back for Burn's
/// `Linear`.
pub fn linear<B: Backend>(inputs: LinearInputs<B>) -> Result<Tensor<B, 2>, LinearInputs<B>> {
    on_host(inputs, false, false)
}

/// `max(0, x · weight + bias)`: a FeedForward's hidden layer through the kernel on the host
/// backends, else the inputs back. burn-ndarray's own ReLU backward (`mask_fill` over a
/// dynamic-rank `Zip`) was 16% of a nanogpt_cpu training step; here the ReLU is applied in the
/// product's output buffer and its gradient in the backward step's, with no tensor or graph node
/// of its own.
pub fn linear_relu<B: Backend>(inputs: LinearInputs<B>) -> Result<Tensor<B, 2>, LinearInputs<B>> {
    on_host(inputs, false, true)
}

/// `x · embeddingᵀ` (a tied lm_head: `embedding` is `[vocab, d_in]`) through the kernel on the
/// host backends, which reads the transpose through strides (ndarray's own matmul copied it into
/// standard layout for every product); else the inputs back.
pub fn linear_transposed<B: Backend>(
    x: Tensor<B, 2>,
    embedding: Tensor<B, 2>,
) -> Result<Tensor<B, 2>, (Tensor<B, 2>, Tensor<B, 2>)> {
    on_host((x, embedding, None), true, false).map_err(|(x, embedding, _)| (x, embedding))
}

fn on_host<B: Backend>(
    inputs: LinearInputs<B>,
    weight_transposed: bool,
    relu: bool,
) -> Result<Tensor<B, 2>, LinearInputs<B>> {
    let (x, weight, bias) = &inputs;
    let f32s = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    match host_backend::<B>() {
        Some((host, mode)) if f32s => {
            let [rows, d_in] = x.dims();
            let [a, b] = weight.dims();
            let d = LinearDims {
                rows,
                d_in,
                d_out: if weight_transposed { a } else { b },
                weight_transposed,
            };
            Ok(match (host, mode) {
                (Host::NdArray, Mode::Inference) => cast(inference_ndarray(cast(inputs), d, relu)),
                (Host::NdArray, Mode::Training) => cast(training_ndarray(cast(inputs), d, relu)),
                (Host::Flex, Mode::Inference) => cast(inference_flex(cast(inputs), d, relu)),
                (Host::Flex, Mode::Training) => cast(training_flex(cast(inputs), d, relu)),
            })
        }
        _ => Err(inputs),
    }
}

compiled_here! {
    fn inference_flex(inputs: LinearInputs<Flex>, d: LinearDims, relu: bool) -> Tensor<Flex, 2> =
        inference::<Flex>;
    fn inference_ndarray(inputs: LinearInputs<NdArray>, d: LinearDims, relu: bool) -> Tensor<NdArray, 2> =
        inference::<NdArray>;
    fn training_flex(
        inputs: LinearInputs<Autodiff<Flex>>,
        d: LinearDims,
        relu: bool,
    ) -> Tensor<Autodiff<Flex>, 2> = training::<Flex>;
    fn training_ndarray(
        inputs: LinearInputs<Autodiff<NdArray>>,
        d: LinearDims,
        relu: bool,
    ) -> Tensor<Autodiff<NdArray>, 2> = training::<NdArray>;
}

fn values<H: HostBackend>(tensor: Tensor<H, 2>) -> H::FloatTensorPrimitive {
    H::contiguous(tensor.into_primitive().tensor())
}

fn inference<H: HostBackend>(
    (x, weight, bias): LinearInputs<H>,
    d: LinearDims,
    relu: bool,
) -> Tensor<H, 2> {
    let (x, weight) = (values(x), values(weight));
    let bias = bias.map(|b| H::contiguous(b.into_primitive().tensor()));
    let mut out = kernel::forward(
        H::values(&x),
        H::values(&weight),
        bias.as_ref().map(H::values),
        d,
    );
    if relu {
        kernel::relu_in_place(&mut out);
    }
    Tensor::from_primitive(TensorPrimitive::Float(H::tensor(out, &[d.rows, d.d_out])))
}

fn training<H: HostBackend>(
    (x, weight, bias): LinearInputs<Autodiff<H>>,
    d: LinearDims,
    relu: bool,
) -> Tensor<Autodiff<H>, 2> {
    let (x, weight) = (
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    );
    let (xv, wv) = (
        H::contiguous(x.primitive.clone()),
        H::contiguous(weight.primitive.clone()),
    );
    let bias = bias.map(|b| b.into_primitive().tensor());
    let bv = bias.as_ref().map(|b| H::contiguous(b.primitive.clone()));
    let mut out = kernel::forward(
        H::values(&xv),
        H::values(&wv),
        bv.as_ref().map(H::values),
        d,
    );
    if relu {
        kernel::relu_in_place(&mut out);
    }
    let out = H::tensor(out, &[d.rows, d.d_out]);
    let saved = Saved::<H> {
        x: xv,
        weight: wv,
        relu_out: relu.then(|| out.clone()),
        dims: d,
    };
    let out = record::<H, _>([&x, &weight], bias.as_ref(), saved, out);
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug, Clone)]
struct Saved<H: HostBackend> {
    x: H::FloatTensorPrimitive,
    weight: H::FloatTensorPrimitive,
    /// The output, when a ReLU was applied to it: its gradient is masked by it first.
    relu_out: Option<H::FloatTensorPrimitive>,
    dims: LinearDims,
}

impl<H: HostBackend> Gradient<H> for Saved<H> {
    /// The gradients of the input, the weight, and the bias if any.
    fn register(
        self,
        grad_out: H::FloatTensorPrimitive,
        [x, weight, bias]: [Option<NodeId>; 3],
        grads: &mut Gradients,
    ) {
        let d = self.dims;
        let grad_out = H::contiguous(grad_out);
        let masked;
        let dy = match &self.relu_out {
            Some(out) => {
                let mut grad = H::values(&grad_out).to_vec();
                kernel::relu_backward_in_place(&mut grad, H::values(out));
                masked = grad;
                &masked[..]
            }
            None => H::values(&grad_out),
        };
        if let Some(id) = x {
            let grad = kernel::grad_input(dy, H::values(&self.weight), d);
            grads.register::<H>(id, H::tensor(grad, &[d.rows, d.d_in]));
        }
        if let Some(id) = weight {
            let grad = kernel::grad_weight(H::values(&self.x), dy, d);
            let shape = if d.weight_transposed {
                [d.d_out, d.d_in]
            } else {
                [d.d_in, d.d_out]
            };
            grads.register::<H>(id, H::tensor(grad, &shape));
        }
        if let Some(id) = bias {
            grads.register::<H>(id, H::tensor(kernel::grad_bias(dy, d), &[d.d_out]));
        }
    }
}
