//! What a layer costs before it exists: its parameters, and the activations a training step
//! keeps for the backward pass, counted from the config alone, so that inspecting a config or
//! refusing one too big for the machine never allocates the model.

/// Parameters of a `d_in -> d_out` Linear (weight, and bias if any). Saturates rather than
/// overflowing: a count near `u64::MAX` is far past any machine, which is all it must say.
pub fn linear_params(d_in: usize, d_out: usize, bias: bool) -> u64 {
    (d_in as u64)
        .saturating_mul(d_out as u64)
        .saturating_add(if bias { d_out as u64 } else { 0 })
}

/// The shape of one training step's forward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepShape {
    pub batch: usize,
    pub time: usize,
    /// Attention runs the fused CPU kernel (flex, ndarray), which keeps one `time × time` matrix
    /// per head for the backward pass, where the plain tensor-op path keeps several.
    pub fused_attention: bool,
}

/// Values (f32 each) that autodiff keeps per element of the `[batch, heads, time, time]`
/// attention weights, as measured on the CPU backends (see README, "Memory"): the plain path keeps
/// the scores, their masked and exponentiated forms and the softmax, plus the dropout mask and the
/// dropped weights when dropout is on; the fused kernel keeps the weights, and the backward pass
/// allocates two more matrices of their size.
const PLAIN_VALUES_PER_WEIGHT: f64 = 6.0;
const PLAIN_DROPOUT_VALUES_PER_WEIGHT: f64 = 2.0;
const FUSED_VALUES_PER_WEIGHT: f64 = 3.0;

impl StepShape {
    /// Positions in the batch, `batch * time`.
    pub fn tokens(&self) -> f64 {
        self.batch as f64 * self.time as f64
    }

    /// Values kept for the causal attention of `heads` heads with the given dropout.
    pub fn attention_weights(&self, heads: usize, dropout: f64) -> f64 {
        let weights = self.tokens() * self.time as f64 * heads as f64;
        let per_weight = if self.fused_attention {
            FUSED_VALUES_PER_WEIGHT
        } else if dropout > 0.0 {
            PLAIN_VALUES_PER_WEIGHT + PLAIN_DROPOUT_VALUES_PER_WEIGHT
        } else {
            PLAIN_VALUES_PER_WEIGHT
        };
        weights * per_weight
    }

    /// Values kept for a dropout of `width` features per position: its mask, when it is on.
    pub fn dropout_mask(&self, width: usize, dropout: f64) -> f64 {
        if dropout > 0.0 {
            self.tokens() * width as f64
        } else {
            0.0
        }
    }
}

/// Values kept by causal self-attention from `d_input` features (a `Head` or
/// `MultiHeadAttention`): the fused query/key/value projection, the attention weights, the heads'
/// merged output, and the output projection with its dropout when there is one.
pub(crate) fn attention_activations(
    step: &StepShape,
    heads: usize,
    head_size: usize,
    projection_to: Option<usize>,
    dropout: f64,
) -> f64 {
    let width = (heads * head_size) as f64;
    let tokens = step.tokens();
    let projected = projection_to.map_or(0.0, |d_output| {
        tokens * d_output as f64 + step.dropout_mask(d_output, dropout)
    });
    4.0 * tokens * width + step.attention_weights(heads, dropout) + projected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        assert_eq!(linear_params(3, 4, true), 16);
        assert_eq!(linear_params(usize::MAX, usize::MAX, true), u64::MAX);
    }
}
