//! Streaming decode: text out as tokens come in, never half a character.

use crate::{Tokenizer, TokenizerError};

/// Decodes a stream of tokens into text. A byte-level tokenizer may split one character over
/// several tokens (an emoji is often three or four); the bytes of an unfinished character wait
/// here until the tokens that complete it arrive, so what [`TextStream::push`] returns is always
/// whole characters. Bytes that can never become valid UTF-8 come out as U+FFFD, as Python's
/// `errors="replace"`.
pub struct TextStream<'a, T: Tokenizer + ?Sized> {
    tokenizer: &'a T,
    pending: Vec<u8>,
}

impl<'a, T: Tokenizer + ?Sized> TextStream<'a, T> {
    pub fn new(tokenizer: &'a T) -> Self {
        Self {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// The text that `token` completes (possibly empty).
    pub fn push(&mut self, token: usize) -> Result<String, TokenizerError> {
        self.pending
            .extend_from_slice(&self.tokenizer.decode_bytes(&[token])?);
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    text.push_str(valid);
                    self.pending.clear();
                    return Ok(text);
                }
                Err(error) => {
                    let valid = error.valid_up_to();
                    text.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("checked valid"),
                    );
                    match error.error_len() {
                        // The tail may still become a character: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return Ok(text);
                        }
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// What is left when the stream ends: an unfinished character, replaced.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Gpt2Tokenizer;

    #[test]
    fn characters_split_over_tokens_come_out_whole() {
        let tok = Gpt2Tokenizer::new();
        let text = "naïve 👩‍👩‍👧 café 🇫🇷 日本語\n";
        let ids = tok.encode(text).unwrap();
        // At least one character is cut between tokens, or the test shows nothing.
        assert!(ids
            .iter()
            .any(|&id| std::str::from_utf8(&tok.decode_bytes(&[id]).unwrap()).is_err()));
        let mut stream = TextStream::new(&tok);
        let mut out = String::new();
        for &id in &ids {
            let piece = stream.push(id).unwrap();
            assert!(!piece.contains(char::REPLACEMENT_CHARACTER), "{piece:?}");
            out.push_str(&piece);
        }
        assert_eq!(stream.finish(), "");
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_and_unfinished_bytes_are_replaced() {
        let tok = Gpt2Tokenizer::new();
        // `’` is three bytes; its first token holds the lead byte alone.
        let lead = tok.encode("’").unwrap()[0];
        let mut stream = TextStream::new(&tok);
        assert_eq!(stream.push(lead).unwrap(), "");
        assert_eq!(stream.finish(), "\u{FFFD}");
        let mut stream = TextStream::new(&tok);
        assert_eq!(stream.push(lead).unwrap(), "");
        // A letter cannot continue the character: the lead byte is replaced, the letter kept.
        assert_eq!(
            stream.push(tok.encode("a").unwrap()[0]).unwrap(),
            "\u{FFFD}a"
        );
    }
}
