//! `cargo xtask gpu-check`: the CUDA verification, in two halves.
//!
//! The GPU machine has CUDA and PyTorch but no Rust, so `gpu-check` builds everything here with
//! `--features cuda` (release, stripped) into `.gpu-check/`, together with the corpus and a
//! script; the script (`bash .gpu-check/run.sh`, from the repository root) then runs there:
//! the backend-generic model tests and the CPU-vs-CUDA parity test on CUDA, a `transformer.ron`
//! training run on CUDA, a short `gpt.ron` run, and `gpt.ron` step timings in f32, bf16 and f16
//! beside PyTorch eager on the same GPU. It writes its report to `$OUT` (or `.gpu-check/out`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const DIR: &str = ".gpu-check";

/// The CUDA API the executables are built against (cudarc's `CUDARC_CUDA_VERSION`). Without a
/// toolkit here cudarc would pick the newest it knows (13.4); the GPU machines' driver (580) is
/// CUDA 13.0, and bindings for 13.0 run on every 13.x driver. Override it for another driver.
const DEFAULT_CUDA_VERSION: &str = "13000";

/// The integration tests that hold backend-generic CUDA checks.
const TEST_TARGETS: [&str; 2] = ["cuda_parity", "model"];

pub fn prepare(root: &Path, cargo: impl Fn() -> Command) -> Result<()> {
    let cuda_version =
        std::env::var("CUDARC_CUDA_VERSION").unwrap_or_else(|_| DEFAULT_CUDA_VERSION.into());
    let cargo = || {
        let mut command = cargo();
        command.env("CUDARC_CUDA_VERSION", &cuda_version);
        command
    };
    let out = root.join(DIR);
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(out.join("data/tinyshakespeare"))?;

    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--package",
        "tinygpt",
        "--features",
        "cuda",
    ]);
    run(&mut build)?;
    install(&root.join("target/release/tinygpt"), &out.join("tinygpt"))?;

    let mut tests = cargo();
    tests.args([
        "test",
        "--release",
        "--features",
        "cuda",
        "--no-run",
        "--message-format=json",
    ]);
    for target in TEST_TARGETS {
        tests.args(["--test", target]);
    }
    let output = tests
        .output()
        .context("building the CUDA test executables")?;
    if !output.status.success() {
        bail!(
            "building the CUDA tests failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = message["target"]["name"].as_str().unwrap_or_default();
        if let (true, Some(executable)) =
            (TEST_TARGETS.contains(&name), message["executable"].as_str())
        {
            install(Path::new(executable), &out.join(format!("test-{name}")))?;
        }
    }
    for target in TEST_TARGETS {
        if !out.join(format!("test-{target}.xz")).exists() {
            bail!("cargo did not report the test executable for {target}");
        }
    }

    let corpus = root.join("data/tinyshakespeare/input.txt");
    if !corpus.exists() {
        bail!(
            "{} is missing: train once (it downloads) or copy the corpus there first",
            corpus.display()
        );
    }
    std::fs::copy(&corpus, out.join("data/tinyshakespeare/input.txt"))?;
    std::fs::write(out.join("run.sh"), SCRIPT)?;
    let size: u64 = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum::<u64>()
        + std::fs::metadata(out.join("data/tinyshakespeare/input.txt"))?.len();
    println!(
        "prepared {} ({:.1} MiB). On the GPU machine, from the repository root, carrying {DIR}:\n  \
         bash {DIR}/run.sh",
        out.display(),
        size as f64 / (1 << 20) as f64
    );
    Ok(())
}

fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    if !command
        .status()
        .with_context(|| format!("starting {shown}"))?
        .success()
    {
        bail!("{shown} failed");
    }
    Ok(())
}

/// Copies an executable, strips its symbols and xz-compresses it (`NAME.xz`): the GPU
/// machine takes at most 64 MiB per transfer, and the CUDA builds are ~50-65 MB each stripped.
fn install(from: &Path, to: &PathBuf) -> Result<()> {
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    let _ = Command::new("strip").arg(to).status();
    run(Command::new("xz").args(["-T2", "-6", "--force"]).arg(to))
        .context("compressing with xz (install xz-utils)")
}

const SCRIPT: &str = r#"#!/usr/bin/env bash
# tinygpt's CUDA check; made by `cargo xtask gpu-check`. Run from the repository root.
set -u -o pipefail
G=.gpu-check
OUT=${OUT:-$G/out}
BIN=$(mktemp -d)
RUNS=$(mktemp -d) # checkpoints stay on the machine: only the logs in $OUT come back
export TINYGPT_ROOT=$(pwd)
mkdir -p "$OUT" data/tinyshakespeare
# The executables travel xz-compressed; Python's lzma unpacks them (no xz needed there).
for f in $G/*.xz; do
    name=$(basename "$f" .xz)
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$BIN/$name"
    chmod +x "$BIN/$name"
done
cp -n $G/data/tinyshakespeare/input.txt data/tinyshakespeare/input.txt
status=0
# Every step gets at most what is left of the budget, so the whole check ends inside it.
BUDGET=${GPU_CHECK_SECONDS:-520}
limit() { local rest=$((BUDGET - SECONDS)); ((rest < $1)) || rest=$1; ((rest > 1)) || rest=1; echo $rest; }
step() { echo; echo "=== [${SECONDS}s] $*"; }
nvidia-smi -L | tee "$OUT/device.txt"

# Timings first: on the first GPU run (2026-11-28, H100) Burn's first gpt.ron steps outlasted
# their limits (JIT compilation and autotuning), so each step's time is printed as it ends.
step "gpt.ron step timings, PyTorch eager (f32, bf16, f16) and Burn (cuda f32, bf16, f16)"
for dtype in f32 bf16 f16; do
    timeout $(limit 60) python3 reference/gpt_step.py --device cuda --dtype $dtype --steps 10 \
        --warmup 3 2>&1 | tee -a "$OUT/bench.jsonl" || status=1
done
for backend in cuda cuda-bf16 cuda-f16; do
    timeout $(limit 200) $BIN/tinygpt bench configs/gpt.ron --backend $backend --steps 10 \
        --warmup 3 --progress --json 2>&1 | tee -a "$OUT/bench.jsonl" || status=1
done

step "CPU-vs-CUDA parity (logits/loss 1e-4, gradients 1e-3)"
timeout $(limit 150) $BIN/test-cuda_parity --include-ignored --nocapture --test-threads 1 2>&1 \
    | tee "$OUT/parity.txt" || status=1

step "backend-generic model tests on CUDA"
timeout $(limit 150) $BIN/test-model cuda --nocapture --test-threads 1 2>&1 \
    | tee "$OUT/model-tests.txt" || status=1

step "gpt.ron, a short run on CUDA (500 steps)"
timeout $(limit 150) $BIN/tinygpt train configs/gpt.ron --backend cuda --max-iters 500 \
    --out "$RUNS/gpt" 2>&1 | tee "$OUT/gpt.txt" || status=1

step "transformer.ron trained on CUDA"
timeout $(limit 240) $BIN/tinygpt train configs/transformer.ron --backend cuda \
    --out "$RUNS/transformer" 2>&1 | tee "$OUT/transformer.txt" || status=1

step "done (status $status)"
exit $status
"#;
