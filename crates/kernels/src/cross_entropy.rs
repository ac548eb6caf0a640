//! Mean cross-entropy of rows of logits against target ids, and its gradient, on plain slices:
//! the forward pass keeps the softmax it computes on the way, so the gradient is
//! `softmax - one_hot(target)` scaled by the mean, with no second exp.

use crate::simd;

/// `(mean over rows of -log softmax(row)[target], the softmax if `keep_softmax`)` for `logits`
/// of `targets.len()` rows of `vocab` values.
pub fn forward(
    logits: &[f32],
    vocab: usize,
    targets: &[usize],
    keep_softmax: bool,
) -> (f32, Option<Vec<f32>>) {
    let rows = targets.len();
    let mut probs = logits.to_vec();
    let mut log_sum_exp = vec![0.0f32; rows];
    simd::softmax_rows(&mut probs, vocab, false, &mut log_sum_exp);
    // -log softmax(x)[target] = log_sum_exp - x[target]
    let total: f64 = logits
        .chunks(vocab)
        .zip(&log_sum_exp)
        .zip(targets)
        .map(|((row, lse), &target)| (lse - row[target]) as f64)
        .sum();
    ((total / rows as f64) as f32, keep_softmax.then_some(probs))
}

/// The gradient with respect to the logits, given the forward pass's softmax and the loss's own
/// incoming gradient.
pub fn backward(probs: &[f32], vocab: usize, targets: &[usize], grad_loss: f32) -> Vec<f32> {
    let scale = grad_loss / targets.len() as f32;
    let mut grad: Vec<f32> = probs.iter().map(|p| p * scale).collect();
    for (row, &target) in grad.chunks_mut(vocab).zip(targets) {
        row[target] -= scale;
    }
    grad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_formula() {
        // Two rows over a vocabulary of 3.
        let logits = [1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0];
        let targets = [2, 0];
        let (loss, probs) = forward(&logits, 3, &targets, true);
        let row_loss = |row: &[f32], t: usize| {
            let sum: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
            sum.ln() - row[t] as f64
        };
        let expected = (row_loss(&logits[..3], 2) + row_loss(&logits[3..], 0)) / 2.0;
        assert!(
            (loss as f64 - expected).abs() < 1e-6,
            "{loss} vs {expected}"
        );
        let probs = probs.unwrap();
        let grad = backward(&probs, 3, &targets, 1.0);
        // Each row's gradient sums to zero, and the target's entry is (p - 1) / rows.
        for row in grad.chunks(3) {
            assert!(row.iter().sum::<f32>().abs() < 1e-6);
        }
        assert!((grad[3] - (1.0 / 3.0 - 1.0) / 2.0).abs() < 1e-6);
    }
}
