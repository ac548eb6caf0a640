//! The feed-forward layer's non-linearity: the tutorial's ReLU, GPT-2's GELU, or the speedrun's
//! ReLU².

use burn::config::Config;
use burn::tensor::{activation, backend::Backend, Tensor};

/// What a `FeedForward` (or `Block`) applies between its two Linears.
///
/// OpenAI's GPT-2 and Hugging Face's `GPT2LMHeadModel` (`activation_function: "gelu_new"`) use the
/// tanh approximation, [`Activation::GeluTanh`]; nanoGPT's `model.py` has used PyTorch's exact
/// `nn.GELU()` ([`Activation::Gelu`]) since 2023, which differs from it by up to about 5e-4.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(0, x)`, the tutorial's.
    Relu,
    /// `x Φ(x)` with the exact normal CDF (erf).
    Gelu,
    /// `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))`, GPT-2's.
    GeluTanh,
    /// `max(0, x)²` (So et al., Primer, 2021), the GPT speedrun's: as cheap as ReLU, and its
    /// gradient grows with the input instead of stepping.
    ReluSquared,
}

// Burn's `Config` derive re-emits the enum without `#[default]`, so `derive(Default)` cannot be used.
#[allow(clippy::derivable_impls)]
impl Default for Activation {
    fn default() -> Self {
        Activation::Relu
    }
}

impl Activation {
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Relu => activation::relu(x),
            Activation::Gelu => activation::gelu(x),
            Activation::GeluTanh => gelu_tanh(x),
            Activation::ReluSquared => activation::relu(x).square(),
        }
    }

    /// Hugging Face's name for it (`activation_function` in a GPT-2 `config.json`).
    pub fn hugging_face_name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_new",
            Activation::ReluSquared => "relu2",
        }
    }

    /// The activation a Hugging Face `activation_function` names, if tinygpt has it.
    pub fn from_hugging_face(name: &str) -> Option<Self> {
        match name {
            "relu" => Some(Activation::Relu),
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            "relu2" => Some(Activation::ReluSquared),
            _ => None,
        }
    }
}

/// `0.5 x (1 + tanh(sqrt(2/π) x (1 + 0.044715 x²)))`: Burn's `gelu_approximate` with `x³` as
/// `x · x²` instead of `powf(x, 3)` (libm's powf was 4% of a GPT-2 prefill).
fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
    let inner = x.clone() * (x.clone().square() * (0.044715 * SQRT_2_OVER_PI) + SQRT_2_OVER_PI);
    x * (inner.tanh() + 1.0) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TestBackend;
    use burn::tensor::TensorData;

    #[test]
    fn values_match_pytorch() {
        let x = Tensor::<TestBackend, 1>::from_data(
            TensorData::from([-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]),
            &Default::default(),
        );
        let run =
            |a: Activation| -> Vec<f32> { a.forward(x.clone()).into_data().to_vec().unwrap() };
        // torch.nn.functional.gelu(x) and gelu(x, approximate="tanh") in float64.
        let exact: [f64; 7] = [
            -0.004049694,
            -0.15865525,
            -0.15426877,
            0.0,
            0.34573123,
            0.84134475,
            2.9959503,
        ];
        let tanh: [f64; 7] = [
            -0.0036373920,
            -0.15880801,
            -0.15428599,
            0.0,
            0.34571401,
            0.84119199,
            2.9963627,
        ];
        for (got, want) in [
            (run(Activation::Gelu), exact),
            (run(Activation::GeluTanh), tanh),
        ] {
            for (g, w) in got.iter().zip(want) {
                assert!((*g as f64 - w).abs() < 2e-6, "{got:?} vs {want:?}");
            }
        }
        assert_eq!(run(Activation::Relu), [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 3.0]);
        assert_eq!(
            run(Activation::ReluSquared),
            [0.0, 0.0, 0.0, 0.0, 0.25, 1.0, 9.0]
        );
    }
}
