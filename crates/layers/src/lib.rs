//! The Transformer's building blocks, generic over the Burn backend, and the registry that lets a
//! RON config name them: the tutorial's (`Head`, `MultiHeadAttention`, `FeedForward`, `Block`,
//! `LayerNorm`) and today's open models' (`RmsNorm`, grouped-query `Attention` with rotary
//! positions, `SwiGlu`, `LlamaBlock`) and the GPT speedrun's (`SpeedrunBlock`).
//!
//! Every layer maps `[batch, time, d_in]` to `[batch, time, d_out]` and lives in its own file as a
//! Burn `XConfig` + `X<B>` pair, plus an `XSpec`: what a config file writes, resolved against the
//! model's sizes into the `XConfig`. See [`registry`] for how a layer kind is added.

#[macro_use]
mod macros;

pub mod activation;
pub mod attention;
pub mod block;
pub mod context;
pub mod exact;
pub mod feedforward;
pub mod footprint;
pub mod head;
pub mod init;
pub mod layernorm;
pub mod linear;
pub mod llama_block;
pub mod multihead;
pub mod registry;
pub mod rms_norm;
pub mod rope;
pub mod self_attention;
pub mod speedrun_block;
pub mod swiglu;

pub use activation::Activation;
pub use attention::{capture_attention, AttentionMap, KvCache};
pub use block::{Block, BlockConfig, BlockSpec};
pub use context::{LayerContext, LayerError};
pub use feedforward::{FeedForward, FeedForwardConfig, FeedForwardSpec};
pub use footprint::StepShape;
pub use head::{Head, HeadConfig, HeadSpec};
pub use init::WeightInit;
pub use layernorm::{LayerNorm, LayerNormConfig, LayerNormSpec};
pub use llama_block::{LlamaBlock, LlamaBlockConfig, LlamaBlockSpec};
pub use multihead::{MultiHeadAttention, MultiHeadAttentionConfig, MultiHeadAttentionSpec};
pub use registry::{expand, Layer, LayerConfig, LayerSpec, RepeatSpec, REGISTERED_LAYERS};
pub use rms_norm::{RmsNorm, RmsNormConfig, RmsNormSpec};
pub use rope::{RopeScaling, RopeSpec};
pub use self_attention::{Attention, AttentionConfig, AttentionSpec};
pub use speedrun_block::{SpeedrunBlock, SpeedrunBlockConfig, SpeedrunBlockSpec};
pub use swiglu::{SwiGlu, SwiGluConfig, SwiGluSpec};

#[cfg(test)]
pub(crate) mod test_util {
    use burn::tensor::{backend::Backend, Distribution, Tensor};

    /// flex: its operations are compiled in burn-flex once, where burn-ndarray's, generic over
    /// the element type, would be compiled again into this test binary (the suite in `tests/`
    /// runs the layers on both).
    pub type TestBackend = burn::backend::Flex;

    pub fn random_input<B: Backend>(dims: [usize; 3]) -> Tensor<B, 3> {
        Tensor::random(dims, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    /// Changes the input at time step `t` and checks that outputs before `t` do not move.
    pub fn assert_causal<B: Backend>(
        forward: impl Fn(Tensor<B, 3>) -> Tensor<B, 3>,
        input: Tensor<B, 3>,
        t: usize,
    ) {
        let [b, time, c] = input.dims();
        let changed = input.clone().slice_assign(
            [0..b, t..t + 1, 0..c],
            Tensor::random([b, 1, c], Distribution::Normal(5.0, 1.0), &input.device()),
        );
        let before = forward(input);
        let after = forward(changed);
        let d = before.dims()[2];
        let past = |x: Tensor<B, 3>| x.slice([0..b, 0..t, 0..d]);
        let future = |x: Tensor<B, 3>| x.slice([0..b, t..time, 0..d]);
        past(before.clone())
            .into_data()
            .assert_approx_eq::<f32>(&past(after.clone()).into_data(), Default::default());
        let moved = (future(before) - future(after)).abs().max().into_scalar();
        let moved: f32 = burn::tensor::ElementConversion::elem(moved);
        assert!(
            moved > 1e-4,
            "the changed position itself must affect the output"
        );
    }
}
