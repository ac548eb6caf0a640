//! Tests that need a backend's process-wide random generator (and Burn's process-wide
//! collective) to themselves: a run here must draw exactly what the same run drew before, so
//! these tests take turns ([`one_at_a_time`]) in a binary of their own, where no other test draws
//! random tensors meanwhile.

mod budget;
mod parallel;
mod resume;
mod seeding;

use std::sync::{Mutex, MutexGuard};

/// Held by every test of this binary while it runs.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}
