//! `tinygpt attention`: what each head attends to. The attention weights (post-softmax, causal)
//! of every layer and head for a prompt, drawn as a grid of heatmaps with the prompt's tokens on
//! both axes; `--layer` and `--head` pick one, `--json` writes the numbers too.

use super::generation_backend;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use tinygpt_plot::{token_label, Heatmap};
use tinygpt_tokenizer::Tokenizer;
use tinygpt_train::{open_run, BackendKind};

#[derive(Args)]
pub struct AttentionArgs {
    /// A run directory, a .ckpt file or a Hugging Face directory.
    model: PathBuf,
    /// The text whose attention is drawn (at most block_size tokens).
    #[arg(long)]
    prompt: String,
    /// Only this layer (its index in the config's layer list, as `tinygpt info` numbers them).
    #[arg(long)]
    layer: Option<usize>,
    /// Only this head of each layer drawn.
    #[arg(long)]
    head: Option<usize>,
    /// The picture: .png or .svg.
    #[arg(short, long, default_value = "attention.png")]
    output: PathBuf,
    /// Also write the weights as JSON: tokens and, per layer and head, the [query][key] matrix.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Go on even when the memory estimate is far over what the machine has.
    #[arg(long)]
    skip_memory_check: bool,
}

pub fn run(args: AttentionArgs) -> Result<()> {
    let run = open_run(&args.model)?;
    let tokenizer = &run.tokenizer;
    let unknown = tokenizer.unknown_chars(&args.prompt);
    if !unknown.is_empty() {
        let listed: Vec<String> = unknown.iter().map(|c| format!("{c:?}")).collect();
        bail!(
            "the prompt contains characters the model never saw: {}",
            listed.join(", ")
        );
    }
    let tokens = tokenizer.encode_prompt(&args.prompt)?;
    if tokens.is_empty() {
        bail!("the prompt is empty: give --prompt some text");
    }
    let block_size = run.model.block_size;
    if tokens.len() > block_size {
        bail!(
            "the prompt is {} tokens; the model attends over at most {block_size} (block_size): \
             shorten it",
            tokens.len()
        );
    }
    let backend = generation_backend(&run, args.backend, args.skip_memory_check)?;
    let model = tinygpt_backends::engine(backend, None)?
        .load(&run)
        .with_context(|| format!("loading weights from {}", run.path.display()))?;
    let maps = model.attention_maps(&tokens);
    if maps.is_empty() {
        bail!("this model has no attention layer (a bigram table looks at one token only)");
    }
    let layers: Vec<usize> = {
        let mut seen: Vec<usize> = maps.iter().map(|(layer, _)| *layer).collect();
        seen.dedup();
        seen
    };
    if let Some(layer) = args.layer {
        if !layers.contains(&layer) {
            bail!(
                "layer {layer} has no attention; the layers that attend are {}",
                list(&layers)
            );
        }
    }
    let heads = maps.iter().map(|(_, map)| map.heads).max().unwrap_or(1);
    if let Some(head) = args.head {
        if head >= heads {
            bail!(
                "head {head} is out of range: the model has heads 0..{heads} (0 to {})",
                heads - 1
            );
        }
    }
    let labels: Vec<String> = tokens
        .iter()
        .map(|&t| token_label(&tokenizer.decode(&[t]).unwrap_or_default()))
        .collect();
    let mut drawn = Vec::new();
    for (layer, map) in &maps {
        if args.layer.is_some_and(|l| l != *layer) {
            continue;
        }
        for head in 0..map.heads {
            if args.head.is_some_and(|h| h != head) {
                continue;
            }
            let (t, at) = (map.time, head * map.time * map.time);
            drawn.push(Heatmap {
                title: format!("layer {layer}, head {head}"),
                size: t,
                values: map.weights[at..at + t * t].to_vec(),
            });
        }
    }
    let title = format!(
        "attention of {} ({} tokens)",
        run.path.display(),
        tokens.len()
    );
    tinygpt_plot::heatmaps(&drawn, &labels, heads, &title, &args.output)?;
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "tokens": labels,
            "ids": tokens,
            "maps": drawn.iter().map(|map| serde_json::json!({
                "title": map.title,
                "weights": map.values.chunks(map.size).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote {} ({} heatmap{} of {} tokens)",
        args.output.display(),
        drawn.len(),
        if drawn.len() == 1 { "" } else { "s" },
        tokens.len()
    );
    Ok(())
}

fn list(values: &[usize]) -> String {
    values
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
