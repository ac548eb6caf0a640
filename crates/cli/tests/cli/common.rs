//! What the binary's test files share: running `tinygpt` and checking how it failed.

use std::path::Path;
use std::process::{Command, Output};

pub fn tinygpt(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinygpt"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the tinygpt binary runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a clean failure whose stderr mentions every one of `needles`.
pub fn assert_fails_with(output: &Output, needles: &[&str]) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
}
