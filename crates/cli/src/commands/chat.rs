//! `tinygpt chat`: talk with an instruct model (SmolLM2-Instruct, Qwen2.5-Instruct): each line
//! read from stdin is a user turn, rendered with the model's own chat template; the reply streams
//! out as it is sampled, and the keys and values of the whole conversation stay cached between
//! turns, so a turn costs only its new tokens.

use super::{generation_backend, sampling};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use tinygpt_model::{ReplyEnd, Sampler};
use tinygpt_tokenizer::{AnyTokenizer, ChatMessage, HfTokenizer, TextStream, Tokenizer};
use tinygpt_train::{open_run, BackendKind};

#[derive(Args)]
pub struct ChatArgs {
    /// A Hugging Face instruct model directory (with a chat_template in tokenizer_config.json),
    /// or a run fine-tuned from one.
    model: PathBuf,
    /// A system message that opens the conversation [default: the template's own, if any].
    #[arg(long)]
    system: Option<String>,
    /// The most tokens one reply may have.
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Sampling temperature: lower is more conservative; 0 always picks the likeliest token.
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long, value_name = "P", default_value_t = 0.9)]
    top_p: f64,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Where the computation runs [default: flex, or the backend the run trained on].
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Go on even when the memory estimate is far over what the machine has.
    #[arg(long)]
    skip_memory_check: bool,
}

/// The tokenizer of a model that can chat: a Hugging Face one with a chat template.
pub fn chat_tokenizer(tokenizer: &AnyTokenizer) -> Result<&HfTokenizer> {
    match tokenizer {
        AnyTokenizer::HuggingFace(hf) if hf.special().chat_template.is_some() => Ok(hf),
        AnyTokenizer::HuggingFace(_) => bail!(
            "this model has no chat_template (tokenizer_config.json or chat_template.jinja): it \
             is a base model, not an instruct one; continue text with `tinygpt generate`"
        ),
        other => bail!(
            "chat needs a Hugging Face instruct model with its tokenizer.json and chat template \
             (e.g. HuggingFaceTB/SmolLM2-135M-Instruct); this model's tokens are {}",
            other.describe()
        ),
    }
}

pub fn run(args: ChatArgs) -> Result<()> {
    let sampling = sampling(args.temperature, args.top_k, Some(args.top_p))?;
    let run = open_run(&args.model)?;
    let tokenizer = chat_tokenizer(&run.tokenizer)?;
    let backend = generation_backend(&run, args.backend, args.skip_memory_check)?;
    let engine = tinygpt_backends::engine(backend, None)?;
    let model = engine
        .load(&run)
        .with_context(|| format!("loading weights from {}", run.path.display()))?;
    let mut sampler = Sampler::new(sampling, args.seed);
    let mut conversation = model.conversation();
    let mut messages: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|text| ChatMessage::new("system", text.as_str()))
        .collect();
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "chatting with {} ({} tokens of context); type a message, Ctrl-D to end",
            run.path.display(),
            run.model.block_size
        );
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading the next message from stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        messages.push(ChatMessage::new("user", line));
        let text = tokenizer.apply_chat_template(&messages, true)?;
        let context = tokenizer.encode(&text)?;
        let mut reply = Vec::new();
        let mut stream = TextStream::after(tokenizer, &context);
        let mut write_error = None;
        let end = conversation.reply(&context, args.max_new_tokens, &mut sampler, &mut |token| {
            if tokenizer.is_end(token) {
                return ControlFlow::Break(());
            }
            reply.push(token);
            let piece = stream.push(token).unwrap_or_default();
            match write!(out, "{piece}").and_then(|()| out.flush()) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    write_error = Some(e);
                    ControlFlow::Break(())
                }
            }
        });
        if let Some(e) = write_error {
            return match e.kind() {
                std::io::ErrorKind::BrokenPipe => Ok(()),
                _ => Err(e.into()),
            };
        }
        writeln!(out, "{}", stream.finish())?;
        messages.push(ChatMessage::new("assistant", tokenizer.decode(&reply)?));
        match end {
            ReplyEnd::Stopped => {}
            ReplyEnd::MaxTokens => eprintln!(
                "(the reply was cut at --max-new-tokens {}; raise it for longer ones)",
                args.max_new_tokens
            ),
            ReplyEnd::ContextFull => {
                eprintln!(
                    "the conversation has filled the model's context of {} tokens ({} read): \
                     it cannot go on; start a new chat",
                    run.model.block_size,
                    conversation.len()
                );
                return Ok(());
            }
        }
    }
    Ok(())
}
