//! The character-level language model: token (and position) embeddings, the registered layer
//! stack from the config, and an optional `lm_head`, with cross-entropy loss and seeded sampling.
//! The bigram model is the same machinery with no position embedding, no layers and an
//! embedding as wide as the vocabulary.

mod config;
mod conversation;
mod model;
mod sampling;

pub use config::{LayerSummary, ModelConfig, ModelError, ModelSpec, ResolvedLayer};
pub use conversation::{Conversation, ReplyEnd};
pub use model::{cross_entropy, plain_cross_entropy, GenerationCache, LanguageModel};
pub use sampling::{Sampler, Sampling};
pub use tinygpt_kernels::{cpu_kernels, set_cpu_kernels};
pub use tinygpt_layers::{LayerSpec, StepShape, WeightInit, REGISTERED_LAYERS};
