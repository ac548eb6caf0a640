//! The model's fused kernels (`tinygpt_kernels`) against their plain forms: the cross-entropy
//! against this crate's tensor-op loss on both backends it serves, at every SIMD level the machine
//! has (same loss and gradient), and the embedding lookup against Burn's `Embedding` on ndarray
//! (same rows and table gradient, repeated tokens included).

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

#[test]
fn fused_embedding_is_burns_embedding() {
    use burn::nn::EmbeddingConfig;
    type B = Autodiff<NdArray>;
    let device = Default::default();
    let embedding = EmbeddingConfig::new(11, 6).init::<B>(&device);
    // Token 3 three times: its row's gradient sums three positions.
    let ids: Vec<i64> = vec![3, 0, 10, 3, 7, 3, 1, 2];
    let ids = || Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [2, 4]), &device);
    let weights = Tensor::<B, 3>::random([2, 4, 6], Distribution::Normal(0.0, 1.0), &device);
    let run = |fused: bool| {
        let out = if fused {
            tinygpt_kernels::embedding(embedding.weight.val(), ids())
                .unwrap_or_else(|_| panic!("ndarray runs the kernel"))
        } else {
            embedding.forward(ids())
        };
        let grads = (out.clone() * weights.clone()).sum().backward();
        let grad = embedding.weight.grad(&grads).unwrap().into_data();
        (out.into_data(), grad)
    };
    let (fused, plain) = (run(true), run(false));
    assert_eq!(fused.0, plain.0, "rows are copied exactly");
    assert!(max_difference(fused.1, plain.1) < 1e-6, "table gradient");
    // Generation (no autodiff) takes it too; flex keeps Burn's own lookup.
    let inner = embedding.weight.val().inner();
    assert!(tinygpt_kernels::embedding(inner, ids().inner()).is_ok());
    let flex = Tensor::<Flex, 2>::zeros([11, 6], &Default::default());
    let flex_ids = Tensor::<Flex, 2, Int>::zeros([1, 2], &Default::default());
    assert!(tinygpt_kernels::embedding(flex, flex_ids).is_err());
}

fn tied_head_kernel_is_the_plain_transposed_product_on<H: HostBackend>() {
    type B<H> = Autodiff<H>;
    let device = Default::default();
    // A [vocab, width] embedding used as the head: x · Wᵀ, values and both gradients.
    for rows in [1, 5, 64] {
        let embedding =
            Tensor::<B<H>, 2>::random([37, 12], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
        let x = Tensor::<B<H>, 2>::random([rows, 12], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let weights =
            Tensor::<B<H>, 2>::random([rows, 37], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let out = if fused {
                tinygpt_kernels::linear_transposed(x.clone(), embedding.clone())
                    .unwrap_or_else(|_| panic!("the host backends run the kernel"))
            } else {
                x.clone().matmul(embedding.clone().transpose())
            };
            let grads = (out.clone() * weights.clone()).sum().backward();
            (
                out.into_data(),
                x.grad(&grads).unwrap().into_data(),
                embedding.grad(&grads).unwrap().into_data(),
            )
        };
        let (fused, plain) = (run(true), run(false));
        assert!(
            max_difference(fused.0, plain.0) < 1e-5,
            "logits, {rows} rows"
        );
        assert!(
            max_difference(fused.1, plain.1) < 1e-5,
            "input gradient, {rows} rows"
        );
        assert!(
            max_difference(fused.2, plain.2) < 1e-5,
            "embedding gradient, {rows} rows"
        );
        // Generation (no autodiff) takes it too.
        assert!(
            tinygpt_kernels::linear_transposed(x.clone().inner(), embedding.clone().inner())
                .is_ok()
        );
    }
}

#[test]
fn tied_head_kernel_is_the_plain_transposed_product() {
    tied_head_kernel_is_the_plain_transposed_product_on::<NdArray>();
    tied_head_kernel_is_the_plain_transposed_product_on::<Flex>();
    let f64s = Tensor::<NdArray<f64>, 2>::zeros([3, 4], &Default::default());
    assert!(tinygpt_kernels::linear_transposed(f64s.clone(), f64s).is_err());
}
