//! Token splits and random `(x, y)` training windows, as the tutorial's `get_batch`.

use crate::DataError;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use rand::Rng;

/// Which part of the corpus to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// A batch of `batch_size` windows: `targets` is `inputs` shifted left by one token.
#[derive(Debug, Clone)]
pub struct Batch<B: Backend> {
    /// `[batch_size, block_size]` token ids.
    pub inputs: Tensor<B, 2, Int>,
    /// `[batch_size, block_size]`: the token that follows each input position.
    pub targets: Tensor<B, 2, Int>,
}

/// The corpus tokens, split into a training head and a validation tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSplits {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

impl TokenSplits {
    /// The first `floor(train_fraction * len)` tokens train, the rest validate (the tutorial uses 0.9).
    pub fn new(tokens: &[usize], train_fraction: f64) -> Result<Self, DataError> {
        if !(train_fraction > 0.0 && train_fraction < 1.0) {
            return Err(DataError::BadFraction(train_fraction));
        }
        let n = (train_fraction * tokens.len() as f64) as usize;
        let to_u32 = |s: &[usize]| s.iter().map(|&t| t as u32).collect();
        Ok(Self {
            train: to_u32(&tokens[..n]),
            val: to_u32(&tokens[n..]),
        })
    }

    pub fn get(&self, split: Split) -> &[u32] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// Checks that both splits hold at least one `block_size + 1` window.
    pub fn check_block_size(&self, block_size: usize) -> Result<(), DataError> {
        for split in [Split::Train, Split::Val] {
            let tokens = self.get(split).len();
            if tokens <= block_size {
                return Err(DataError::SplitTooSmall {
                    split: split.name(),
                    tokens,
                    block_size,
                });
            }
        }
        Ok(())
    }

    /// Draws `batch_size` windows at uniformly random offsets in `[0, len - block_size)`.
    ///
    /// Panics if the split is too small; call [`TokenSplits::check_block_size`] first.
    pub fn batch<B: Backend>(
        &self,
        split: Split,
        batch_size: usize,
        block_size: usize,
        rng: &mut impl Rng,
        device: &B::Device,
    ) -> Batch<B> {
        self.batch_rows(split, batch_size, 0..batch_size, block_size, rng, device)
    }

    /// Rows `rows` of the batch [`TokenSplits::batch`] would draw: the generator advances past
    /// all `batch_size` windows, so peers that each take their rows of the same draw together
    /// train on exactly the one-device batch.
    pub fn batch_rows<B: Backend>(
        &self,
        split: Split,
        batch_size: usize,
        rows: std::ops::Range<usize>,
        block_size: usize,
        rng: &mut impl Rng,
        device: &B::Device,
    ) -> Batch<B> {
        let data = self.get(split);
        assert!(
            data.len() > block_size,
            "split too small: call check_block_size first"
        );
        assert!(rows.end <= batch_size, "rows {rows:?} outside the batch");
        let mut inputs = Vec::with_capacity(rows.len() * block_size);
        let mut targets = Vec::with_capacity(rows.len() * block_size);
        for row in 0..batch_size {
            let start = rng.random_range(0..data.len() - block_size);
            if !rows.contains(&row) {
                continue;
            }
            let window = &data[start..start + block_size + 1];
            inputs.extend(window[..block_size].iter().map(|&t| t as i64));
            targets.extend(window[1..].iter().map(|&t| t as i64));
        }
        Batch {
            inputs: id_tensor(inputs, [rows.len(), block_size], device),
            targets: id_tensor(targets, [rows.len(), block_size], device),
        }
    }

    /// The number of whole non-overlapping `block_size` windows in a split (see
    /// [`TokenSplits::windows`]).
    pub fn window_count(&self, split: Split, block_size: usize) -> usize {
        self.get(split).len().saturating_sub(1) / block_size
    }

    /// Every non-overlapping `block_size` window of the split in order, `batch_size` windows per
    /// batch (the last batch may hold fewer): each token of the split is predicted once, from
    /// the context since its window began. The mean loss over these is the split's loss that
    /// random batches only estimate. The last `(len - 1) % block_size` tokens make no window.
    pub fn windows<'a, B: Backend>(
        &'a self,
        split: Split,
        block_size: usize,
        batch_size: usize,
        device: &'a B::Device,
    ) -> impl Iterator<Item = Batch<B>> + 'a {
        let data = self.get(split);
        let count = self.window_count(split, block_size);
        (0..count).step_by(batch_size.max(1)).map(move |first| {
            let rows = batch_size.max(1).min(count - first);
            let start = first * block_size;
            let ids = |offset: usize| {
                let ids = data[start + offset..start + offset + rows * block_size]
                    .iter()
                    .map(|&t| t as i64)
                    .collect();
                id_tensor(ids, [rows, block_size], device)
            };
            Batch {
                inputs: ids(0),
                targets: ids(1),
            }
        })
    }
}

/// Token ids as an int tensor of `shape` on `device`.
fn id_tensor<B: Backend>(
    ids: Vec<i64>,
    shape: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(ids, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    // flex is compiled once in burn-flex; ndarray's generic operations would be compiled here.
    type B = burn::backend::Flex;

    fn ids(t: Tensor<B, 2, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().to_vec().unwrap()
    }

    #[test]
    fn split_is_ninety_ten() {
        let tokens: Vec<usize> = (0..2_000).map(|i| i % 7).collect();
        let tokens_1000 = &tokens[..1_000];
        let splits = TokenSplits::new(tokens_1000, 0.9).unwrap();
        assert_eq!(splits.train.len(), 900);
        assert_eq!(splits.val.len(), 100);
        assert_eq!(splits.val[0], (900 % 7) as u32);
        let odd = TokenSplits::new(&tokens[..1_115], 0.9).unwrap();
        assert_eq!(odd.train.len(), 1_003);
        assert!(TokenSplits::new(&tokens, 1.0).is_err());
        assert!(TokenSplits::new(&tokens, 0.0).is_err());
    }

    #[test]
    fn peers_rows_put_together_are_the_whole_batch() {
        let tokens: Vec<usize> = (0..500).collect();
        let splits = TokenSplits::new(&tokens, 0.9).unwrap();
        let device = Default::default();
        let whole = splits.batch::<B>(Split::Train, 6, 8, &mut StdRng::seed_from_u64(3), &device);
        let mut rows = Vec::new();
        for share in [0..2, 2..4, 4..6] {
            let mut rng = StdRng::seed_from_u64(3);
            let part = splits.batch_rows::<B>(Split::Train, 6, share, 8, &mut rng, &device);
            assert_eq!(part.inputs.dims(), [2, 8]);
            rows.extend(ids(part.inputs));
            // The generator ends where the whole batch's draw ends: the next draw agrees.
            let mut after_whole = StdRng::seed_from_u64(3);
            splits.batch::<B>(Split::Train, 6, 8, &mut after_whole, &device);
            assert_eq!(rng.random::<u64>(), after_whole.random::<u64>());
        }
        assert_eq!(rows, ids(whole.inputs));
    }

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        // Token i is i itself, so every window is a run of consecutive integers.
        let tokens: Vec<usize> = (0..500).collect();
        let splits = TokenSplits::new(&tokens, 0.9).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let device = Default::default();
        for split in [Split::Train, Split::Val] {
            let batch = splits.batch::<B>(split, 16, 8, &mut rng, &device);
            assert_eq!(batch.inputs.dims(), [16, 8]);
            let (x, y) = (ids(batch.inputs), ids(batch.targets));
            let range = match split {
                Split::Train => 0..450,
                Split::Val => 450..500,
            };
            for (row_x, row_y) in x.chunks(8).zip(y.chunks(8)) {
                for j in 0..8 {
                    assert_eq!(row_y[j], row_x[j] + 1);
                    if j > 0 {
                        assert_eq!(row_x[j], row_x[j - 1] + 1);
                    }
                    assert!(range.contains(&(row_y[j] as usize)));
                }
            }
        }
    }

    #[test]
    fn batches_are_seeded() {
        let tokens: Vec<usize> = (0..500).map(|i| (i * 31) % 17).collect();
        let splits = TokenSplits::new(&tokens, 0.9).unwrap();
        let device = Default::default();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            ids(splits
                .batch::<B>(Split::Train, 4, 8, &mut rng, &device)
                .inputs)
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn windows_tile_the_split_once() {
        // Token i is i itself; the val split is 450..500 (50 tokens: 6 windows of 8, 1 left).
        let tokens: Vec<usize> = (0..500).collect();
        let splits = TokenSplits::new(&tokens, 0.9).unwrap();
        let device = Default::default();
        assert_eq!(splits.window_count(Split::Val, 8), 6);
        let batches: Vec<_> = splits.windows::<B>(Split::Val, 8, 4, &device).collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].inputs.dims(), [4, 8]);
        assert_eq!(batches[1].inputs.dims(), [2, 8]);
        let inputs: Vec<i64> = batches.iter().flat_map(|b| ids(b.inputs.clone())).collect();
        let targets: Vec<i64> = batches
            .iter()
            .flat_map(|b| ids(b.targets.clone()))
            .collect();
        assert_eq!(inputs, (450..498).collect::<Vec<i64>>());
        assert_eq!(targets, (451..499).collect::<Vec<i64>>());
        // A split of exactly block_size + 1 tokens is one window.
        let small = TokenSplits::new(&tokens[..90], 0.9).unwrap();
        assert_eq!(small.window_count(Split::Val, 8), 1);
        assert_eq!(small.window_count(Split::Val, 9), 0);
    }

    #[test]
    fn block_size_must_fit_both_splits() {
        let tokens: Vec<usize> = (0..100).collect();
        let splits = TokenSplits::new(&tokens, 0.9).unwrap();
        assert!(splits.check_block_size(9).is_ok());
        let err = splits.check_block_size(10).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::SplitTooSmall {
                    split: "val",
                    tokens: 10,
                    block_size: 10
                }
            ),
            "{err}"
        );
    }
}
