//! `cargo xtask gpu-check`: the CUDA verification, in two halves.
//!
//! The GPU machine has CUDA and PyTorch but no Rust, so `gpu-check` builds everything here with
//! `--features cuda` (release, stripped) into `.gpu-check/`, together with the corpus and a
//! script; the script (`bash .gpu-check/run.sh`, from the repository root) then runs there, in
//! one 10-minute call planned phase by phase: kernel compilation and autotuning first (cold and
//! warm start timed), `gpt.ron` steady-state step timings in f32, bf16 and f16 (and f32 without
//! Burn's fusion) beside PyTorch eager and torch.compile on the same GPU, the parity test, the
//! backend-generic model tests on CUDA, and nanoGPT's Shakespeare recipe for the rest of the
//! budget. It writes its report to `$OUT` (or `.gpu-check/out`) as it goes.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const DIR: &str = ".gpu-check";

/// The CUDA API the executables are built against (cudarc's `CUDARC_CUDA_VERSION`). Without a
/// toolkit here cudarc would pick the newest it knows (13.4); the GPU machines' driver (580) is
/// CUDA 13.0, and bindings for 13.0 run on every 13.x driver. Override it for another driver.
const DEFAULT_CUDA_VERSION: &str = "13000";

/// The test binary that holds the backend-generic CUDA checks (modules `cuda_parity` and
/// `model`).
const TEST_TARGETS: [&str; 1] = ["suite"];

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
# One 10-minute call, planned in phases, each with its own share of the budget, every result
# written to $OUT as it comes: (1) compile and warm the kernels (cold and warm start measured),
# (2) steady-state step timings beside PyTorch, (3) parity, (4) the model tests, (5) as much of
# nanoGPT's Shakespeare run as the rest of the budget allows.
set -u -o pipefail
G=.gpu-check
OUT=${OUT:-$G/out}
BIN=$(mktemp -d)
RUNS=$(mktemp -d) # checkpoints stay on the machine: only the logs in $OUT come back
export TINYGPT_ROOT=$(pwd)
# Compiled kernels (PTX) and autotune results persist here; it comes back as kernel-cache.tar.gz.
export TINYGPT_KERNEL_CACHE=$(mktemp -d)
mkdir -p "$OUT" data/tinyshakespeare
# The executables travel xz-compressed; Python's lzma unpacks them (no xz needed there).
for f in $G/*.xz; do
    name=$(basename "$f" .xz)
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$BIN/$name"
    chmod +x "$BIN/$name"
done
cp -n $G/data/tinyshakespeare/input.txt data/tinyshakespeare/input.txt
status=0
BUDGET=${GPU_CHECK_SECONDS:-560}
# A phase may use up to its share, and never more than what is left of the whole budget.
phase_end=0
phase() { phase_end=$((SECONDS + $1)); echo; echo "=== [${SECONDS}s] $2 (up to $1 s)"; }
limit() {
    local rest=$((phase_end - SECONDS)) total=$((BUDGET - SECONDS))
    ((rest < total)) || rest=$total
    ((rest < $1)) || rest=$1
    ((rest > 1)) || rest=1
    echo $rest
}
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
nvidia-smi -L | tee "$OUT/device.txt"
bench() { # bench LABEL ARGS...: one JSON line per run in bench.jsonl, its log beside it
    local label=$1; shift
    echo "--- $label"
    "$@" 2>>"$OUT/bench-progress.txt" | sed "s/^{/{\"label\":\"$label\",/" | tee -a "$OUT/bench.jsonl"
}

phase 170 "1. compile and warm: cold start (empty caches), warm start (cached), every precision"
t=$(now)
timeout $(limit 100) $BIN/tinygpt bench configs/gpt.ron --backend cuda --steps 1 --warmup 0 \
    --progress --json >/dev/null 2>>"$OUT/warm-up.txt" || status=1
echo "cold start, f32 (process start to the end of one gpt.ron step, no caches): $(elapsed $t) s" \
    | tee -a "$OUT/start.txt"
t=$(now)
timeout $(limit 60) $BIN/tinygpt bench configs/gpt.ron --backend cuda --steps 1 --warmup 0 \
    --progress --json >/dev/null 2>>"$OUT/warm-up.txt" || status=1
echo "warm start, f32 (the same, kernels and autotune results cached): $(elapsed $t) s" \
    | tee -a "$OUT/start.txt"
for run in "cuda-bf16" "cuda-f16" "cuda TINYGPT_CUDA_FUSION=0"; do
    set -- $run
    t=$(now)
    env ${2:-TINYGPT_CUDA_FUSION=1} timeout $(limit 60) $BIN/tinygpt bench configs/gpt.ron \
        --backend $1 --steps 1 --warmup 0 --json >/dev/null 2>>"$OUT/warm-up.txt" || status=1
    echo "cold start, $run: $(elapsed $t) s" | tee -a "$OUT/start.txt"
done

phase 150 "2. gpt.ron steady state: PyTorch eager, then tinygpt (fused and unfused), warm caches"
for dtype in f32 bf16 f16; do
    bench "pytorch-eager-$dtype" timeout $(limit 30) python3 reference/gpt_step.py --device cuda \
        --dtype $dtype --steps 20 --warmup 5 || status=1
done
for backend in cuda cuda-bf16 cuda-f16; do
    bench "tinygpt-$backend" timeout $(limit 30) $BIN/tinygpt bench configs/gpt.ron \
        --backend $backend --steps 20 --warmup 3 --progress --json || status=1
done
bench "tinygpt-cuda-unfused" env TINYGPT_CUDA_FUSION=0 timeout $(limit 30) $BIN/tinygpt bench \
    configs/gpt.ron --backend cuda --steps 20 --warmup 3 --progress --json || status=1
bench "pytorch-compile-f32" timeout $(limit 60) python3 reference/gpt_step.py --device cuda \
    --dtype f32 --steps 20 --warmup 5 --compile || status=1

phase 70 "3. parity: f32 CUDA vs ndarray (TF32 bounds), bf16/f16 vs f32 CUDA, bigram exact"
timeout $(limit 70) $BIN/test-suite cuda_parity --include-ignored --nocapture --test-threads 1 2>&1 \
    | tee "$OUT/parity.txt" || status=1

phase 40 "4. backend-generic model tests on CUDA"
timeout $(limit 40) $BIN/test-suite model::cuda --nocapture --test-threads 1 2>&1 \
    | tee "$OUT/model-tests.txt" || status=1

rest=$((BUDGET - SECONDS - 15))
phase $rest "5. nanoGPT's Shakespeare recipe on CUDA, stopped by SIGINT when the budget runs out"
# On SIGINT the trainer finishes its step, checkpoints and exits 130: the evaluations so far are
# in the log and in metrics.csv.
timeout -s INT $(limit $rest) $BIN/tinygpt train configs/nanogpt_shakespeare_char.ron \
    --backend cuda --out "$RUNS/shakespeare" 2>&1 | tee "$OUT/shakespeare.txt"
cp "$RUNS/shakespeare/metrics.csv" "$OUT/shakespeare-metrics.csv" 2>/dev/null || true

tar -czf "$OUT/kernel-cache.tar.gz" -C "$TINYGPT_KERNEL_CACHE" . 2>/dev/null || true
echo; echo "=== [${SECONDS}s] done (status $status)"
exit $status
"#;
