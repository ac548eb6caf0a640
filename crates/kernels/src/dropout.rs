//! Dropout with a mask drawn in parallel on the CPU backends.
//!
//! Burn's `Dropout::forward` draws every mask element from the backend's one seeded generator.
//! On flex and ndarray that generator is a ChaCha stream behind a global lock, run on one thread:
//! 4.3 s of a 16.1 s `gpt.ron` training step on flex. [`dropout`] keeps Burn's module and its
//! semantics (training only, zeroes with probability `prob`, scales the rest by `1 / (1 - prob)`)
//! but, on the CPU backends, takes one seed from the backend's generator and expands it into the
//! mask on every core with a counter-based generator. Every other backend (CUDA) runs Burn's own
//! path, [`dropout_plain`], which is also the reference the tests compare against.

use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use rayon::prelude::*;
use std::any::TypeId;

/// Elements per parallel chunk: each chunk's stream is keyed by (seed, chunk index), so the mask
/// does not depend on how many threads draw it.
const CHUNK: usize = 1 << 14;

/// Applies `module`'s dropout to `input`: identity outside training, a fresh mask in training.
pub fn dropout<B: Backend, const D: usize>(module: &Dropout, input: Tensor<B, D>) -> Tensor<B, D> {
    let device = input.device();
    if !B::ad_enabled(&device) || module.prob == 0.0 {
        return input;
    }
    if !mask_on_host::<B>() {
        return dropout_plain(module, input);
    }
    let keep = 1.0 - module.prob;
    let shape = input.shape();
    let mask = host_mask(seed_from_backend::<B>(&device), shape.num_elements(), keep);
    input * Tensor::<B, D>::from_data(TensorData::new(mask, shape), &device)
}

/// Burn's own dropout, on every backend.
pub fn dropout_plain<B: Backend, const D: usize>(
    module: &Dropout,
    input: Tensor<B, D>,
) -> Tensor<B, D> {
    module.forward(input)
}

/// The backends whose tensors live in host memory, where a mask built on the host costs one copy.
fn mask_on_host<B: Backend>() -> bool {
    let device = TypeId::of::<B::Device>();
    device == TypeId::of::<burn::backend::flex::FlexDevice>()
        || device == TypeId::of::<burn::backend::ndarray::NdArrayDevice>()
}

thread_local! {
    /// This thread's own mask stream, when [`seed_thread_masks`] set one.
    static THREAD_SEED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Draws this thread's CPU dropout masks from a stream of its own, starting at `seed` (`None`
/// returns to the backend's generator). The CPU backends have one generator per process, so
/// data-parallel peers on threads of one process would otherwise race for it: each peer keys its
/// stream by step and rank instead, and a run's masks stay reproducible.
pub fn seed_thread_masks(seed: Option<u64>) {
    THREAD_SEED.with(|cell| cell.set(seed));
}

/// One seed from this thread's stream ([`seed_thread_masks`]) or else from the backend's
/// generator, so `B::seed` still makes the masks reproducible. Four 16-bit draws: int tensors
/// are i32 on some backends.
pub(crate) fn seed_from_backend<B: Backend>(device: &B::Device) -> u64 {
    if let Some(state) = THREAD_SEED.with(|cell| cell.get()) {
        let next = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        THREAD_SEED.with(|cell| cell.set(Some(next)));
        return mix(next);
    }
    Tensor::<B, 1, Int>::random([4], Distribution::Uniform(0.0, 65_536.0), device)
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .expect("a 4-element int tensor reads back")
        .into_iter()
        .fold(0u64, |seed, part| (seed << 16) | (part as u64 & 0xffff))
}

/// `len` mask values: `1 / keep` with probability `keep`, else 0.
fn host_mask(seed: u64, len: usize, keep: f64) -> Vec<f32> {
    let mut mask = vec![0.0f32; len];
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(chunk, values)| fill_mask(seed, chunk as u64, keep, values));
    mask
}

/// Fills `values` with mask factors (`1 / keep` with probability `keep`, else 0) from the
/// counter-based stream `(seed, stream)`: any part of a mask can be drawn, or redrawn, on its
/// own. Shared by [`dropout`] (a stream per chunk) and the fused attention kernel (a stream per
/// row of attention weights).
pub(crate) fn fill_mask(seed: u64, stream: u64, keep: f64, values: &mut [f32]) {
    // Compare the top 32 bits of each draw against keep * 2^32.
    let threshold = (keep * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    let mut state = mix(seed ^ mix(stream));
    for value in values {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        *value = if mix(state) >> 32 < threshold {
            scale
        } else {
            0.0
        };
    }
}

/// SplitMix64's output function: a bijective 64-bit mix.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex, NdArray};
    use burn::nn::DropoutConfig;
    use burn::tensor::backend::AutodiffBackend;

    const N: usize = 200_000;

    /// (fraction zeroed, every kept value equals x / keep) of a dropout of ones.
    fn stats<B: Backend>(values: Tensor<B, 2>, keep: f64) -> (f64, bool) {
        let values: Vec<f32> = values.into_data().convert::<f32>().to_vec().unwrap();
        let zeros = values.iter().filter(|&&v| v == 0.0).count();
        let scaled = values
            .iter()
            .all(|&v| v == 0.0 || (v - (1.0 / keep) as f32).abs() < 1e-6);
        (zeros as f64 / values.len() as f64, scaled)
    }

    fn masks_like_burn<B: AutodiffBackend>() {
        let device = Default::default();
        for prob in [0.1, 0.2, 0.5] {
            let module = DropoutConfig::new(prob).init();
            let ones = || Tensor::<B, 2>::ones([400, N / 400], &device);
            B::seed(&device, 7);
            let (fast_zeroed, fast_scaled) = stats(dropout(&module, ones()), 1.0 - prob);
            let (plain_zeroed, plain_scaled) = stats(dropout_plain(&module, ones()), 1.0 - prob);
            // Binomial sd of the zeroed fraction is sqrt(p(1-p)/N) <= 0.0012: allow 5 sd.
            assert!((fast_zeroed - prob).abs() < 0.006, "{prob}: {fast_zeroed}");
            assert!(
                (plain_zeroed - prob).abs() < 0.006,
                "{prob}: {plain_zeroed}"
            );
            assert!(fast_scaled && plain_scaled);
        }
    }

    #[test]
    fn a_thread_stream_replaces_the_backend_generator() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        let draw = || seed_from_backend::<B>(&device);
        seed_thread_masks(Some(5));
        let first = (draw(), draw());
        seed_thread_masks(Some(5));
        // Other draws from the backend's generator in between change nothing.
        B::seed(&device, 1);
        Tensor::<Flex, 1>::random([8], Distribution::Default, &device);
        assert_eq!((draw(), draw()), first);
        assert_ne!(first.0, first.1);
        seed_thread_masks(Some(6));
        assert_ne!(draw(), first.0);
        // Back to the backend's generator (shared with the other tests: not compared here).
        seed_thread_masks(None);
        assert_ne!(draw(), first.0);
    }

    #[test]
    fn host_masks_match_burns_statistics() {
        masks_like_burn::<Autodiff<Flex>>();
        masks_like_burn::<Autodiff<NdArray<f32>>>();
    }

    #[test]
    fn identity_outside_training_and_at_zero() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::ones([8, 8], &device);
        let out = dropout(&DropoutConfig::new(0.5).init(), x.clone());
        assert!(out.equal(x).all().into_scalar(), "no autodiff: inference");
        let x = Tensor::<Autodiff<Flex>, 2>::ones([8, 8], &device);
        let out = dropout(&DropoutConfig::new(0.0).init(), x.clone());
        assert!(out.equal(x).all().into_scalar());
    }

    #[test]
    fn gradient_is_the_mask() {
        type B = Autodiff<NdArray<f32>>;
        let device = Default::default();
        let x = Tensor::<B, 2>::ones([32, 32], &device).require_grad();
        let out = dropout(&DropoutConfig::new(0.25).init(), x.clone());
        let grads = out.clone().sum().backward();
        let grad: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let forward: Vec<f32> = out.into_data().to_vec().unwrap();
        assert_eq!(
            grad, forward,
            "d(sum(x * mask))/dx = mask, and x is all ones"
        );
    }

    #[test]
    fn mask_does_not_depend_on_chunking_by_threads() {
        let a = host_mask(42, 3 * CHUNK + 5, 0.8);
        let b = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| host_mask(42, 3 * CHUNK + 5, 0.8));
        assert_eq!(a, b);
    }
}
