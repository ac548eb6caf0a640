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
            WeightInit::Normal { std } => {
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
            WeightInit::PyTorch => Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            },
            WeightInit::Normal { std } => Initializer::Normal { mean: 0.0, std },
        }
    }
}
