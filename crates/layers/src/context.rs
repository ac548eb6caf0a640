//! What every layer kind shares: the model-wide context a layer resolves against, the error a
//! layer's settings give, and the checks most layers make. The registry and the layer files both
//! use it, so neither imports the other for it.

use crate::WeightInit;

/// What every layer may depend on besides its own settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerContext {
    /// The model's embedding width.
    pub n_embd: usize,
    /// The longest context the model sees.
    pub block_size: usize,
    /// The model's default dropout probability; a layer's own `dropout` overrides it.
    pub dropout: f64,
    pub init: WeightInit,
    /// The init of projections that write into the residual stream (attention's and the
    /// feed-forward's output Linears): `init` scaled down under GPT-2's scheme.
    pub residual_init: WeightInit,
}

impl LayerContext {
    #[cfg(test)]
    pub(crate) fn for_tests(n_embd: usize) -> Self {
        Self {
            n_embd,
            block_size: 8,
            dropout: 0.0,
            init: WeightInit::PyTorch,
            residual_init: WeightInit::PyTorch,
        }
    }
}

/// A layer's settings that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayerError {
    #[error("{layer}: {reason}")]
    Invalid { layer: &'static str, reason: String },
}

impl LayerError {
    /// Prefixes the enclosing layer's name: "Block: MultiHeadAttention: ...".
    pub(crate) fn within(self, outer: &'static str) -> Self {
        match self {
            LayerError::Invalid { layer, reason } => LayerError::Invalid {
                layer: outer,
                reason: format!("{layer}: {reason}"),
            },
        }
    }
}

pub(crate) fn check_positive(
    layer: &'static str,
    field: &str,
    value: usize,
) -> Result<(), LayerError> {
    if value == 0 {
        return Err(LayerError::Invalid {
            layer,
            reason: format!("{field} must be at least 1, got 0"),
        });
    }
    Ok(())
}

pub(crate) fn check_dropout(layer: &'static str, p: f64) -> Result<(), LayerError> {
    if !(0.0..1.0).contains(&p) {
        return Err(LayerError::Invalid {
            layer,
            reason: format!("dropout must be in [0, 1), got {p}"),
        });
    }
    Ok(())
}
