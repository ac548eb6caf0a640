//! GPT-2's byte-level BPE, through `tiktoken-rs` (its `r50k_base`, compiled into the binary).

use crate::{Tokenizer, TokenizerError};
use serde::{Deserialize, Serialize};
use tiktoken_rs::CoreBPE;

/// GPT-2's vocabulary: 256 bytes, 50,000 merges and `<|endoftext|>`.
pub const GPT2_VOCAB_SIZE: usize = 50_257;
/// `<|endoftext|>`, which separates documents in GPT-2's training data.
pub const END_OF_TEXT: usize = 50_256;

/// GPT-2's tokenizer, the same ids as OpenAI's `encoder.json` and Hugging Face's
/// `GPT2TokenizerFast`. The literal text `<|endoftext|>` encodes to [`END_OF_TEXT`], as Hugging
/// Face's tokenizer does; everything else is ordinary text, so any string encodes.
///
/// Serialises as `{"bpe": "gpt2"}`: the vocabulary is fixed, only its name is stored.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(try_from = "Gpt2Name", into = "Gpt2Name")]
pub struct Gpt2Tokenizer {
    bpe: &'static CoreBPE,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gpt2Name {
    bpe: String,
}

const NAME: &str = "gpt2";

impl Gpt2Tokenizer {
    pub fn new() -> Self {
        Self {
            bpe: tiktoken_rs::r50k_base_singleton(),
        }
    }

    fn check(&self, ids: &[usize]) -> Result<Vec<u32>, TokenizerError> {
        ids.iter()
            .map(|&id| {
                if id < GPT2_VOCAB_SIZE {
                    Ok(id as u32)
                } else {
                    Err(TokenizerError::UnknownToken {
                        id,
                        vocab_size: GPT2_VOCAB_SIZE,
                    })
                }
            })
            .collect()
    }
}

impl Default for Gpt2Tokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gpt2Tokenizer")
    }
}

impl PartialEq for Gpt2Tokenizer {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Gpt2Tokenizer {}

impl TryFrom<Gpt2Name> for Gpt2Tokenizer {
    type Error = String;

    fn try_from(name: Gpt2Name) -> Result<Self, Self::Error> {
        if name.bpe == NAME {
            Ok(Self::new())
        } else {
            Err(format!(
                "unknown BPE vocabulary {:?}: this build knows {NAME:?}",
                name.bpe
            ))
        }
    }
}

impl From<Gpt2Tokenizer> for Gpt2Name {
    fn from(_: Gpt2Tokenizer) -> Self {
        Self { bpe: NAME.into() }
    }
}

impl Tokenizer for Gpt2Tokenizer {
    fn vocab_size(&self) -> usize {
        GPT2_VOCAB_SIZE
    }

    fn encode(&self, text: &str) -> Result<Vec<usize>, TokenizerError> {
        Ok(self
            .bpe
            .encode_with_special_tokens(text)
            .into_iter()
            .map(|id| id as usize)
            .collect())
    }

    fn decode(&self, ids: &[usize]) -> Result<String, TokenizerError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    fn decode_bytes(&self, ids: &[usize]) -> Result<Vec<u8>, TokenizerError> {
        let ids = self.check(ids)?;
        // Every id below the vocabulary size has bytes: decoding cannot fail after the check.
        self.bpe
            .decode_bytes(&ids)
            .map_err(|_| TokenizerError::UnknownToken {
                id: GPT2_VOCAB_SIZE,
                vocab_size: GPT2_VOCAB_SIZE,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids_and_round_trip() {
        let tok = Gpt2Tokenizer::new();
        // "Hello world" is 15496, 995 in GPT-2's encoder.json.
        assert_eq!(tok.encode("Hello world").unwrap(), vec![15496, 995]);
        assert_eq!(
            tok.encode("a<|endoftext|>b").unwrap(),
            vec![64, END_OF_TEXT, 65]
        );
        let text = "Ünïcödé 👩‍👩‍👧 and\n\n  spaces\t!";
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert_eq!(tok.decode(&[END_OF_TEXT]).unwrap(), "<|endoftext|>");
        assert_eq!(
            tok.decode(&[GPT2_VOCAB_SIZE]).unwrap_err(),
            TokenizerError::UnknownToken {
                id: GPT2_VOCAB_SIZE,
                vocab_size: GPT2_VOCAB_SIZE
            }
        );
    }
}
