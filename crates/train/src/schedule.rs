//! Learning-rate schedules: the tutorial's constant rate, nanoGPT's linear warmup followed by
//! cosine decay to a floor, or the speedrun's warmup-stable-decay.
//!
//! Warmup counts optimizer steps; the decay is keyed to the run's progress, the fraction of
//! `max_iters` steps done or of the time budget spent. Under a budget the step rate is only known
//! as the run goes, so progress is measured, not predicted: the decay starts when that share of
//! the budget is spent, however many steps that took.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum LrSchedule {
    /// `learning_rate` at every step.
    #[default]
    Constant,
    /// nanoGPT's `get_lr`: linear warmup over `warmup_iters` steps, cosine decay from
    /// `learning_rate` to `min_lr` until `decay_iters` (default: max_iters), then `min_lr`.
    /// Under a time budget the cosine stretches over the budget: step `s` of `max_iters` becomes
    /// the fraction `s / max_iters` of it.
    Cosine {
        warmup_iters: usize,
        min_lr: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decay_iters: Option<usize>,
    },
    /// Warmup-stable-decay (the GPT speedrun's): linear warmup over `warmup_iters` steps, then
    /// `learning_rate` until the last `decay_fraction` of the run, then a straight line down to
    /// `min_lr` at its end.
    Wsd {
        #[serde(default)]
        warmup_iters: usize,
        decay_fraction: f64,
        #[serde(default)]
        min_lr: f64,
    },
}

/// Where a run stands, for its schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Optimizer steps done (0-based index of the step about to run).
    pub step: usize,
    /// Share of the run done: `step / max_iters`, or the budget's fraction spent.
    pub fraction: f64,
}

impl Progress {
    /// A run of `max_iters` steps at `step`.
    pub fn of_steps(step: usize, max_iters: usize) -> Self {
        Self {
            step,
            fraction: step as f64 / max_iters.max(1) as f64,
        }
    }
}

impl LrSchedule {
    /// The learning rate for optimizer step `step` (0-based) of a run of `max_iters` steps.
    pub fn lr_at(&self, step: usize, learning_rate: f64, max_iters: usize) -> f64 {
        self.lr_at_progress(
            Progress::of_steps(step, max_iters),
            learning_rate,
            max_iters,
        )
    }

    /// The learning rate at `progress`; `max_iters` places a `Cosine`'s steps in the run.
    pub fn lr_at_progress(&self, progress: Progress, learning_rate: f64, max_iters: usize) -> f64 {
        let warmup = |warmup_iters: usize| {
            (progress.step < warmup_iters)
                .then(|| learning_rate * (progress.step + 1) as f64 / (warmup_iters + 1) as f64)
        };
        match *self {
            LrSchedule::Constant => learning_rate,
            LrSchedule::Cosine {
                warmup_iters,
                min_lr,
                decay_iters,
            } => {
                if let Some(lr) = warmup(warmup_iters) {
                    return lr;
                }
                let max_iters = max_iters.max(1) as f64;
                let start = warmup_iters as f64 / max_iters;
                let end = decay_iters.map_or(1.0, |d| d as f64 / max_iters);
                if progress.fraction > end {
                    return min_lr;
                }
                let span = (end - start).max(1.0 / max_iters);
                let ratio = ((progress.fraction - start) / span).clamp(0.0, 1.0);
                let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
                min_lr + coeff * (learning_rate - min_lr)
            }
            LrSchedule::Wsd {
                warmup_iters,
                decay_fraction,
                min_lr,
            } => {
                if let Some(lr) = warmup(warmup_iters) {
                    return lr;
                }
                let left = (1.0 - progress.fraction).max(0.0);
                if left >= decay_fraction {
                    return learning_rate;
                }
                min_lr + (learning_rate - min_lr) * left / decay_fraction
            }
        }
    }

    /// Whether the schedule places steps by `max_iters` (and so needs it under a time budget).
    pub fn counts_steps_of_the_run(&self) -> bool {
        matches!(self, LrSchedule::Cosine { .. })
    }

    /// Checks the settings against the run's learning rate.
    pub fn check(&self, learning_rate: f64) -> Result<(), String> {
        let min_lr = match *self {
            LrSchedule::Constant => return Ok(()),
            LrSchedule::Cosine { min_lr, .. } => min_lr,
            LrSchedule::Wsd {
                decay_fraction,
                min_lr,
                ..
            } => {
                if !(decay_fraction > 0.0 && decay_fraction <= 1.0) {
                    return Err(format!(
                        "training.lr_schedule: decay_fraction is the share of the run spent \
                         decaying, in (0, 1], got {decay_fraction}"
                    ));
                }
                min_lr
            }
        };
        if !(min_lr >= 0.0 && min_lr <= learning_rate) {
            return Err(format!(
                "training.lr_schedule: min_lr must be between 0 and learning_rate \
                 ({learning_rate}), got {min_lr}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_is_constant() {
        assert_eq!(LrSchedule::Constant.lr_at(0, 1e-3, 100), 1e-3);
        assert_eq!(LrSchedule::Constant.lr_at(99, 1e-3, 100), 1e-3);
    }

    #[test]
    fn cosine_matches_nanogpt_at_known_steps() {
        // nanoGPT's shakespeare-char recipe: lr 1e-3, warmup 100, decay to 1e-4 at 5000.
        let s = LrSchedule::Cosine {
            warmup_iters: 100,
            min_lr: 1e-4,
            decay_iters: Some(5000),
        };
        let lr = |step| s.lr_at(step, 1e-3, 5000);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(lr(0), 1e-3 / 101.0));
        assert!(close(lr(49), 1e-3 * 50.0 / 101.0));
        assert!(close(lr(100), 1e-3), "peak right after warmup");
        assert!(close(lr(2550), 1e-4 + 0.5 * 9e-4), "half-way: midpoint");
        assert!(close(lr(5000), 1e-4));
        assert!(close(lr(6000), 1e-4), "floor after decay_iters");
        for step in 100..5000 {
            assert!(lr(step + 1) <= lr(step), "monotone decay at {step}");
        }
        assert!(s.check(1e-3).is_ok());
        assert!(s.check(1e-5).is_err());
    }

    #[test]
    fn cosine_under_a_budget_stretches_over_it() {
        // nanogpt_cpu_recipe.ron's schedule (2,000 steps) under a time budget: half the budget
        // spent is half-way through the cosine, whatever step that is.
        let s = LrSchedule::Cosine {
            warmup_iters: 100,
            min_lr: 1e-4,
            decay_iters: None,
        };
        let at = |step, fraction| s.lr_at_progress(Progress { step, fraction }, 1e-3, 2000);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(
            close(at(9, 0.001), 1e-3 * 10.0 / 101.0),
            "warmup counts steps"
        );
        let mid = 0.05 + 0.5 * 0.95;
        assert!(close(at(50_000, mid), 1e-4 + 0.5 * 9e-4));
        assert!(close(at(90_000, 1.0), 1e-4));
        assert!(close(at(90_000, 1.2), 1e-4));
        // The step-keyed schedule is the same function of steps.
        for step in [100, 777, 1999] {
            assert!(close(
                s.lr_at(step, 1e-3, 2000),
                at(step, step as f64 / 2000.0)
            ));
        }
    }

    #[test]
    fn wsd_warms_up_holds_then_decays_on_time() {
        let s = LrSchedule::Wsd {
            warmup_iters: 10,
            decay_fraction: 0.4,
            min_lr: 0.0,
        };
        let at = |step, fraction| s.lr_at_progress(Progress { step, fraction }, 0.01, 0);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(at(0, 0.0), 0.01 / 11.0));
        assert!(close(at(10, 0.01), 0.01), "peak right after warmup");
        assert!(close(at(500, 0.6), 0.01), "stable until the decay begins");
        assert!(close(at(600, 0.8), 0.005), "half-way down the decay");
        assert!(close(at(700, 1.0), 0.0));
        assert!(at(601, 0.6001) < 0.01, "the decay starts at 60% of the run");
        // In steps: the last 40% of 1,000 steps.
        assert_eq!(s.lr_at(600, 0.01, 1000), 0.01);
        assert!(close(s.lr_at(800, 0.01, 1000), 0.005));
        assert!(s.check(0.01).is_ok());
        for bad in [0.0, 1.5, f64::NAN] {
            let wsd = LrSchedule::Wsd {
                warmup_iters: 0,
                decay_fraction: bad,
                min_lr: 0.0,
            };
            assert!(wsd.check(0.01).is_err(), "{bad}");
        }
    }
}
