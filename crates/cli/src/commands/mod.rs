//! One module per `tinygpt` command, and what several of them share.

pub mod attention;
pub mod bench;
pub mod chat;
pub mod eval;
pub mod export;
pub mod generate;
pub mod info;
pub mod plot;
pub mod train;
pub mod watch;

use anyhow::{bail, Result};
use std::path::Path;
use tinygpt_model::Sampling;
use tinygpt_train::LoadedRun;
use tinygpt_train::{available_memory, judge, prepare, BackendKind, MemoryEstimate, Prepared};
use tinygpt_train::{RunConfig, Verdict};

/// Reads a config and prepares its corpus and model.
fn load_prepared(path: &Path) -> Result<Prepared> {
    let config = RunConfig::load(path)?;
    Ok(prepare(config, &path.display().to_string())?)
}

/// A path `info`, `generate`, `eval` and `export` read as a model rather than a config.
fn is_model_path(path: &Path) -> bool {
    path.is_dir() || path.extension().is_some_and(|e| e == "ckpt")
}

/// Stops a job that would not fit in memory, and warns about one that might not; `skip` (the
/// `--skip-memory-check` flag) turns the stop into a warning. Only the CPU backends are checked:
/// their memory is the machine's RAM.
fn check_memory(
    need: &MemoryEstimate,
    backend: BackendKind,
    what: &str,
    shrink: &str,
    skip: bool,
) -> Result<()> {
    if !backend.is_cpu() {
        return Ok(());
    }
    match judge(need, available_memory(), what, shrink) {
        Verdict::Fits => Ok(()),
        Verdict::Tight(message) => {
            eprintln!("warning: {message}");
            Ok(())
        }
        Verdict::TooBig(message) if skip => {
            eprintln!("warning: {message}; going on because of --skip-memory-check");
            Ok(())
        }
        Verdict::TooBig(message) => bail!("{message}; --skip-memory-check tries anyway"),
    }
}

/// The sampling options `generate` and `chat` share, checked.
fn sampling(temperature: f64, top_k: Option<usize>, top_p: Option<f64>) -> Result<Sampling> {
    if !(temperature >= 0.0 && temperature.is_finite()) {
        bail!("--temperature must be 0 or positive, got {temperature}");
    }
    if top_k == Some(0) {
        bail!("--top-k must be at least 1");
    }
    if let Some(p) = top_p {
        if !(p > 0.0 && p <= 1.0) {
            bail!("--top-p must be in (0, 1], got {p}");
        }
    }
    Ok(Sampling {
        temperature,
        top_k,
        top_p,
    })
}

/// The backend a model generates on: `requested`, else the one it trained on (reproducing
/// what it computed) if this build has it, else the default; once the memory generation needs
/// is checked.
fn generation_backend(
    run: &LoadedRun,
    requested: Option<BackendKind>,
    skip_memory_check: bool,
) -> Result<BackendKind> {
    let backend = requested.unwrap_or_else(|| {
        run.backend()
            .and_then(run_backend)
            .filter(|&kind| tinygpt_backends::compiled_in(kind))
            .unwrap_or_default()
    });
    check_memory(
        &MemoryEstimate::generation(&run.model, backend),
        backend,
        "generation",
        "The model is too large for this machine's memory",
        skip_memory_check,
    )?;
    Ok(backend)
}

/// The backend a checkpoint records (`None` for a name this build does not know).
fn run_backend(name: &str) -> Option<BackendKind> {
    name.parse().ok()
}

/// How the user started tinygpt, for the commands it suggests: `cargo xtask` (which sets
/// `TINYGPT_INVOKED_AS`), the path they ran, or `tinygpt` from the PATH.
fn invocation() -> String {
    if let Some(set) = std::env::var("TINYGPT_INVOKED_AS")
        .ok()
        .filter(|s| !s.is_empty())
    {
        return set;
    }
    std::env::args()
        .next()
        .filter(|program| program.contains('/'))
        .map_or_else(|| "tinygpt".into(), |program| shell_word(&program))
}

/// `word` as a shell reads it back: quoted when it holds anything but plain path characters.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
