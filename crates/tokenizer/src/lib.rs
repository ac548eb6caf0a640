//! Tokenization: a [`Tokenizer`] trait with three kinds behind it, chosen in a config
//! ([`TokenizerSpec`]): [`CharTokenizer`], whose vocabulary is the sorted set of distinct
//! characters of the corpus it was fitted on (65 for Tiny Shakespeare), [`Gpt2Tokenizer`],
//! GPT-2's byte-level BPE (50,257 tokens), and [`HfTokenizer`], a Hugging Face model's own
//! `tokenizer.json`. [`TextStream`] turns generated tokens into text without ever printing half a
//! character.

mod gpt2;
pub mod hugging_face;
mod stream;

pub use gpt2::{Gpt2Tokenizer, END_OF_TEXT, GPT2_VOCAB_SIZE};
pub use hugging_face::{ChatMessage, HfTokenizer, HfTokenizerError, SpecialTokens};
pub use stream::TextStream;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Why text could not be tokenized.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenizerError {
    #[error(
        "character {ch:?} (U+{code:04X}) at position {position} is not in the vocabulary of {vocab_size} characters"
    )]
    UnknownChar {
        ch: char,
        code: u32,
        position: usize,
        vocab_size: usize,
    },
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    UnknownToken { id: usize, vocab_size: usize },
    #[error("cannot fit a vocabulary on an empty text")]
    EmptyCorpus,
    #[error("the tokenizer failed: {0}")]
    Encode(String),
    #[error("{0}")]
    Chat(String),
}

/// Maps text to token ids and back.
pub trait Tokenizer {
    fn vocab_size(&self) -> usize;
    fn encode(&self, text: &str) -> Result<Vec<usize>, TokenizerError>;
    /// A prompt's tokens, with whatever special tokens the model expects around a text (a
    /// beginning-of-sequence token for some); the same as [`Tokenizer::encode`] by default.
    fn encode_prompt(&self, text: &str) -> Result<Vec<usize>, TokenizerError> {
        self.encode(text)
    }
    /// The text of `ids`; a byte-level tokenizer replaces bytes that are not valid UTF-8 (a
    /// character cut between tokens) by U+FFFD.
    fn decode(&self, ids: &[usize]) -> Result<String, TokenizerError>;
    /// The bytes of `ids`, which may end inside a character (see [`TextStream`]).
    fn decode_bytes(&self, ids: &[usize]) -> Result<Vec<u8>, TokenizerError> {
        self.decode(ids).map(String::into_bytes)
    }
}

/// Which tokenizer a config asks for: `data: (tokenizer: Gpt2)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenizerSpec {
    /// One token per distinct character of the corpus (the tutorial's).
    #[default]
    Char,
    /// GPT-2's byte-level BPE, 50,257 tokens.
    Gpt2,
    /// The tokenizer of the model `training.init_from` names: its `tokenizer.json` for a Hugging
    /// Face directory (GPT-2's BPE for a GPT-2 one), the run's own for a tinygpt run.
    Pretrained,
}

/// Either tokenizer, as a run stores it (checkpoints keep the character vocabulary; GPT-2's is
/// fixed and named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnyTokenizer {
    Char(CharTokenizer),
    Gpt2(Gpt2Tokenizer),
    HuggingFace(HfTokenizer),
}

impl AnyTokenizer {
    /// The tokenizer `spec` names for `corpus` (which a character vocabulary is fitted on);
    /// `None` for [`TokenizerSpec::Pretrained`], whose tokenizer comes with the model.
    pub fn for_corpus(spec: TokenizerSpec, corpus: &str) -> Result<Option<Self>, TokenizerError> {
        Ok(match spec {
            TokenizerSpec::Char => Some(AnyTokenizer::Char(CharTokenizer::fit(corpus)?)),
            TokenizerSpec::Gpt2 => Some(AnyTokenizer::Gpt2(Gpt2Tokenizer::new())),
            TokenizerSpec::Pretrained => None,
        })
    }

    /// Characters of `text` this tokenizer cannot encode, once each (none for byte-level BPE and
    /// for `tokenizer.json` files, which map anything else to their unknown token).
    pub fn unknown_chars(&self, text: &str) -> Vec<char> {
        match self {
            AnyTokenizer::Char(char) => char.unknown_chars(text),
            AnyTokenizer::Gpt2(_) | AnyTokenizer::HuggingFace(_) => Vec::new(),
        }
    }

    /// What generation starts from when there is no prompt: a newline for a character model
    /// (as the tutorial), `<|endoftext|>` for GPT-2, the model's beginning-of-sequence token (or
    /// else its end token) for a Hugging Face tokenizer (as Hugging Face's `generate`).
    pub fn start_tokens(&self) -> Vec<usize> {
        match self {
            AnyTokenizer::Char(char) => char.encode("\n").unwrap_or_else(|_| vec![0]),
            AnyTokenizer::Gpt2(_) => vec![END_OF_TEXT],
            AnyTokenizer::HuggingFace(hf) => {
                let special = hf.special();
                vec![special
                    .bos_token_id
                    .or(special.eos_token_ids.first().copied())
                    .unwrap_or(0)]
            }
        }
    }

    /// The tokens that end a generation: a Hugging Face model's end-of-sequence tokens (none for
    /// the character and GPT-2 tokenizers, whose generations run their full length).
    pub fn end_tokens(&self) -> &[usize] {
        match self {
            AnyTokenizer::HuggingFace(hf) => &hf.special().eos_token_ids,
            _ => &[],
        }
    }

    /// Describes the tokenizer in one phrase, for summaries.
    pub fn describe(&self) -> String {
        match self {
            AnyTokenizer::Char(char) => format!("{} characters", char.vocab_size()),
            AnyTokenizer::Gpt2(_) => format!("GPT-2 BPE, {GPT2_VOCAB_SIZE} tokens"),
            AnyTokenizer::HuggingFace(hf) => hf.describe(),
        }
    }
}

impl Tokenizer for AnyTokenizer {
    fn vocab_size(&self) -> usize {
        match self {
            AnyTokenizer::Char(t) => t.vocab_size(),
            AnyTokenizer::Gpt2(t) => t.vocab_size(),
            AnyTokenizer::HuggingFace(t) => t.vocab_size(),
        }
    }

    fn encode(&self, text: &str) -> Result<Vec<usize>, TokenizerError> {
        match self {
            AnyTokenizer::Char(t) => t.encode(text),
            AnyTokenizer::Gpt2(t) => t.encode(text),
            AnyTokenizer::HuggingFace(t) => t.encode(text),
        }
    }

    fn encode_prompt(&self, text: &str) -> Result<Vec<usize>, TokenizerError> {
        match self {
            AnyTokenizer::HuggingFace(t) => t.encode_prompt(text),
            other => other.encode(text),
        }
    }

    fn decode(&self, ids: &[usize]) -> Result<String, TokenizerError> {
        match self {
            AnyTokenizer::Char(t) => t.decode(ids),
            AnyTokenizer::Gpt2(t) => t.decode(ids),
            AnyTokenizer::HuggingFace(t) => t.decode(ids),
        }
    }
}

impl From<CharTokenizer> for AnyTokenizer {
    fn from(tokenizer: CharTokenizer) -> Self {
        AnyTokenizer::Char(tokenizer)
    }
}

/// One token per distinct character, ids in character order (as `sorted(set(text))` in the tutorial).
///
/// Serialises as its character list alone; the reverse index is rebuilt on load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CharVocab", into = "CharVocab")]
pub struct CharTokenizer {
    chars: Vec<char>,
    index: HashMap<char, usize>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CharVocab {
    chars: String,
}

impl CharTokenizer {
    /// Fits the vocabulary: the sorted distinct characters of `text`.
    pub fn fit(text: &str) -> Result<Self, TokenizerError> {
        let distinct: BTreeSet<char> = text.chars().collect();
        if distinct.is_empty() {
            return Err(TokenizerError::EmptyCorpus);
        }
        Ok(Self::from_chars(distinct.into_iter().collect()))
    }

    fn from_chars(chars: Vec<char>) -> Self {
        let index = chars.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        Self { chars, index }
    }

    /// The vocabulary, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Every character of `text` that is not in the vocabulary, once each, in order of appearance.
    pub fn unknown_chars(&self, text: &str) -> Vec<char> {
        let mut seen = BTreeSet::new();
        text.chars()
            .filter(|c| !self.index.contains_key(c) && seen.insert(*c))
            .collect()
    }
}

impl Tokenizer for CharTokenizer {
    fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    fn encode(&self, text: &str) -> Result<Vec<usize>, TokenizerError> {
        text.chars()
            .enumerate()
            .map(|(position, ch)| {
                self.index
                    .get(&ch)
                    .copied()
                    .ok_or(TokenizerError::UnknownChar {
                        ch,
                        code: ch as u32,
                        position,
                        vocab_size: self.chars.len(),
                    })
            })
            .collect()
    }

    fn decode(&self, ids: &[usize]) -> Result<String, TokenizerError> {
        ids.iter()
            .map(|&id| {
                self.chars
                    .get(id)
                    .copied()
                    .ok_or(TokenizerError::UnknownToken {
                        id,
                        vocab_size: self.chars.len(),
                    })
            })
            .collect()
    }
}

impl TryFrom<CharVocab> for CharTokenizer {
    type Error = String;

    fn try_from(vocab: CharVocab) -> Result<Self, Self::Error> {
        let chars: Vec<char> = vocab.chars.chars().collect();
        let distinct: BTreeSet<char> = chars.iter().copied().collect();
        if chars.is_empty() {
            return Err("the vocabulary is empty".into());
        }
        if distinct.len() != chars.len() || !chars.is_sorted() {
            return Err("the vocabulary must list distinct characters in sorted order".into());
        }
        Ok(Self::from_chars(chars))
    }
}

impl From<CharTokenizer> for CharVocab {
    fn from(tokenizer: CharTokenizer) -> Self {
        Self {
            chars: tokenizer.chars.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n";

    #[test]
    fn vocabulary_is_sorted_distinct_chars() {
        let tok = CharTokenizer::fit("hello").unwrap();
        assert_eq!(tok.chars(), &['e', 'h', 'l', 'o']);
        assert_eq!(tok.vocab_size(), 4);
        assert_eq!(tok.encode("hello").unwrap(), vec![1, 0, 2, 2, 3]);
    }

    #[test]
    fn encode_decode_round_trip() {
        let tok = CharTokenizer::fit(TEXT).unwrap();
        let ids = tok.encode(TEXT).unwrap();
        assert_eq!(ids.len(), TEXT.chars().count());
        assert!(ids.iter().all(|&id| id < tok.vocab_size()));
        assert_eq!(tok.decode(&ids).unwrap(), TEXT);
    }

    #[test]
    fn unknown_char_is_an_error_naming_it() {
        let tok = CharTokenizer::fit(TEXT).unwrap();
        let err = tok.encode("hear mZ").unwrap_err();
        assert_eq!(
            err,
            TokenizerError::UnknownChar {
                ch: 'Z',
                code: 'Z' as u32,
                position: 6,
                vocab_size: tok.vocab_size()
            }
        );
        assert!(err.to_string().contains("'Z'"), "{err}");
        assert_eq!(tok.unknown_chars("ZaZq!"), vec!['Z', 'q', '!']);
    }

    #[test]
    fn unknown_token_id_is_an_error() {
        let tok = CharTokenizer::fit("ab").unwrap();
        assert_eq!(
            tok.decode(&[0, 2]).unwrap_err(),
            TokenizerError::UnknownToken {
                id: 2,
                vocab_size: 2
            }
        );
    }

    #[test]
    fn empty_corpus_is_an_error() {
        assert_eq!(
            CharTokenizer::fit("").unwrap_err(),
            TokenizerError::EmptyCorpus
        );
    }

    #[test]
    fn serde_round_trip_keeps_the_vocabulary() {
        let tok = CharTokenizer::fit(TEXT).unwrap();
        let json = serde_json::to_string(&tok).unwrap();
        let back: CharTokenizer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tok);
        assert!(serde_json::from_str::<CharTokenizer>(r#"{"chars":"ba"}"#).is_err());
        assert!(serde_json::from_str::<CharTokenizer>(r#"{"chars":""}"#).is_err());
    }

    #[test]
    fn any_tokenizer_reads_both_kinds_and_old_checkpoints() {
        let char = AnyTokenizer::from(CharTokenizer::fit(TEXT).unwrap());
        let gpt2 = AnyTokenizer::Gpt2(Gpt2Tokenizer::new());
        for tok in [&char, &gpt2] {
            let json = serde_json::to_string(tok).unwrap();
            let back: AnyTokenizer = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, tok, "{json}");
        }
        // Checkpoints written before GPT-2 stored the bare character vocabulary.
        let old = serde_json::to_string(&CharTokenizer::fit(TEXT).unwrap()).unwrap();
        assert_eq!(serde_json::from_str::<AnyTokenizer>(&old).unwrap(), char);
        assert!(serde_json::from_str::<AnyTokenizer>(r#"{"bpe":"cl100k"}"#).is_err());
        assert_eq!(char.start_tokens(), char.encode("\n").unwrap());
        assert_eq!(gpt2.start_tokens(), vec![END_OF_TEXT]);
    }
}
