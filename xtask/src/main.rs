//! Project automation, run as `cargo xtask <task>`:
//!
//! - `train CONFIG [ARGS...]`: build the CLI in release mode and train (`tinygpt train`).
//! - `generate RUN_DIR [ARGS...]`: build in release mode and generate (`tinygpt generate`).
//! - `ladder [--backend B] [--configs a,b] [--seeds S1,S2] [--max-iters N]`: train every stage and
//!   write a Markdown table and a PNG chart of the validation losses (`runs/ladder-B/`).
//! - `bench [--vs-pytorch [--no-compile]]`: median training step per config and backend (and
//!   PyTorch eager and torch.compile).
//! - `cpu-levels`: the test suite again under qemu-user as an AVX2 CPU and one without AVX.
//! - `gpu-check`: build the CUDA binaries, tests and a script for a GPU machine (`.gpu-check/`).
//! - `ci`: format check, clippy with warnings as errors, the test suite, `cargo check --features cuda`.
//!
//! `--features cuda` before the config is passed to cargo, e.g.
//! `cargo xtask train configs/gpt.ron --features cuda --backend cuda`.

mod bench;
mod cpu_levels;
mod gpu_check;
mod ladder;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  train CONFIG [--features cuda] [tinygpt train options]   build release, then train
  generate RUN_DIR [--features cuda] [tinygpt generate options]
  ladder [--backend B] [--configs a,b,c] [--seeds S1,S2] [--max-iters N] [--out DIR]
                                                           train every stage: table + chart
  bench [--vs-pytorch [--no-compile]] [--backends a,b] [--configs a,b]
                                                          training-step table (and PyTorch ratios)
  cpu-levels                                               tests again as AVX2 / no-AVX CPUs (qemu-user)
  gpu-check                                                build CUDA binaries + script into .gpu-check/
  ci                                                       fmt, clippy, tests, cuda check";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("train") | Some("generate") => {
            let task = task.expect("matched");
            if rest.is_empty() {
                bail!("`cargo xtask {task}` needs an argument\n\n{USAGE}");
            }
            run_cli(&task, rest)
        }
        Some("ladder") => {
            let args = ladder::LadderArgs::parse(rest)?;
            let binary = build_cli(&[])?;
            ladder::run(&workspace_root(), &binary, args)
        }
        Some("bench") => {
            let args = bench::BenchArgs::parse(rest)?;
            let binary = build_cli(&[])?;
            bench::run(&workspace_root(), &binary, args)
        }
        Some("cpu-levels") => cpu_levels::run(&workspace_root(), cargo),
        Some("gpu-check") => gpu_check::prepare(&workspace_root(), cargo),
        Some("ci") => ci(),
        Some("-h") | Some("--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{USAGE}"),
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    // `cargo run` gave xtask its own package's variables (CARGO_MANIFEST_DIR, CARGO_PKG_NAME,
    // ...). Some build scripts (ring's) rerun when those change, so a nested cargo that inherited
    // them rebuilt ring and every crate above it, and the next plain `cargo test` rebuilt them
    // back.
    for (name, _) in std::env::vars_os() {
        let is_package_variable = name.to_str().is_some_and(|name| {
            name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || matches!(
                    name,
                    "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
                )
        });
        if is_package_variable {
            command.env_remove(name);
        }
    }
    command
}

fn status(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Builds `tinygpt` with `--release` and runs it with `task` and the remaining arguments.
fn run_cli(task: &str, args: Vec<String>) -> Result<()> {
    let mut features = Vec::new();
    let mut cli_args = Vec::new();
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        if arg == "--features" {
            features.push(iter.next().context("--features needs a value")?);
        } else if let Some(value) = arg.strip_prefix("--features=") {
            features.push(value.to_string());
        } else {
            cli_args.push(arg);
        }
    }
    let binary = build_cli(&features)?;
    // The commands tinygpt suggests (resume, generate) then read `cargo xtask ...`: README's
    // users have no `tinygpt` on their PATH.
    status(
        Command::new(binary)
            .arg(task)
            .args(cli_args)
            .env("TINYGPT_INVOKED_AS", "cargo xtask"),
    )
}

/// `cargo build --release -p tinygpt [--features ...]`; returns the binary's path.
fn build_cli(features: &[String]) -> Result<PathBuf> {
    let mut build = cargo();
    build.args(["build", "--release", "--package", "tinygpt"]);
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    status(&mut build)?;
    Ok(workspace_root()
        .join("target/release")
        .join(format!("tinygpt{}", std::env::consts::EXE_SUFFIX)))
}

fn ci() -> Result<()> {
    status(cargo().args(["fmt", "--all", "--", "--check"]))?;
    status(cargo().args(["test", "--workspace", "--release"]))?;
    // Release, as the tests: the lint and the CUDA check then share their dependencies' check
    // build, and no dev-profile build of Burn is ever made.
    status(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    status(cargo().args([
        "check",
        "--package",
        "tinygpt",
        "--features",
        "cuda",
        "--release",
    ]))
}
