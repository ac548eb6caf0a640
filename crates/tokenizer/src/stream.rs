//! Streaming decode: text out as tokens come in, never half a character.

use crate::{Tokenizer, TokenizerError};

/// Decodes a stream of tokens into text. A byte-level tokenizer may split one character over
/// several tokens (an emoji is often three or four), and a SentencePiece-style one drops the
/// space that opens a decoded text (tokenizers#1141), so tokens are not decoded one at a time:
/// the stream decodes a window of the newest tokens and hands out what it adds to the text, once
/// that ends with a whole character (as candle's `TokenOutputStream`). What [`TextStream::push`]
/// returns is therefore always whole characters; bytes that can never become valid UTF-8 come
/// out as U+FFFD, as Python's `errors="replace"`.
pub struct TextStream<'a, T: Tokenizer + ?Sized> {
    tokenizer: &'a T,
    tokens: Vec<usize>,
    /// The window starts here; `tokens[start..emitted]` is text already handed out.
    start: usize,
    emitted: usize,
}

/// Context tokens a stream keeps before the first new one, so that decoding the window gives
/// the new token's leading space.
const CONTEXT: usize = 4;

impl<'a, T: Tokenizer + ?Sized> TextStream<'a, T> {
    pub fn new(tokenizer: &'a T) -> Self {
        Self::after(tokenizer, &[])
    }

    /// A stream of the tokens that follow `context` (a prompt already printed).
    pub fn after(tokenizer: &'a T, context: &[usize]) -> Self {
        let mut tokens = context[context.len().saturating_sub(CONTEXT)..].to_vec();
        // A context that does not decode to whole characters would only garble the window.
        let whole = tokenizer
            .decode(&tokens)
            .is_ok_and(|text| !text.ends_with(char::REPLACEMENT_CHARACTER));
        if !whole {
            tokens.clear();
        }
        Self {
            tokenizer,
            emitted: tokens.len(),
            tokens,
            start: 0,
        }
    }

    fn decode(&self, from: usize, to: usize) -> Result<String, TokenizerError> {
        self.tokenizer.decode(&self.tokens[from..to])
    }

    /// The text that `token` completes (possibly empty).
    pub fn push(&mut self, token: usize) -> Result<String, TokenizerError> {
        let before = self.decode(self.start, self.emitted)?;
        self.tokens.push(token);
        let text = self.decode(self.start, self.tokens.len())?;
        if text.len() > before.len()
            && text.is_char_boundary(before.len())
            && !text.ends_with(char::REPLACEMENT_CHARACTER)
        {
            let new = text[before.len()..].to_string();
            self.start = self.emitted;
            self.emitted = self.tokens.len();
            Ok(new)
        } else {
            Ok(String::new())
        }
    }

    /// What is left when the stream ends: an unfinished character, replaced.
    pub fn finish(self) -> String {
        let before = self.decode(self.start, self.emitted).unwrap_or_default();
        let text = self
            .decode(self.start, self.tokens.len())
            .unwrap_or_default();
        text.get(before.len()..).unwrap_or_default().to_string()
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
