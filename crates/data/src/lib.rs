//! Training data: fetch and cache the corpus ([`corpus`]), split its tokens into train and
//! validation sets and draw seeded random `(x, y)` batches as Int tensors ([`batches`]).

pub mod batches;
pub mod corpus;

pub use batches::{Batch, Split, TokenSplits};
pub use corpus::{
    load_corpus, CorpusSource, DataError, TINY_SHAKESPEARE_SHA256, TINY_SHAKESPEARE_URL,
};
