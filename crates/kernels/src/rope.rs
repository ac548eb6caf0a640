//! Rotary position embeddings on the fused `[batch, time, (heads + 2 * kv_heads) * head_size]`
//! projection, in Hugging Face's convention (`rotate_half`): each query and key head is split
//! into two halves `x₁, x₂`, and position `p` rotates the pair `(x₁[i], x₂[i])` by the angle
//! `p · θᵢ`. The values pass through unchanged. [`crate::ops::rope`] plugs it into Burn.

use crate::attention::AttentionDims;
use rayon::prelude::*;

/// `cos(p · θᵢ)` and `sin(p · θᵢ)` for positions `0..positions` and the `half = head_size / 2`
/// frequencies, row by row (`[positions, half]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTable {
    pub half: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RopeTable {
    /// The table for the angles `positions × frequencies` (one frequency per pair).
    pub fn new(frequencies: &[f32], positions: usize) -> Self {
        let half = frequencies.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &frequency in frequencies {
                // f32 throughout, as Hugging Face's `LlamaRotaryEmbedding` computes it.
                let angle = p as f32 * frequency;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Self { half, cos, sin }
    }

    /// Positions the table covers.
    pub fn positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }
}

/// Below this many elements the rows are rotated on one thread.
const PARALLEL_MIN: usize = 1 << 16;

/// The projection with its query and key heads rotated for positions `start..start + time`.
pub fn forward(qkv: &[f32], dims: AttentionDims, table: &RopeTable, start: usize) -> Vec<f32> {
    rotate(qkv, dims, table, start, 1.0)
}

/// The gradient of [`forward`]'s input from its output's: the inverse rotation.
pub fn backward(grad: &[f32], dims: AttentionDims, table: &RopeTable, start: usize) -> Vec<f32> {
    rotate(grad, dims, table, start, -1.0)
}

/// Rotates by the table's angles (`direction` 1) or back (`-1`).
fn rotate(
    input: &[f32],
    dims: AttentionDims,
    table: &RopeTable,
    start: usize,
    direction: f32,
) -> Vec<f32> {
    let (row, d, half) = (dims.qkv_width(), dims.head_size, table.half);
    assert_eq!(
        input.len(),
        dims.qkv_len(),
        "qkv is [batch, time, qkv_width]"
    );
    assert_eq!(2 * half, d, "the table is for heads of {} values", 2 * half);
    assert!(
        start + dims.time <= table.positions(),
        "positions {start}..{} run past the table's {}",
        start + dims.time,
        table.positions()
    );
    let rotated_heads = dims.heads + dims.kv_heads;
    let mut out = input.to_vec();
    let one_row = |(index, out_row): (usize, &mut [f32])| {
        let position = start + index % dims.time;
        let cos = &table.cos[position * half..(position + 1) * half];
        let sin = &table.sin[position * half..(position + 1) * half];
        let in_row = &input[index * row..(index + 1) * row];
        for head in 0..rotated_heads {
            let (x, y) = (&in_row[head * d..(head + 1) * d], head * d);
            let (x1, x2) = x.split_at(half);
            let (out1, out2) = out_row[y..y + d].split_at_mut(half);
            for i in 0..half {
                let (c, s) = (cos[i], direction * sin[i]);
                out1[i] = x1[i] * c - x2[i] * s;
                out2[i] = x2[i] * c + x1[i] * s;
            }
        }
    };
    if input.len() < PARALLEL_MIN {
        out.chunks_mut(row).enumerate().for_each(one_row);
    } else {
        out.par_chunks_mut(row).enumerate().for_each(one_row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_pairs_by_position_times_frequency_and_back() {
        let dims = AttentionDims {
            batch: 2,
            time: 3,
            heads: 2,
            kv_heads: 1,
            head_size: 4,
        };
        let table = RopeTable::new(&[0.5, 0.01], 8);
        let qkv: Vec<f32> = (0..dims.qkv_len())
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let start = 2;
        let out = forward(&qkv, dims, &table, start);
        let row = dims.qkv_width();
        for (index, (a, b)) in qkv.chunks(row).zip(out.chunks(row)).enumerate() {
            let p = (start + index % dims.time) as f64;
            for head in 0..3 {
                for i in 0..2 {
                    let angle = p * [0.5, 0.01][i];
                    let (x1, x2) = (a[head * 4 + i] as f64, a[head * 4 + i + 2] as f64);
                    let want1 = x1 * angle.cos() - x2 * angle.sin();
                    let want2 = x2 * angle.cos() + x1 * angle.sin();
                    assert!((b[head * 4 + i] as f64 - want1).abs() < 1e-6);
                    assert!((b[head * 4 + i + 2] as f64 - want2).abs() < 1e-6);
                }
            }
            // The values are not rotated.
            assert_eq!(&a[12..], &b[12..]);
        }
        // A rotation's inverse is its transpose: the backward pass undoes it.
        let back = backward(&out, dims, &table, start);
        for (x, y) in qkv.iter().zip(&back) {
            assert!((x - y).abs() < 1e-6);
        }
    }
}
