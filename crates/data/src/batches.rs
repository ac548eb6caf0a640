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
        let data = self.get(split);
        assert!(
            data.len() > block_size,
            "split too small: call check_block_size first"
        );
        let mut inputs = Vec::with_capacity(batch_size * block_size);
        let mut targets = Vec::with_capacity(batch_size * block_size);
        for _ in 0..batch_size {
            let start = rng.random_range(0..data.len() - block_size);
            let window = &data[start..start + block_size + 1];
            inputs.extend(window[..block_size].iter().map(|&t| t as i64));
            targets.extend(window[1..].iter().map(|&t| t as i64));
        }
        let tensor = |ids: Vec<i64>| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [batch_size, block_size]), device)
        };
        Batch {
            inputs: tensor(inputs),
            targets: tensor(targets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use rand::{rngs::StdRng, SeedableRng};

    type B = NdArray<f32>;

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
