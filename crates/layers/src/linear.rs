//! Applying a `Linear` layer to every position of a sequence.

use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor};

/// `linear.forward(x)` for `x` of shape `[batch, time, d_in]`, computed on the `[batch * time,
/// d_in]` matrix of positions.
///
/// The result is the same; the backward pass is not. Burn 0.21's linear backward on a 3-D input
/// computes one weight gradient per batch element (`[batch, d_in, d_out]`) and then sums them
/// (30% of a `transformer.ron` training step on flex, and `batch` times the weight's memory); on a
/// matrix it is one matmul.
pub fn per_position<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, time, d_in] = x.dims();
    let out = linear.forward(x.reshape([batch * time, d_in]));
    let d_out = out.dims()[1];
    out.reshape([batch, time, d_out])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    #[test]
    fn same_values_and_gradients_as_forward() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        let linear = LinearConfig::new(6, 5).init::<B>(&device);
        let x = Tensor::<B, 3>::random([3, 4, 6], Distribution::Normal(0.0, 1.0), &device);
        let run = |matrix: bool| {
            let x = x.clone().detach().require_grad();
            let out = if matrix {
                per_position(&linear, x.clone())
            } else {
                linear.forward(x.clone())
            };
            let grads = (out.clone() * out.clone()).sum().backward();
            let weight = linear.weight.grad(&grads).unwrap().into_data();
            (out.into_data(), x.grad(&grads).unwrap().into_data(), weight)
        };
        let (a, b) = (run(true), run(false));
        let tolerance = burn::tensor::Tolerance::<f32>::absolute(1e-5);
        a.0.assert_approx_eq::<f32>(&b.0, tolerance);
        a.1.assert_approx_eq::<f32>(&b.1, tolerance);
        a.2.assert_approx_eq::<f32>(&b.2, tolerance);
    }
}
