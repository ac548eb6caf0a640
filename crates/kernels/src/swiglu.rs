//! The gate of a SwiGLU MLP on plain slices: `silu(gate) * up` from the `[rows, 2 * hidden]`
//! product that holds the gate's columns and then the up projection's, and its gradient. As
//! tensor ops that is two slices of the product (strided views, which flex walks element by
//! element), a sigmoid and two products, each with its own backward: three quarters of a
//! `llama_char.ron` training step.

use rayon::prelude::*;

/// Below this many values the rows run on one thread.
const PARALLEL_MIN: usize = 1 << 15;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `[rows, hidden]`: `silu(g) * u` for each row's gate `g` and up projection `u`.
pub fn forward(gate_up: &[f32], hidden: usize) -> Vec<f32> {
    let rows = gate_up.len() / (2 * hidden);
    let mut out = vec![0.0f32; rows * hidden];
    let row = |(input, out): (&[f32], &mut [f32])| {
        let (gate, up) = input.split_at(hidden);
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g * sigmoid(g) * u;
        }
    };
    if out.len() < PARALLEL_MIN {
        gate_up
            .chunks(2 * hidden)
            .zip(out.chunks_mut(hidden))
            .for_each(row);
    } else {
        gate_up
            .par_chunks(2 * hidden)
            .zip(out.par_chunks_mut(hidden))
            .for_each(row);
    }
    out
}

/// The gradient with respect to `gate_up` from the output's, `grad_out` (`[rows, hidden]`):
/// `d g = d out · u · s (1 + g (1 − s))` with `s = sigmoid(g)`, and `d u = d out · g s`.
pub fn backward(gate_up: &[f32], grad_out: &[f32], hidden: usize) -> Vec<f32> {
    let mut grad = vec![0.0f32; gate_up.len()];
    let row = |((input, grad_out), grad): ((&[f32], &[f32]), &mut [f32])| {
        let (gate, up) = input.split_at(hidden);
        let (grad_gate, grad_up) = grad.split_at_mut(hidden);
        for i in 0..hidden {
            let (g, u, d) = (gate[i], up[i], grad_out[i]);
            let s = sigmoid(g);
            grad_gate[i] = d * u * (s * (1.0 + g * (1.0 - s)));
            grad_up[i] = d * (g * s);
        }
    };
    if grad_out.len() < PARALLEL_MIN {
        gate_up
            .chunks(2 * hidden)
            .zip(grad_out.chunks(hidden))
            .zip(grad.chunks_mut(2 * hidden))
            .for_each(row);
    } else {
        gate_up
            .par_chunks(2 * hidden)
            .zip(grad_out.par_chunks(hidden))
            .zip(grad.par_chunks_mut(2 * hidden))
            .for_each(row);
    }
    grad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let hidden = 5;
        let gate_up: Vec<f32> = (0..3 * 2 * hidden)
            .map(|i| (i as f32 * 0.7).sin() * 3.0)
            .collect();
        let grad_out: Vec<f32> = (0..3 * hidden).map(|i| (i as f32 * 0.3).cos()).collect();
        let grad = backward(&gate_up, &grad_out, hidden);
        let loss = |x: &[f32]| -> f64 {
            forward(x, hidden)
                .iter()
                .zip(&grad_out)
                .map(|(o, g)| *o as f64 * *g as f64)
                .sum()
        };
        for i in 0..gate_up.len() {
            let (mut up, mut down) = (gate_up.clone(), gate_up.clone());
            up[i] += 1e-2;
            down[i] -= 1e-2;
            let numeric = (loss(&up) - loss(&down)) / 2e-2;
            assert!(
                (grad[i] as f64 - numeric).abs() < 1e-3,
                "{i}: {} vs {numeric}",
                grad[i]
            );
        }
    }
}
