//! [`Conversation`]: generation that goes on across turns of a chat, the keys and values of
//! everything said so far kept between them, so that each turn costs only its new tokens.

use crate::model::{last_position, GenerationCache};
use crate::{LanguageModel, Sampler};
use burn::tensor::backend::Backend;
use std::ops::ControlFlow;

/// The tokens a model has read so far in a conversation, and their cached keys and values.
#[derive(Debug, Clone)]
pub struct Conversation<B: Backend> {
    tokens: Vec<usize>,
    cache: GenerationCache<B>,
}

impl<B: Backend> Default for Conversation<B> {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            cache: GenerationCache::default(),
        }
    }
}

/// Why a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyEnd {
    /// `on_token` said stop (an end-of-turn token, or the reader went away).
    Stopped,
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The conversation filled the model's context (`block_size`): it cannot go on.
    ContextFull,
}

impl<B: Backend> Conversation<B> {
    /// Tokens read so far (whose keys and values are cached).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Continues the conversation whose whole text so far is `context` (the chat template
    /// rendered over every message, ready for the model's turn): the part already read is taken
    /// from the cache, the rest read, then up to `max_new_tokens` sampled and handed to
    /// `on_token`. A reply's last token is left unread: the next turn's text holds it (or,
    /// for an end-of-turn token, the template writes the turn's end itself).
    pub fn reply(
        &mut self,
        model: &LanguageModel<B>,
        context: &[usize],
        max_new_tokens: usize,
        sampler: &mut Sampler,
        mut on_token: impl FnMut(usize) -> ControlFlow<()>,
    ) -> ReplyEnd {
        if context.len() >= model.block_size {
            return ReplyEnd::ContextFull;
        }
        let common = self
            .tokens
            .iter()
            .zip(context)
            .take_while(|(a, b)| a == b)
            .count()
            // The newest token must be read again: its logits are not kept.
            .min(context.len().saturating_sub(1));
        self.cache.truncate(common);
        self.tokens.truncate(common);
        let mut logits = model.last_logits_of(&context[common..], &mut self.cache);
        self.tokens.extend_from_slice(&context[common..]);
        if max_new_tokens == 0 {
            return ReplyEnd::MaxTokens;
        }
        let mut produced = 0;
        loop {
            let token = sampler.sample(&last_position(logits));
            if on_token(token).is_break() {
                return ReplyEnd::Stopped;
            }
            produced += 1;
            // The last token is read with the next turn's text.
            if produced == max_new_tokens {
                return ReplyEnd::MaxTokens;
            }
            if self.tokens.len() + 1 >= model.block_size {
                return ReplyEnd::ContextFull;
            }
            logits = model.last_logits_of(&[token], &mut self.cache);
            self.tokens.push(token);
        }
    }
}
