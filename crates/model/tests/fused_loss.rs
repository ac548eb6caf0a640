//! The fused cross-entropy kernel (`tinygpt_kernels`) against this crate's plain tensor-op loss,
//! on both backends it serves, at every SIMD level the machine has: the same loss and gradient.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use tinygpt_kernels::host::HostBackend;
use tinygpt_model::plain_cross_entropy;

fn targets<B: burn::tensor::backend::Backend>(rows: usize, vocab: usize) -> Tensor<B, 1, Int> {
    let ids: Vec<i64> = (0..rows).map(|i| ((i * 7 + 3) % vocab) as i64).collect();
    Tensor::from_data(TensorData::new(ids, [rows]), &Default::default())
}

fn max_difference(a: TensorData, b: TensorData) -> f32 {
    let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn loss_and_gradient_agree<H: HostBackend>() {
    let device = Default::default();
    for (rows, vocab, spread) in [(256, 65, 1.0), (3, 5, 30.0), (1, 65, 0.0)] {
        let logits = Tensor::<Autodiff<H>, 2>::random(
            [rows, vocab],
            Distribution::Normal(0.0, spread),
            &device,
        );
        let run = |fused: bool| {
            let logits = logits.clone().detach().require_grad();
            let targets = targets::<Autodiff<H>>(rows, vocab);
            let loss = if fused {
                tinygpt_kernels::cross_entropy(logits.clone(), targets)
                    .unwrap_or_else(|_| panic!("the backend runs the kernel"))
            } else {
                plain_cross_entropy(logits.clone(), targets)
            };
            // A loss weight other than 1 checks that the incoming gradient is used.
            let grads = (loss.clone() * 3.0).backward();
            (loss.into_data(), logits.grad(&grads).unwrap().into_data())
        };
        let (fused, plain) = (run(true), run(false));
        assert!(max_difference(fused.0, plain.0) < 1e-5, "loss");
        assert!(max_difference(fused.1, plain.1) < 1e-6, "gradient");

        let inner = logits.clone().inner();
        let fused = tinygpt_kernels::cross_entropy(inner.clone(), targets::<H>(rows, vocab))
            .unwrap_or_else(|_| panic!("the backend runs the kernel"));
        let plain = plain_cross_entropy(inner, targets::<H>(rows, vocab));
        assert!(max_difference(fused.into_data(), plain.into_data()) < 1e-5);
    }
}

#[test]
fn fused_and_plain_agree_on_loss_and_gradient() {
    tinygpt_kernels::simd::at_every_simd_level(|_| {
        loss_and_gradient_agree::<Flex>();
        loss_and_gradient_agree::<NdArray>();
    });
}
