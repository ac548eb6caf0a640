//! `tinygpt generate`: continue a prompt with a trained run, a checkpoint, or a Hugging Face
//! model, streaming the text as it is sampled.

use super::{generation_backend, sampling};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use tinygpt_model::Sampler;
use tinygpt_tokenizer::{ChatMessage, TextStream, Tokenizer};
use tinygpt_train::activity::{self, Phase};
use tinygpt_train::memory::human_bytes;
use tinygpt_train::{open_run, BackendKind};

#[derive(Args)]
pub struct GenerateArgs {
    /// Go on even when the memory estimate is far over what the machine has.
    #[arg(long)]
    skip_memory_check: bool,
    /// A run directory written by `tinygpt train`, a .ckpt file, or a Hugging Face directory
    /// (GPT-2 or the Llama family: config.json, weights and, for Llama, tokenizer.json).
    run: PathBuf,
    /// Text to continue [default: a newline for a character model, <|endoftext|> for GPT-2, the
    /// beginning-of-sequence token for a Hugging Face tokenizer]. Only the last block_size
    /// tokens are kept.
    #[arg(long, default_value = "")]
    prompt: String,
    /// The prompt is a user's message to an instruct model: it goes through the model's chat
    /// template, and only the reply is printed (`tinygpt chat` keeps a conversation going).
    #[arg(long)]
    chat: bool,
    /// Go on past the model's end-of-sequence token (which otherwise ends the generation).
    #[arg(long)]
    ignore_eos: bool,
    /// How many tokens (characters for a character model) to generate.
    #[arg(long, default_value_t = 500)]
    max_new_tokens: usize,
    /// Sampling temperature: lower is more conservative; 0 always picks the likeliest token.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Sample only among the k likeliest characters.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling: only among the likeliest characters whose probabilities sum to P.
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Where the computation runs: flex, ndarray, cuda, cuda-bf16 or cuda-f16 [default: the
    /// backend the run trained on, if this build has it; else flex].
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Afterwards, print to stderr how long loading, the prompt (prefill) and the new tokens
    /// took, and the peak memory.
    #[arg(long)]
    stats: bool,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let sampling = sampling(args.temperature, args.top_k, args.top_p)?;
    let run = open_run(&args.run)?;
    // A run trained on a GPU still generates on a machine or build without one.
    let backend = generation_backend(&run, args.backend, args.skip_memory_check)?;
    let unknown = run.tokenizer.unknown_chars(&args.prompt);
    if !unknown.is_empty() {
        let listed: Vec<String> = unknown.iter().map(|c| format!("{c:?}")).collect();
        bail!(
            "the prompt contains characters the model never saw: {} (its vocabulary has {} \
             characters)",
            listed.join(", "),
            run.tokenizer.vocab_size()
        );
    }
    let mut prompt = if args.chat {
        let tokenizer = super::chat::chat_tokenizer(&run.tokenizer)?;
        let message = ChatMessage::new("user", args.prompt.as_str());
        tokenizer.encode(&tokenizer.apply_chat_template(&[message], true)?)?
    } else if args.prompt.is_empty() {
        run.tokenizer.start_tokens()
    } else {
        // With the special tokens the model expects around a text (TinyLlama's `<s>`).
        run.tokenizer.encode_prompt(&args.prompt)?
    };
    if let Some(&token) = prompt.iter().find(|&&t| t >= run.model.vocab_size) {
        bail!(
            "the prompt encodes to token {token}, outside the model's vocabulary of {} tokens",
            run.model.vocab_size
        );
    }
    let block_size = run.model.block_size;
    if prompt.len() > block_size {
        eprintln!(
            "note: the prompt is {} tokens; the model sees only its last {block_size} \
             (block_size)",
            prompt.len()
        );
        prompt.drain(..prompt.len() - block_size);
    }
    let engine = tinygpt_backends::engine(backend, None)?;
    activity::enter(Phase::LoadingCheckpoint, run.step());
    let started = std::time::Instant::now();
    let model = engine
        .load(&run)
        .with_context(|| format!("loading weights from {}", run.path.display()))?;
    let loaded = started.elapsed();
    let mut sampler = Sampler::new(sampling, args.seed);
    activity::enter(Phase::Sampling, run.step());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_error = None;
    if !args.chat {
        write!(out, "{}", args.prompt)?;
    }
    let end_tokens = if args.ignore_eos {
        &[][..]
    } else {
        run.tokenizer.end_tokens()
    };
    // Byte-level tokens may end mid-character: print whole characters only.
    let mut text = TextStream::after(&run.tokenizer, &prompt);
    let generating = std::time::Instant::now();
    let mut first_token = None;
    let mut produced = 0usize;
    model.generate(&prompt, args.max_new_tokens, &mut sampler, &mut |token| {
        first_token.get_or_insert_with(|| generating.elapsed());
        produced += 1;
        if end_tokens.contains(&token) {
            return ControlFlow::Break(());
        }
        let piece = text.push(token).unwrap_or_default();
        match write!(out, "{piece}").and_then(|_| out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    });
    let generated = generating.elapsed();
    if args.stats {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let first = first_token.unwrap_or(generated);
        eprintln!(
            "stats: weights loaded in {:.0} ms; prompt of {} tokens to the first new token \
             {:.1} ms; {produced} new tokens in {:.1} ms ({:.1} tokens/s; {:.2} ms per token \
             after the first); peak resident memory {}",
            ms(loaded),
            prompt.len(),
            ms(first),
            ms(generated),
            produced as f64 / generated.as_secs_f64().max(1e-9),
            ms(generated - first) / produced.saturating_sub(1).max(1) as f64,
            tinygpt_train::memory::resident_memory()
                .map_or("unknown".into(), |(peak, _)| human_bytes(peak as f64))
        );
    }
    let rest = text.finish();
    match write_error.map_or_else(|| writeln!(out, "{rest}"), Err) {
        // A closed pipe (`| head`) is a normal way to stop reading.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(()),
    }
}
