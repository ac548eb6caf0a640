//! `cargo xtask cpu-levels`: the test suite again as CPUs without AVX-512, under qemu-user.
//!
//! Our own kernels can be capped to a lower instruction set in-process (`TINYGPT_SIMD_LEVEL`,
//! and the tests run each level natively), but the libraries underneath pick their kernels from
//! the CPU alone: `gemm` (flex and the attention kernel), `matrixmultiply` and `macerator`
//! (ndarray). qemu's TCG emulates an AVX2 CPU (Haswell) and one without AVX (Nehalem), so an
//! AVX-512 machine runs every test binary through those paths too.
//!
//! What emulation cannot show: qemu computes the reciprocal-estimate instructions exactly, so
//! differences that come from real hardware estimates (see `tinygpt_layers::exact`) are tested
//! natively instead.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The emulated CPUs: qemu's model name, the level our kernels must detect there, a line for
/// the report, and whether to run every test (else all but [`LONG_UNDER_EMULATION`]).
const CPUS: [(&str, &str, &str, bool); 2] = [
    ("Haswell", "avx2", "AVX2 + FMA, no AVX-512", true),
    ("Nehalem", "baseline", "SSE4.2, no AVX", false),
];

/// Test modules of the `suite` binary that train and generate with the larger configs: 4 and 2
/// minutes as a Nehalem (qemu emulates SSE one instruction at a time), against 1.3 and 0.8 as a
/// Haswell. The kernels they reach are the ones the other tests test.
const LONG_UNDER_EMULATION: [&str; 2] = ["model::", "end_to_end::"];

/// Test binaries that only start the real `tinygpt` binary, which qemu-user does not follow
/// into child processes: under emulation they would test the host CPU again. (Its `devices`
/// module runs data-parallel nodes as processes; `tests/seeded`'s `parallel` runs the same
/// training in-process, and does run under emulation.)
const SPAWNS_CHILDREN: [&str; 1] = ["cli"];

const QEMU: &str = "qemu-x86_64";

struct TestBinary {
    name: String,
    executable: PathBuf,
    package_dir: PathBuf,
}

pub fn run(root: &Path, cargo: impl Fn() -> Command) -> Result<()> {
    if !cfg!(target_arch = "x86_64") {
        bail!("cpu-levels emulates x86_64 CPUs; run it on an x86_64 machine");
    }
    let qemu_found = Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !qemu_found {
        bail!("{QEMU} not found: install qemu-user (Debian: apt-get install qemu-user)");
    }
    let binaries = build_tests(root, cargo)?;
    let mut failures = Vec::new();
    for (cpu, level, what, everything) in CPUS {
        if level == native_level() {
            // The test command has just run every binary natively on such a CPU: the libraries
            // took these very code paths there.
            println!("== as {cpu} ({what}): skipped, this machine is one (the tests ran natively)");
            continue;
        }
        println!("== as {cpu} ({what}): our kernels must detect {level}");
        for binary in binaries
            .iter()
            .filter(|b| !SPAWNS_CHILDREN.contains(&b.name.as_str()))
        {
            let started = Instant::now();
            let mut skip = Vec::new();
            if !everything {
                for module in LONG_UNDER_EMULATION {
                    skip.extend(["--skip", module]);
                }
            }
            let output = Command::new(QEMU)
                .args(["-cpu", cpu])
                .arg(&binary.executable)
                .args(["--test-threads", "2"])
                .args(&skip)
                .current_dir(&binary.package_dir)
                .env("TINYGPT_EXPECT_SIMD_LEVEL", level)
                .output()
                .with_context(|| format!("running {} under {QEMU}", binary.name))?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let summary = stdout
                .lines()
                .rfind(|line| line.starts_with("test result:"))
                .unwrap_or("no test result line");
            println!(
                "  {:<20} {:>6.1} s  {summary}",
                binary.name,
                started.elapsed().as_secs_f64()
            );
            if !output.status.success() {
                print!("{stdout}");
                // qemu repeats a warning for each system feature of the model it cannot emulate
                // (none that user code uses); keep them from burying the test's own output.
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .filter(|line| !line.contains("TCG doesn't support requested feature"))
                    .for_each(|line| eprintln!("{line}"));
                failures.push(format!("{} as {cpu}", binary.name));
            }
        }
    }
    if !failures.is_empty() {
        bail!("failed under emulation: {}", failures.join(", "));
    }
    println!("every test binary passed as each emulated CPU");
    Ok(())
}

/// The level this CPU runs the kernels at natively, as [`CPUS`] names it: "avx2" for an AVX2 + FMA
/// CPU without AVX-512 (an AMD Zen 3, say), "baseline" without AVX2, "avx512" otherwise.
fn native_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "avx512"
        } else if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            "avx2"
        } else {
            "baseline"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    "none"
}

/// Builds the workspace's tests in the profile README's test command uses and lists them.
fn build_tests(root: &Path, cargo: impl Fn() -> Command) -> Result<Vec<TestBinary>> {
    let output = cargo()
        .args([
            "test",
            "--workspace",
            "--release",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !output.status.success() {
        bail!("building the tests failed ({})", output.status);
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = message["reason"] == "compiler-artifact"
            && message["profile"]["test"] == serde_json::Value::Bool(true);
        let (Some(executable), Some(name), Some(manifest)) = (
            message["executable"].as_str(),
            message["target"]["name"].as_str(),
            message["manifest_path"].as_str(),
        ) else {
            continue;
        };
        if is_test {
            binaries.push(TestBinary {
                name: name.to_string(),
                executable: executable.into(),
                package_dir: Path::new(manifest)
                    .parent()
                    .context("a manifest path has a folder")?
                    .to_path_buf(),
            });
        }
    }
    if binaries.is_empty() {
        bail!("cargo listed no test binaries");
    }
    Ok(binaries)
}
