//! `tinygpt`: inspect a config or model, train or fine-tune a GPT, generate text, evaluate, and
//! export to Hugging Face's formats. Each command is a module of [`commands`].

mod commands;

use clap::{Parser, Subcommand};
use commands::{attention, bench, chat, eval, export, generate, info, plot, train, watch};
use std::process::ExitCode;

/// Train and sample GPT language models (the "GPT from scratch" tutorial's character models,
/// from a bigram table to a Transformer, GPT-2 and the Llama family with their pretrained
/// weights) on the CPU or a CUDA GPU.
#[derive(Parser)]
#[command(name = "tinygpt", version, propagate_version = true)]
#[command(after_help = "Examples:\n  tinygpt train configs/transformer.ron\n  \
    tinygpt generate runs/transformer --prompt \"ROMEO:\"\n  \
    tinygpt generate models/gpt2 --prompt \"ROMEO:\" --temperature 0.8 --top-k 200\n  \
    tinygpt train configs/finetune_shakespeare.ron\n  \
    tinygpt eval runs/finetune_shakespeare\n  \
    tinygpt export runs/finetune_shakespeare --hf out/my-gpt2\n  \
    tinygpt generate models/smollm2-135m --prompt \"The capital of France is\"\n  \
    tinygpt chat models/smollm2-135m-instruct")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a config's or a model's architecture, layer by layer, with parameter counts, and the
    /// memory training and generation will need (all from the config: no weights are built).
    Info(info::InfoArgs),
    /// Train the model a config describes; writes checkpoints, metrics.csv and a sample to the
    /// run directory.
    Train(train::TrainArgs),
    /// Generate text from a trained run (its newest checkpoint), a checkpoint file, or a Hugging
    /// Face directory (GPT-2, Llama, Qwen2, Mistral).
    Generate(generate::GenerateArgs),
    /// Chat with an instruct model (its chat template, the conversation's keys and values cached
    /// between turns): one user message per line of stdin, the replies streamed to stdout.
    Chat(chat::ChatArgs),
    /// Loss and perplexity of a model on the whole validation split of a corpus.
    Eval(eval::EvalArgs),
    /// Write a GPT-2- or Llama-shaped model as a Hugging Face directory (config.json,
    /// model.safetensors, and a Llama's tokenizer files) that `from_pretrained` loads.
    Export(export::ExportArgs),
    /// Draw runs side by side (one curve each) by step, seconds or tokens seen, on any metric
    /// of their metrics.csv, into a .png or .svg. Every run also draws its own loss.png.
    Plot(plot::PlotArgs),
    /// Draw what each head attends to: the attention weights of every layer and head for a
    /// prompt, as a grid of heatmaps with the tokens on both axes.
    Attention(attention::AttentionArgs),
    /// Follow a run's loss curves in the terminal as it trains (from another terminal; `train
    /// --live` draws the same in its own).
    Watch(watch::WatchArgs),
    /// Time training steps (forward, backward, AdamW) of a config's model on random tokens, or
    /// with --generation a model's generation (prefill and new tokens).
    Bench(bench::BenchArgs),
}

// Why: see `mimalloc` in the workspace Cargo.toml (freed tensor buffers are reused, not zeroed
// again by the kernel); the wrapper turns a failed allocation into a clear error.
#[global_allocator]
static ALLOCATOR: tinygpt::ReportingAllocator = tinygpt::ReportingAllocator;

fn main() -> ExitCode {
    tinygpt::keep_freed_memory();
    let cli = Cli::parse();
    // The CPU backends and the fused kernels split work with rayon. From a thread outside rayon's
    // pool, each parallel op is handed to the pool while this thread sleeps until it is done,
    // and the pool's idle threads spin against it for the same cores. From inside the pool,
    // small ops run inline and large ones are shared by work stealing: transformer.ron on flex
    // went from 2.1 to 1.7 ms a step.
    let result = rayon::scope(|_| match cli.command {
        Command::Info(args) => info::run(args).map(|()| ExitCode::SUCCESS),
        Command::Train(args) => train::run(args),
        Command::Generate(args) => generate::run(args).map(|()| ExitCode::SUCCESS),
        Command::Chat(args) => chat::run(args).map(|()| ExitCode::SUCCESS),
        Command::Eval(args) => eval::run(args).map(|()| ExitCode::SUCCESS),
        Command::Export(args) => export::run(args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(args).map(|()| ExitCode::SUCCESS),
        Command::Plot(args) => plot::run(args).map(|()| ExitCode::SUCCESS),
        Command::Attention(args) => attention::run(args).map(|()| ExitCode::SUCCESS),
        Command::Watch(args) => watch::run(args).map(|()| ExitCode::SUCCESS),
    });
    match result {
        Ok(code) => code,
        // The reader went away (`tinygpt info ... | head`): nothing left to say.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
