//! Applying a `Linear` layer to every position of a sequence.

use crate::Activation;
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor};

/// `linear.forward(x)` for `x` of shape `[batch, time, d_in]`, computed on the `[batch * time,
/// d_in]` matrix of positions.
///
/// The result is the same; the backward pass is not. Burn 0.21's linear backward on a 3-D input
/// computes one weight gradient per batch element (`[batch, d_in, d_out]`) and then sums them
/// (30% of a `transformer.ron` training step on flex, and `batch` times the weight's memory); on a
/// matrix it is one matmul.
///
/// On flex and ndarray the product runs through [`tinygpt_kernels::linear`] (gemm on every core).
pub fn per_position<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, time, d_in] = x.dims();
    let x = x.reshape([batch * time, d_in]);
    let inputs = (
        x,
        linear.weight.val(),
        linear.bias.as_ref().map(|b| b.val()),
    );
    let out = tinygpt_kernels::linear(inputs).unwrap_or_else(|(x, _, _)| linear.forward(x));
    let d_out = out.dims()[1];
    out.reshape([batch, time, d_out])
}

/// `activation.forward(per_position(linear, x))`. On flex and ndarray a ReLU (and ReLU²'s ReLU)
/// runs inside the Linear's kernel ([`tinygpt_kernels::linear_relu`]).
pub fn per_position_activated<B: Backend>(
    linear: &Linear<B>,
    x: Tensor<B, 3>,
    activation: Activation,
) -> Tensor<B, 3> {
    let squared = match activation {
        Activation::Relu => false,
        // relu(x)², with the ReLU still inside the Linear's kernel.
        Activation::ReluSquared => true,
        other => return other.forward(per_position(linear, x)),
    };
    let [batch, time, d_in] = x.dims();
    let inputs = (
        x.reshape([batch * time, d_in]),
        linear.weight.val(),
        linear.bias.as_ref().map(|b| b.val()),
    );
    let out = tinygpt_kernels::linear_relu(inputs)
        .unwrap_or_else(|(x, _, _)| Activation::Relu.forward(linear.forward(x)));
    let out = if squared { out.square() } else { out };
    let d_out = out.dims()[1];
    out.reshape([batch, time, d_out])
}
