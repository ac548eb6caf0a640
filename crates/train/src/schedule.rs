//! Learning-rate schedules: the tutorial's constant rate, or nanoGPT's linear warmup followed by
//! cosine decay to a floor.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum LrSchedule {
    /// `learning_rate` at every step.
    #[default]
    Constant,
    /// nanoGPT's `get_lr`: linear warmup over `warmup_iters` steps, cosine decay from
    /// `learning_rate` to `min_lr` until `decay_iters` (default: max_iters), then `min_lr`.
    Cosine {
        warmup_iters: usize,
        min_lr: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decay_iters: Option<usize>,
    },
}

impl LrSchedule {
    /// The learning rate for optimizer step `step` (0-based).
    pub fn lr_at(&self, step: usize, learning_rate: f64, max_iters: usize) -> f64 {
        match *self {
            LrSchedule::Constant => learning_rate,
            LrSchedule::Cosine {
                warmup_iters,
                min_lr,
                decay_iters,
            } => {
                let decay_iters = decay_iters.unwrap_or(max_iters);
                if step < warmup_iters {
                    return learning_rate * (step + 1) as f64 / (warmup_iters + 1) as f64;
                }
                if step > decay_iters {
                    return min_lr;
                }
                let span = decay_iters.saturating_sub(warmup_iters).max(1);
                let ratio = (step - warmup_iters) as f64 / span as f64;
                let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
                min_lr + coeff * (learning_rate - min_lr)
            }
        }
    }

    /// Checks the settings against the run's learning rate.
    pub fn check(&self, learning_rate: f64) -> Result<(), String> {
        if let LrSchedule::Cosine { min_lr, .. } = *self {
            if !(min_lr >= 0.0 && min_lr <= learning_rate) {
                return Err(format!(
                    "training.lr_schedule: min_lr must be between 0 and learning_rate \
                     ({learning_rate}), got {min_lr}"
                ));
            }
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
}
