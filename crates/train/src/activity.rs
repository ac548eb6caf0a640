//! What the process is doing, kept where a report can read it without allocating: when an
//! allocation fails, the `tinygpt` binary's allocator says which step ran out of memory and which
//! checkpoint is safe, where Rust's default would abort with a bare "memory allocation failed".

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// A part of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    BuildingModel,
    LoadingCheckpoint,
    Training,
    Evaluating,
    Checkpointing,
    Sampling,
}

static PHASE: AtomicU8 = AtomicU8::new(Phase::Starting as u8);
static STEP: AtomicU64 = AtomicU64::new(0);
const NO_CHECKPOINT: u64 = u64::MAX;
static CHECKPOINT_STEP: AtomicU64 = AtomicU64::new(NO_CHECKPOINT);
static RUN_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Records that `phase` begins, at training step `step`.
pub fn enter(phase: Phase, step: usize) {
    STEP.store(step as u64, Ordering::Relaxed);
    PHASE.store(phase as u8, Ordering::Relaxed);
}

/// Records the run directory a training run writes to, and the newest checkpoint it holds
/// (`None` before the first).
pub fn run_dir(dir: PathBuf, checkpoint_step: Option<usize>) {
    if let Ok(mut slot) = RUN_DIR.lock() {
        *slot = Some(dir);
    }
    CHECKPOINT_STEP.store(
        checkpoint_step.map_or(NO_CHECKPOINT, |s| s as u64),
        Ordering::Relaxed,
    );
}

/// Records that the checkpoint of `step` is complete on disk.
pub fn checkpoint_written(step: usize) {
    CHECKPOINT_STEP.store(step as u64, Ordering::Relaxed);
}

/// Writes what the process was doing, e.g. "in training step 12; the run's checkpoint of step
/// 10 in runs/gpt is intact". Allocates nothing (`out` may be a fixed buffer).
pub fn describe(out: &mut impl fmt::Write) -> fmt::Result {
    let step = STEP.load(Ordering::Relaxed);
    match PHASE.load(Ordering::Relaxed) {
        x if x == Phase::BuildingModel as u8 => write!(out, "while building the model")?,
        x if x == Phase::LoadingCheckpoint as u8 => write!(out, "while loading the checkpoint")?,
        x if x == Phase::Training as u8 => write!(out, "in training step {}", step + 1)?,
        x if x == Phase::Evaluating as u8 => write!(out, "while evaluating at step {step}")?,
        x if x == Phase::Checkpointing as u8 => {
            write!(out, "while writing the checkpoint of step {step}")?
        }
        x if x == Phase::Sampling as u8 => write!(out, "while sampling")?,
        _ => write!(out, "while starting")?,
    }
    // try_lock: the failing allocation may come from a thread that holds the lock.
    let Ok(dir) = RUN_DIR.try_lock() else {
        return Ok(());
    };
    let Some(dir) = dir.as_ref() else {
        return Ok(());
    };
    match CHECKPOINT_STEP.load(Ordering::Relaxed) {
        NO_CHECKPOINT => write!(out, "; {} holds no checkpoint yet", dir.display()),
        done => write!(
            out,
            "; the run's checkpoint of step {done} in {} is intact (continue with train \
             --resume {})",
            dir.display(),
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_step_and_the_safe_checkpoint() {
        run_dir(PathBuf::from("runs/gpt"), None);
        enter(Phase::BuildingModel, 0);
        let mut text = String::new();
        describe(&mut text).unwrap();
        assert_eq!(
            text,
            "while building the model; runs/gpt holds no checkpoint yet"
        );
        enter(Phase::Training, 11);
        checkpoint_written(10);
        let mut text = String::new();
        describe(&mut text).unwrap();
        assert_eq!(
            text,
            "in training step 12; the run's checkpoint of step 10 in runs/gpt is intact \
             (continue with train --resume runs/gpt)"
        );
    }
}
