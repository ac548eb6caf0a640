//! The [`crate::layer_norm`] kernel as Burn operations on the host backends: LayerNorm in
//! training (inference runs Burn's own `layer_norm` op), RMSNorm in training and inference.

use crate::host::{cast, host_backend, Host, HostBackend, Mode};
use crate::layer_norm::{self as kernel, Norm};
use crate::ops::record::{record, Gradient};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::NodeId;
use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use std::sync::Arc;

/// The inputs of a layer norm: `x [.., dim]`, `gamma [dim]`, `beta [dim]`.
pub type LayerNormInputs<B> = (Tensor<B, 3>, Tensor<B, 1>, Option<Tensor<B, 1>>);

/// Layer normalisation over the last dimension through the kernel in training on the host
/// backends, else the inputs back for the tensor-op path.
pub fn layer_norm<B: Backend>(
    inputs: LayerNormInputs<B>,
    epsilon: f64,
) -> Result<Tensor<B, 3>, LayerNormInputs<B>> {
    match host_backend::<B>() {
        Some((_, Mode::Training)) => normalize(inputs, epsilon, Norm::Layer),
        _ => Err(inputs),
    }
}

/// RMSNorm over the last dimension (`beta` is `None` for Llama's) through the kernel on the host
/// backends, in training and inference, else the inputs back for the tensor-op path.
pub fn rms_norm<B: Backend>(
    inputs: LayerNormInputs<B>,
    epsilon: f64,
) -> Result<Tensor<B, 3>, LayerNormInputs<B>> {
    normalize(inputs, epsilon, Norm::Rms)
}

fn normalize<B: Backend>(
    inputs: LayerNormInputs<B>,
    epsilon: f64,
    norm: Norm,
) -> Result<Tensor<B, 3>, LayerNormInputs<B>> {
    let (x, gamma, beta) = &inputs;
    let f32s = x.dtype() == DType::F32
        && gamma.dtype() == DType::F32
        && beta.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    if !f32s {
        return Err(inputs);
    }
    match host_backend::<B>() {
        Some((Host::Flex, Mode::Training)) => Ok(cast(training_flex(cast(inputs), epsilon, norm))),
        Some((Host::NdArray, Mode::Training)) => {
            Ok(cast(training_ndarray(cast(inputs), epsilon, norm)))
        }
        Some((Host::Flex, Mode::Inference)) => {
            Ok(cast(inference_flex(cast(inputs), epsilon, norm)))
        }
        Some((Host::NdArray, Mode::Inference)) => {
            Ok(cast(inference_ndarray(cast(inputs), epsilon, norm)))
        }
        None => Err(inputs),
    }
}

compiled_here! {
    fn training_flex(
        inputs: LayerNormInputs<Autodiff<Flex>>,
        epsilon: f64,
        norm: Norm,
    ) -> Tensor<Autodiff<Flex>, 3> = training::<Flex>;
    fn training_ndarray(
        inputs: LayerNormInputs<Autodiff<NdArray>>,
        epsilon: f64,
        norm: Norm,
    ) -> Tensor<Autodiff<NdArray>, 3> = training::<NdArray>;
    fn inference_flex(inputs: LayerNormInputs<Flex>, epsilon: f64, norm: Norm) -> Tensor<Flex, 3> =
        inference::<Flex>;
    fn inference_ndarray(
        inputs: LayerNormInputs<NdArray>,
        epsilon: f64,
        norm: Norm,
    ) -> Tensor<NdArray, 3> = inference::<NdArray>;
}

fn inference<H: HostBackend>(
    (x, gamma, beta): LayerNormInputs<H>,
    epsilon: f64,
    norm: Norm,
) -> Tensor<H, 3> {
    let shape = x.dims();
    let values = |t: Tensor<H, 1>| H::contiguous(t.into_primitive().tensor());
    let xv = H::contiguous(x.into_primitive().tensor());
    let (gv, bv) = (values(gamma), beta.map(values));
    let result = kernel::forward(
        H::values(&xv),
        H::values(&gv),
        bv.as_ref().map(H::values),
        shape[2],
        epsilon,
        norm,
    );
    Tensor::from_primitive(TensorPrimitive::Float(H::tensor(result.out, &shape)))
}

fn training<H: HostBackend>(
    (x, gamma, beta): LayerNormInputs<Autodiff<H>>,
    epsilon: f64,
    norm: Norm,
) -> Tensor<Autodiff<H>, 3> {
    let shape = x.dims();
    let dim = shape[2];
    let (x, gamma) = (x.into_primitive().tensor(), gamma.into_primitive().tensor());
    let (xv, gv) = (
        H::contiguous(x.primitive.clone()),
        H::contiguous(gamma.primitive.clone()),
    );
    let beta = beta.map(|b| b.into_primitive().tensor());
    let bv = beta.as_ref().map(|b| H::contiguous(b.primitive.clone()));
    let result = kernel::forward(
        H::values(&xv),
        H::values(&gv),
        bv.as_ref().map(H::values),
        dim,
        epsilon,
        norm,
    );
    let out = H::tensor(result.out, &shape);
    let saved = Saved {
        normalized: Arc::from(result.normalized),
        inverse_std: Arc::from(result.inverse_std),
        gamma: Arc::from(H::values(&gv)),
        dim,
        shape,
        norm,
    };
    let out = record::<H, _>([&x, &gamma], beta.as_ref(), saved, out);
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug, Clone)]
struct Saved {
    normalized: Arc<[f32]>,
    inverse_std: Arc<[f32]>,
    gamma: Arc<[f32]>,
    dim: usize,
    shape: [usize; 3],
    norm: Norm,
}

impl<H: HostBackend> Gradient<H> for Saved {
    /// The gradients of the input, the scale, and the shift if any.
    fn register(
        self,
        grad_out: H::FloatTensorPrimitive,
        [x, gamma, beta]: [Option<NodeId>; 3],
        grads: &mut Gradients,
    ) {
        let grad_out = H::contiguous(grad_out);
        let (dx, dgamma, dbeta) = kernel::backward(
            &self.normalized,
            &self.inverse_std,
            &self.gamma,
            H::values(&grad_out),
            self.dim,
            self.norm,
        );
        if let Some(id) = x {
            grads.register::<H>(id, H::tensor(dx, &self.shape));
        }
        if let Some(id) = gamma {
            grads.register::<H>(id, H::tensor(dgamma, &[self.dim]));
        }
        if let Some(id) = beta {
            grads.register::<H>(id, H::tensor(dbeta, &[self.dim]));
        }
    }
}
