//! The layers' fused kernels (`tinygpt_kernels`) against this crate's plain tensor-op paths, on
//! both backends they serve: attention at every SIMD level the machine has (same outputs and
//! gradients, with and without dropout on the weights), and layer normalisation against
//! `exact::layer_norm` (same output and gradients of input, scale and shift), RMSNorm against
//! `exact::rms_norm`, and the rotary embedding against its tensor-op form.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::nn::DropoutConfig;
use burn::tensor::{Bool, Distribution, Tensor, TensorData};
use tinygpt_kernels::attention::{AttentionDims, WeightDropout};
use tinygpt_kernels::host::HostBackend;
use tinygpt_kernels::ops::attention::attention_with_dropout;
use tinygpt_kernels::simd::at_every_simd_level;
use tinygpt_layers::attention::{merge_heads, plain_causal_attention, split_heads, Heads};
// Not Burn's softmax: its gradient goes through ndarray's reciprocal estimate (see `exact`).
use tinygpt_layers::exact::softmax;

/// Plain tensor-op attention with an explicit `[batch, heads, time, time]` dropout mask.
fn with_mask<H: HostBackend>(
    qkv: Tensor<Autodiff<H>, 3>,
    heads: usize,
    mask: Vec<f32>,
) -> Tensor<Autodiff<H>, 3> {
    let [q, k, v]: [Tensor<Autodiff<H>, 3>; 3] = qkv.chunk(3, 2).try_into().expect("three parts");
    let (q, k, v) = (
        split_heads(q, heads),
        split_heads(k, heads),
        split_heads(v, heads),
    );
    let [batch, _, time, head_size] = q.dims();
    let device = q.device();
    let future = Tensor::<Autodiff<H>, 2, Bool>::tril_mask([time, time], 0, &device);
    let bias = Tensor::<Autodiff<H>, 2>::zeros([time, time], &device)
        .mask_fill(future, f32::NEG_INFINITY)
        .unsqueeze::<4>();
    let scores = q.matmul(k.swap_dims(2, 3)) * (head_size as f64).powf(-0.5) + bias;
    let mask = Tensor::<Autodiff<H>, 4>::from_data(
        TensorData::new(mask, [batch, heads, time, time]),
        &device,
    );
    merge_heads((softmax(scores, 3) * mask).matmul(v))
}

/// (output, d loss / d qkv) for loss = sum(output * weights).
fn run<H: HostBackend>(
    qkv: &Tensor<Autodiff<H>, 3>,
    weights: &Tensor<Autodiff<H>, 3>,
    attend: impl Fn(Tensor<Autodiff<H>, 3>) -> Tensor<Autodiff<H>, 3>,
) -> (TensorData, TensorData) {
    let qkv = qkv.clone().detach().require_grad();
    let out = attend(qkv.clone());
    let grads = (out.clone() * weights.clone()).sum().backward();
    let grad = qkv.grad(&grads).expect("qkv requires grad");
    (out.into_data(), grad.into_data())
}

fn assert_close(fused: &TensorData, plain: &TensorData, what: &str) {
    let (a, b) = (
        fused.to_vec::<f32>().unwrap(),
        plain.to_vec::<f32>().unwrap(),
    );
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "{what}: fused and plain differ by {worst}");
}

fn random<H: HostBackend>(dims: [usize; 3]) -> Tensor<Autodiff<H>, 3> {
    Tensor::random(dims, Distribution::Normal(0.0, 1.0), &Default::default())
}

fn values_and_gradients_agree<H: HostBackend>() {
    let no_dropout = DropoutConfig::new(0.0).init();
    // Shapes of head.ron (1 head), transformer.ron and nanogpt_cpu.ron-like sizes, T = 1, and
    // grouped-query attention (SmolLM2's 3 query heads per key/value head, and 2 groups of 4).
    for (batch, time, heads, kv_heads, head_size) in [
        (3, 8, 1, 1, 16),
        (4, 8, 4, 4, 8),
        (2, 64, 4, 4, 32),
        (2, 1, 2, 2, 4),
        (2, 12, 9, 3, 8),
        (1, 16, 8, 2, 16),
    ] {
        let shared = Heads { heads, kv_heads };
        let (qkv, weights) = (
            random::<H>([batch, time, shared.columns() * head_size]),
            random::<H>([batch, time, heads * head_size]),
        );
        let fused = run(&qkv, &weights, |x| {
            tinygpt_kernels::attention(x, heads, kv_heads, &no_dropout)
                .unwrap_or_else(|_| panic!("the backend runs the kernel"))
        });
        let plain = run(&qkv, &weights, |x| {
            plain_causal_attention(x, shared, &no_dropout, None)
        });
        assert_close(&fused.0, &plain.0, "output");
        assert_close(&fused.1, &plain.1, "gradient");

        // Inference (no autodiff) takes the kernel too.
        let inner = qkv.clone().inner();
        let fused = tinygpt_kernels::attention(inner.clone(), heads, kv_heads, &no_dropout)
            .unwrap_or_else(|_| panic!("the backend runs the kernel"));
        let plain = plain_causal_attention(inner, shared, &no_dropout, None);
        assert_close(&fused.into_data(), &plain.into_data(), "inference output");
    }
}

#[test]
fn fused_and_plain_agree_on_values_and_gradients() {
    at_every_simd_level(|_| {
        values_and_gradients_agree::<Flex>();
        values_and_gradients_agree::<NdArray>();
    });
}

fn dropout_is_the_plain_path_with_the_kernels_mask<H: HostBackend>() {
    let (batch, time, heads, head_size) = (3, 16, 2, 8);
    let (qkv, weights) = (
        random::<H>([batch, time, 3 * heads * head_size]),
        random::<H>([batch, time, heads * head_size]),
    );
    // A fixed seed: the backend's generator is shared with the tests running beside this one.
    let dropout = WeightDropout {
        seed: 0x5eed_d20f,
        keep: 0.8,
    };
    let fused = run(&qkv, &weights, |x| {
        attention_with_dropout(x, heads, heads, Some(dropout))
    });
    let mask = dropout.mask(AttentionDims::multi_head(batch, time, heads, head_size));
    let zeroed = mask
        .iter()
        .enumerate()
        .filter(|(i, &m)| i % time <= (i / time) % time && m == 0.0)
        .count();
    assert!(zeroed > 0, "a 0.2 dropout zeroes some weights");
    let plain = run(&qkv, &weights, |x| with_mask(x, heads, mask.clone()));
    assert_close(&fused.0, &plain.0, "output");
    assert_close(&fused.1, &plain.1, "gradient");
}

#[test]
fn fused_dropout_is_the_plain_path_with_the_kernels_mask() {
    dropout_is_the_plain_path_with_the_kernels_mask::<Flex>();
    dropout_is_the_plain_path_with_the_kernels_mask::<NdArray>();
}

fn layer_norm_agrees<H: HostBackend>(shift: bool) {
    let device = Default::default();
    let x = random::<H>([3, 5, 24]) * 4.0 + 1.5;
    let gamma = Tensor::<Autodiff<H>, 1>::random([24], Distribution::Normal(1.0, 0.3), &device);
    let beta = Tensor::<Autodiff<H>, 1>::random([24], Distribution::Normal(0.0, 0.3), &device);
    let weights = random::<H>([3, 5, 24]);
    let run = |fused: bool| {
        let (x, gamma, beta) = (
            x.clone().detach().require_grad(),
            gamma.clone().detach().require_grad(),
            beta.clone().detach().require_grad(),
        );
        let shift_input = shift.then(|| beta.clone());
        let out = if fused {
            tinygpt_kernels::layer_norm((x.clone(), gamma.clone(), shift_input), 1e-5)
                .unwrap_or_else(|_| panic!("the backend runs the kernel"))
        } else {
            tinygpt_layers::exact::layer_norm(x.clone(), gamma.clone(), shift_input, 1e-5)
        };
        let grads = (out.clone() * weights.clone()).sum().backward();
        let beta_grad = shift.then(|| beta.grad(&grads).unwrap().into_data());
        (
            out.into_data(),
            x.grad(&grads).unwrap().into_data(),
            gamma.grad(&grads).unwrap().into_data(),
            beta_grad,
        )
    };
    let (fused, plain) = (run(true), run(false));
    assert_close(&fused.0, &plain.0, "output");
    assert_close(&fused.1, &plain.1, "input gradient");
    assert_close(&fused.2, &plain.2, "scale gradient");
    if let (Some(a), Some(b)) = (fused.3, plain.3) {
        assert_close(&a, &b, "shift gradient");
    }
}

#[test]
fn fused_layer_norm_is_the_exact_one() {
    for shift in [true, false] {
        layer_norm_agrees::<Flex>(shift);
        layer_norm_agrees::<NdArray>(shift);
    }
}

fn rms_norm_agrees<H: HostBackend>() {
    let device = Default::default();
    let x = random::<H>([3, 5, 24]) * 4.0 + 1.5;
    let gamma = Tensor::<Autodiff<H>, 1>::random([24], Distribution::Normal(1.0, 0.3), &device);
    let weights = random::<H>([3, 5, 24]);
    let run = |fused: bool| {
        let (x, gamma) = (
            x.clone().detach().require_grad(),
            gamma.clone().detach().require_grad(),
        );
        let out = if fused {
            tinygpt_kernels::rms_norm((x.clone(), gamma.clone(), None), 1e-6)
                .unwrap_or_else(|_| panic!("the backend runs the kernel"))
        } else {
            tinygpt_layers::exact::rms_norm(x.clone(), gamma.clone(), 1e-6)
        };
        let grads = (out.clone() * weights.clone()).sum().backward();
        (
            out.into_data(),
            x.grad(&grads).unwrap().into_data(),
            gamma.grad(&grads).unwrap().into_data(),
        )
    };
    let (fused, plain) = (run(true), run(false));
    assert_close(&fused.0, &plain.0, "output");
    assert_close(&fused.1, &plain.1, "input gradient");
    assert_close(&fused.2, &plain.2, "scale gradient");
    // Inference takes the kernel too.
    let inner = || (x.clone().inner(), gamma.clone().inner(), None);
    let fused = tinygpt_kernels::rms_norm(inner(), 1e-6)
        .unwrap_or_else(|_| panic!("the backend runs the kernel"));
    let (x, gamma, _) = inner();
    let plain = tinygpt_layers::exact::rms_norm(x, gamma, 1e-6);
    assert_close(&fused.into_data(), &plain.into_data(), "inference output");
}

#[test]
fn fused_rms_norm_is_the_exact_one() {
    rms_norm_agrees::<Flex>();
    rms_norm_agrees::<NdArray>();
}

fn rope_agrees<H: HostBackend>() {
    use tinygpt_layers::rope::{plain_rope, RopeSpec};
    let heads = Heads {
        heads: 4,
        kv_heads: 2,
    };
    let (batch, time, head_size, start) = (2, 5, 8, 3);
    let table = RopeSpec {
        theta: 100.0,
        scaling: None,
    }
    .table(head_size, 16);
    let qkv = random::<H>([batch, time, heads.columns() * head_size]);
    let weights = random::<H>([batch, time, heads.columns() * head_size]);
    let fused = run(&qkv, &weights, |x| {
        tinygpt_kernels::rope(x, heads.heads, heads.kv_heads, &table, start)
            .unwrap_or_else(|_| panic!("the backend runs the kernel"))
    });
    let plain = run(&qkv, &weights, |x| plain_rope(x, heads, &table, start));
    assert_close(&fused.0, &plain.0, "output");
    assert_close(&fused.1, &plain.1, "gradient");
    let inner = qkv.inner();
    let fused = tinygpt_kernels::rope(inner.clone(), heads.heads, heads.kv_heads, &table, start)
        .unwrap_or_else(|_| panic!("the backend runs the kernel"));
    let plain = plain_rope(inner, heads, &table, start);
    assert_close(&fused.into_data(), &plain.into_data(), "inference output");
}

#[test]
fn fused_rope_is_the_plain_rotation() {
    rope_agrees::<Flex>();
    rope_agrees::<NdArray>();
}

fn swiglu_agrees<H: HostBackend>() {
    let gate_up = random::<H>([3, 5, 2 * 12]) * 3.0;
    let weights = random::<H>([3, 5, 12]);
    let fused = run(&gate_up, &weights, |x| {
        tinygpt_kernels::swiglu(x).unwrap_or_else(|_| panic!("the backend runs the kernel"))
    });
    let plain = run(&gate_up, &weights, tinygpt_layers::swiglu::plain_gate);
    assert_close(&fused.0, &plain.0, "output");
    assert_close(&fused.1, &plain.1, "gradient");
}

#[test]
fn fused_swiglu_is_the_plain_gate() {
    swiglu_agrees::<Flex>();
    swiglu_agrees::<NdArray>();
}
