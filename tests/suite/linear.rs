//! A Linear layer's products through the gemm kernel (flex, ndarray) against Burn's own `Linear`: values and gradients, with and without the activation inside.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::nn::LinearConfig;
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use burn::tensor::{Distribution, ElementConversion};
use tinygpt_layers::linear::{per_position, per_position_activated};
use tinygpt_layers::Activation;

/// `per_position` (on flex and ndarray: the gemm kernel) against Burn's own `Linear::forward` on the
/// 3-D input: output, and the gradients of input, weight and bias; with an activation,
/// `per_position_activated` against the activation applied after it.
fn same_values_and_gradients_on<B: AutodiffBackend>(bias: bool, activation: Option<Activation>) {
    let device = Default::default();
    let linear = LinearConfig::new(6, 5).with_bias(bias).init::<B>(&device);
    let x = Tensor::<B, 3>::random([3, 4, 6], Distribution::Normal(0.0, 1.0), &device);
    let run = |matrix: bool| {
        let x = x.clone().detach().require_grad();
        let out = match (matrix, activation) {
            (true, None) => per_position(&linear, x.clone()),
            (true, Some(a)) => per_position_activated(&linear, x.clone(), a),
            (false, None) => linear.forward(x.clone()),
            (false, Some(a)) => a.forward(linear.forward(x.clone())),
        };
        // `+ out`: the gradient must not vanish where a ReLU's output does.
        let grads = (out.clone() * out.clone() + out.clone()).sum().backward();
        let weight = linear.weight.grad(&grads).unwrap().into_data();
        let bias = linear
            .bias
            .as_ref()
            .map(|b| b.grad(&grads).unwrap().into_data());
        (
            out.into_data(),
            x.grad(&grads).unwrap().into_data(),
            weight,
            bias,
        )
    };
    let (a, b) = (run(true), run(false));
    let tolerance = burn::tensor::Tolerance::<f32>::absolute(1e-5);
    a.0.assert_approx_eq::<f32>(&b.0, tolerance);
    a.1.assert_approx_eq::<f32>(&b.1, tolerance);
    a.2.assert_approx_eq::<f32>(&b.2, tolerance);
    if let (Some(a), Some(b)) = (a.3, b.3) {
        a.assert_approx_eq::<f32>(&b, tolerance);
    }
}

#[test]
fn same_values_and_gradients_as_forward() {
    let activations = [
        None,
        Some(Activation::Relu),
        Some(Activation::Gelu),
        Some(Activation::GeluTanh),
    ];
    for (bias, activation) in [true, false]
        .into_iter()
        .flat_map(|bias| activations.map(|a| (bias, a)))
    {
        same_values_and_gradients_on::<Autodiff<Flex>>(bias, activation);
        same_values_and_gradients_on::<Autodiff<NdArray>>(bias, activation);
    }
    // flex and ndarray take the kernel; everything else keeps Burn's Linear.
    let x = Tensor::<NdArray, 2>::zeros([2, 3], &Default::default());
    let w = Tensor::<NdArray, 2>::zeros([3, 4], &Default::default());
    assert!(tinygpt_kernels::linear((x, w, None)).is_ok());
    let x = Tensor::<Flex, 2>::zeros([2, 3], &Default::default());
    let w = Tensor::<Flex, 2>::zeros([3, 4], &Default::default());
    assert!(tinygpt_kernels::linear((x, w, None)).is_ok());
    let x = Tensor::<NdArray<f64>, 2>::zeros([2, 3], &Default::default());
    let w = Tensor::<NdArray<f64>, 2>::zeros([3, 4], &Default::default());
    assert!(tinygpt_kernels::linear((x, w, None)).is_err());
}

/// Without autodiff (evaluation, generation) the ReLU inside the kernel matches too.
fn relu_in_the_kernel_matches_in_inference_on<B: Backend>() {
    let device = Default::default();
    let linear = LinearConfig::new(6, 5).init::<B>(&device);
    let x = Tensor::<B, 3>::random([3, 4, 6], Distribution::Normal(0.0, 1.0), &device);
    let fused = per_position_activated(&linear, x.clone(), Activation::Relu);
    let plain = Activation::Relu.forward(linear.forward(x));
    let zeros: i64 = fused
        .clone()
        .equal_elem(0.0)
        .int()
        .sum()
        .into_scalar()
        .elem();
    assert!(
        zeros > 0,
        "the input should make some pre-activations negative"
    );
    fused
        .into_data()
        .assert_approx_eq::<f32>(&plain.into_data(), burn::tensor::Tolerance::absolute(1e-5));
}

#[test]
fn relu_in_the_kernel_matches_in_inference() {
    relu_in_the_kernel_matches_in_inference_on::<Flex>();
    relu_in_the_kernel_matches_in_inference_on::<NdArray>();
}
