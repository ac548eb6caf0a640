//! Weight initialisation schemes shared by every layer.

use burn::config::Config;
use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;

/// How Linear and Embedding weights start.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum WeightInit {
    /// PyTorch's defaults: Linear weights and biases U(-1/sqrt(d_in), 1/sqrt(d_in)), embeddings
    /// N(0, 1). The tutorial's early stages use these.
    PyTorch,
    /// Weights and embeddings N(0, std), biases zero: gpt.py's `_init_weights` (std 0.02).
    Normal { std: f64 },
    /// GPT-2's (nanoGPT's `_init_weights`): as `Normal`, and every projection into the residual
    /// stream (attention's and the feed-forward's output Linear) at `std / sqrt(2 * n_layer)`,
    /// so the residual stream's variance does not grow with depth.
    Gpt2 { std: f64 },
    /// Every weight and bias zero: the speedrun's init of the projections into the residual
    /// stream and of the lm_head (`model.zero_init`), so each block starts as the identity and
    /// the first logits are uniform. Not a whole-model init: a model of zeros never breaks its
    /// symmetry.
    Zero,
}

impl WeightInit {
    /// A `d_in -> d_out` Linear layer initialised by this scheme.
    pub fn linear<B: Backend>(
        &self,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &B::Device,
    ) -> Linear<B> {
        let config = LinearConfig::new(d_in, d_out).with_bias(bias);
        match *self {
            // Burn's default Linear init is PyTorch's (Kaiming uniform, gain 1/sqrt(3)).
            WeightInit::PyTorch => config.init(device),
            WeightInit::Zero => config.with_initializer(Initializer::Zeros).init(device),
            WeightInit::Normal { std } | WeightInit::Gpt2 { std } => {
                let mut linear = config
                    .with_initializer(Initializer::Normal { mean: 0.0, std })
                    .init(device);
                linear.bias = linear
                    .bias
                    .map(|_| Initializer::Zeros.init([d_out], device));
                linear
            }
        }
    }

    /// The initializer for a `[vocab, dim]` embedding table.
    pub fn embedding(&self) -> Initializer {
        match *self {
            WeightInit::Zero => Initializer::Zeros,
            WeightInit::PyTorch => Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            },
            WeightInit::Normal { std } | WeightInit::Gpt2 { std } => {
                Initializer::Normal { mean: 0.0, std }
            }
        }
    }

    /// The init of the residual projections in a model of `n_layer` blocks.
    pub fn residual(&self, n_layer: usize) -> WeightInit {
        match *self {
            WeightInit::Gpt2 { std } => WeightInit::Normal {
                std: std / (2.0 * n_layer.max(1) as f64).sqrt(),
            },
            other => other,
        }
    }

    /// The standard deviation of a normal init, if this is one.
    pub fn std(&self) -> Option<f64> {
        match *self {
            WeightInit::PyTorch | WeightInit::Zero => None,
            WeightInit::Normal { std } | WeightInit::Gpt2 { std } => Some(std),
        }
    }
}
