//! The causal mask as an additive bias equals the tutorial's `mask_fill`, bit for bit, forward and backward.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::nn::DropoutConfig;
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use burn::tensor::{Bool, Tensor};
use tinygpt_layers::attention::causal_attention;
use tinygpt_layers::exact::softmax;

/// The tutorial's formulation: mask_fill the future with -inf.
fn with_mask_fill<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, heads, queries, head_size] = q.dims();
    let keys = k.dims()[2];
    let scores = q.matmul(k.swap_dims(2, 3)) * (head_size as f64).powf(-0.5);
    let future =
        Tensor::<B, 2, Bool>::tril_mask([queries, keys], (keys - queries) as i64, &scores.device())
            .unsqueeze::<4>()
            .expand([batch, heads, queries, keys]);
    softmax(scores.mask_fill(future, f32::NEG_INFINITY), 3).matmul(v)
}

fn bias_equals_mask_fill<B: AutodiffBackend>() {
    let device = Default::default();
    let no_dropout = DropoutConfig::new(0.0).init();
    // Full self-attention, and 3 new queries over 5 cached keys.
    for (queries, keys) in [(6, 6), (3, 8)] {
        let random =
            |t| Tensor::<B, 4>::random([2, 3, t, 4], Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (random(queries), random(keys), random(keys));
        let run = |f: &dyn Fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>| {
            let (q, k, v) = (
                q.clone().require_grad(),
                k.clone().require_grad(),
                v.clone().require_grad(),
            );
            let out = f(q.clone(), k.clone(), v.clone());
            let grads = (out.clone() * out.clone()).sum().backward();
            let read = |t: Tensor<B::InnerBackend, 4>| t.into_data().to_vec::<f32>().unwrap();
            [
                read(out.inner()),
                read(q.grad(&grads).unwrap()),
                read(k.grad(&grads).unwrap()),
                read(v.grad(&grads).unwrap()),
            ]
        };
        let ours = run(&|q, k, v| causal_attention(q, k, v, &no_dropout));
        let reference = run(&|q, k, v| with_mask_fill(q, k, v));
        assert_eq!(
            ours, reference,
            "{queries} queries over {keys} keys: output, dq, dk, dv"
        );
    }
}

#[test]
fn causal_bias_matches_mask_fill_exactly() {
    bias_equals_mask_fill::<Autodiff<Flex>>();
    bias_equals_mask_fill::<Autodiff<NdArray<f32>>>();
}
