//! Data-parallel training through the real binary: `--devices`, and two processes on loopback
//! as two nodes (`--nodes 2`) with the orchestrator Burn provides.

use crate::common::{assert_fails_with, text, tinygpt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tinygpt_train::checkpoint::{list_step_checkpoints, step_checkpoint_path};
use tinygpt_train::metrics::read_metrics;

fn write_config(dir: &Path, steps: usize) -> &'static str {
    let corpus: String = (0..400)
        .map(|i| ["to be or not to be\n", "that is the question\n"][i % 3 % 2])
        .collect();
    std::fs::write(dir.join("corpus.txt"), corpus).unwrap();
    let config = format!(
        "(model: (n_embd: 16, block_size: 8, layers: [Block(n_head: 2), LayerNorm()], \
                  init: Normal(std: 0.02)), \
          data: (corpus: File(path: \"corpus.txt\")), \
          training: (batch_size: 8, max_iters: {steps}, learning_rate: 1e-2, eval_interval: 2, \
                     eval_iters: 2, sample_tokens: 30))"
    );
    std::fs::write(dir.join("dp.ron"), config).unwrap();
    "dp.ron"
}

/// A loopback port with the two above it free too (node 0's and node 1's data services).
fn free_ports() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port > 65_000 {
            continue;
        }
        let others = (1..=2).all(|d| std::net::TcpListener::bind(("0.0.0.0", port + d)).is_ok());
        if others {
            return port; // `listener` is dropped here: the port is free again
        }
    }
}

fn node(dir: &Path, rank: u32, port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tinygpt"))
        .args(["train", "dp.ron", "--quiet", "--backend", "flex"])
        .args(["--nodes", "2", "--node-rank", &rank.to_string()])
        .args(["--coordinator", &format!("127.0.0.1:{port}")])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tinygpt binary runs")
}

/// Waits at most `limit` for `child`; kills it and fails the test past that.
fn finish(mut child: Child, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stderr: {}",
                text(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

/// Two processes train together, end with identical weights (each checks the other's through
/// the all-reduce), and match the one-process run; then one of them is killed mid-run and the
/// other stops within the timeout with an error naming it.
#[test]
fn two_processes_train_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, 6);
    let single = tinygpt(&["train", config, "--quiet", "--out", "single"], d);
    assert!(single.status.success(), "{}", text(&single.stderr));

    let port = free_ports();
    let node0 = node(d, 0, port, &["--out", "two", "--collective-timeout", "60"]);
    let node1 = node(
        d,
        1,
        port,
        &["--out", "unused", "--collective-timeout", "60"],
    );
    let (out0, _) = finish(node0, Duration::from_secs(120));
    let (out1, _) = finish(node1, Duration::from_secs(120));
    for (rank, out) in [(0, &out0), (1, &out1)] {
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "node {rank}: {}", text(&out.stderr));
        assert!(
            stdout.contains("replicas identical: all 2 peers"),
            "node {rank}: {stdout}"
        );
    }
    assert!(text(&out1.stdout).contains("node 1's peers trained 6 steps"));
    assert!(!d.join("unused").exists(), "node 1 writes nothing");
    let two = read_metrics(&d.join("two/metrics.csv")).unwrap();
    let one = read_metrics(&d.join("single/metrics.csv")).unwrap();
    assert_eq!(two.len(), one.len());
    for (a, b) in two.iter().zip(&one) {
        assert!(
            (a.train_loss - b.train_loss).abs() < 1e-5 && (a.val_loss - b.val_loss).abs() < 1e-5,
            "{a:?} against {b:?}"
        );
    }
    let full_val = |run: &str| {
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join(run).join("summary.json")).unwrap())
                .unwrap();
        summary["val_loss_full"].as_f64().unwrap()
    };
    assert!((full_val("two") - full_val("single")).abs() < 1e-5);
    assert!(step_checkpoint_path(&d.join("two"), 6).is_file());

    // Kill node 1 mid-run: node 0 must stop with an error naming it, within the timeout.
    write_config(d, 1_000_000);
    let port = free_ports();
    let node0 = node(d, 0, port, &["--out", "long", "--collective-timeout", "20"]);
    let mut node1 = node(d, 1, port, &["--collective-timeout", "20"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while list_step_checkpoints(&d.join("long")).len() < 2 {
        assert!(Instant::now() < deadline, "the two nodes never trained");
        std::thread::sleep(Duration::from_millis(20));
    }
    node1.kill().unwrap();
    node1.wait().unwrap();
    let (out0, took) = finish(node0, Duration::from_secs(40));
    let stderr = text(&out0.stderr);
    assert_eq!(out0.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("node 1"), "{stderr}");
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    assert!(took < Duration::from_secs(25), "took {took:?}");
    // What was checkpointed is intact: the run resumes on one process.
    let (step, _) = list_step_checkpoints(&d.join("long")).pop().unwrap();
    let target = (step + 2).to_string();
    let resumed = tinygpt(
        &[
            "train",
            "--resume",
            "long",
            "--max-iters",
            &target,
            "--quiet",
        ],
        d,
    );
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
}

/// Two nodes of two CPU peers each (four peers, two rows of the batch each) follow one device:
/// the all-reduce's mean spans both levels, the threads of a node and the nodes.
#[test]
fn two_processes_of_two_peers_each_follow_one_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, 4);
    let single = tinygpt(&["train", config, "--quiet", "--out", "single"], d);
    assert!(single.status.success(), "{}", text(&single.stderr));
    let port = free_ports();
    let flags = ["--devices", "2", "--collective-timeout", "60"];
    let node0 = node(d, 0, port, &[&flags[..], &["--out", "four"]].concat());
    let node1 = node(d, 1, port, &flags);
    let (out0, _) = finish(node0, Duration::from_secs(120));
    let (out1, _) = finish(node1, Duration::from_secs(120));
    assert!(out0.status.success(), "{}", text(&out0.stderr));
    assert!(out1.status.success(), "{}", text(&out1.stderr));
    assert!(text(&out0.stdout).contains("replicas identical: all 4 peers"));
    let four = read_metrics(&d.join("four/metrics.csv")).unwrap();
    let one = read_metrics(&d.join("single/metrics.csv")).unwrap();
    assert_eq!(four.len(), one.len());
    for (a, b) in four.iter().zip(&one) {
        assert!(
            (a.train_loss - b.train_loss).abs() < 1e-5 && (a.val_loss - b.val_loss).abs() < 1e-5,
            "{a:?} against {b:?}"
        );
    }
}

/// A node whose partner never starts gives up after the timeout, saying who is missing.
#[test]
fn a_node_that_never_joins_is_an_error_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, 4);
    let port = free_ports();
    let alone = node(d, 1, port, &["--collective-timeout", "3"]);
    let (out, took) = finish(alone, Duration::from_secs(30));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("node 0") && stderr.contains("joining the run"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

/// Ctrl-C or SIGTERM on one node stops both at the same step, with node 0's checkpoint.
#[cfg(unix)]
#[test]
fn a_signal_on_one_node_stops_both_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, 1_000_000);
    let port = free_ports();
    let node0 = node(d, 0, port, &["--out", "run", "--collective-timeout", "30"]);
    let node1 = node(d, 1, port, &["--collective-timeout", "30"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while list_step_checkpoints(&d.join("run")).len() < 2 {
        assert!(Instant::now() < deadline, "the two nodes never trained");
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Command::new("kill")
        .args(["-TERM", &node1.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let (out1, _) = finish(node1, Duration::from_secs(30));
    let (out0, _) = finish(node0, Duration::from_secs(30));
    assert_eq!(out0.status.code(), Some(143), "{}", text(&out0.stderr));
    assert_eq!(out1.status.code(), Some(143), "{}", text(&out1.stderr));
    assert!(text(&out0.stderr).contains("train --resume run"));
    let metrics = read_metrics(&d.join("run/metrics.csv")).unwrap();
    let (step, _) = list_step_checkpoints(&d.join("run")).pop().unwrap();
    assert!(
        step >= metrics.last().unwrap().step,
        "the stop was checkpointed"
    );
}

#[test]
fn device_and_node_flags_are_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, 4);
    let cases: [(&[&str], &[&str]); 7] = [
        (&["--devices", "0,1"], &["number of peers"]),
        (&["--devices", "0"], &["number of peers"]),
        (&["--devices", "3"], &["batch_size 8", "3 peers"]),
        (&["--nodes", "2"], &["--coordinator HOST:PORT"]),
        (
            &["--nodes", "2", "--node-rank", "2", "--coordinator", "h:1"],
            &["--node-rank 2"],
        ),
        (
            &["--nodes", "2", "--coordinator", "ws://h:1"],
            &["--coordinator", "HOST:PORT"],
        ),
        (
            &[
                "--devices",
                "2",
                "--nodes",
                "3",
                "--coordinator",
                "127.0.0.1:1",
            ],
            &["batch_size 8", "6 peers"],
        ),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["train", config, "--out", "never"];
        args.extend_from_slice(flags);
        let out = tinygpt(&args, d);
        assert_fails_with(&out, needles);
        assert!(!d.join("never").exists(), "{flags:?} created the run");
    }
    let out = tinygpt(&["train", config, "--devices", "two"], d);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(text(&out.stderr).contains("not a device count"));
    let out = tinygpt(
        &["train", config, "--backend", "cuda", "--devices", "0,1"],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    if cfg!(feature = "cuda") {
        assert!(!text(&out.stderr).is_empty());
    } else {
        assert!(text(&out.stderr).contains("--features cuda"));
    }
}

/// `--devices 2` on the CPU: the run reports two peers and matches one device.
#[test]
fn two_cpu_peers_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, 4);
    let one = tinygpt(&["train", config, "--quiet", "--out", "one"], d);
    assert!(one.status.success(), "{}", text(&one.stderr));
    let two = tinygpt(
        &["train", config, "--quiet", "--out", "two", "--devices", "2"],
        d,
    );
    assert!(two.status.success(), "{}", text(&two.stderr));
    assert!(text(&two.stdout).contains("2 peers of flex"));
    let (one, two) = (
        read_metrics(&d.join("one/metrics.csv")).unwrap(),
        read_metrics(&d.join("two/metrics.csv")).unwrap(),
    );
    for (a, b) in one.iter().zip(&two) {
        assert!(
            (a.val_loss - b.val_loss).abs() < 1e-5,
            "{a:?} against {b:?}"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("two/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["peers"], 2);
}
