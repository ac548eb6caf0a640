//! Choosing the next token from logits: temperature, top-k, or greedy argmax.

use rand::{rngs::StdRng, Rng, SeedableRng};

/// How the next token is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Divides the logits; 0 means always take the most likely token.
    pub temperature: f64,
    /// Sample only among the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Nucleus sampling: only among the most likely tokens whose probabilities sum to `p`.
    pub top_p: Option<f64>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        }
    }
}

/// A [`Sampling`] rule with its own seeded random stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub sampling: Sampling,
    rng: StdRng,
}

impl Sampler {
    pub fn new(sampling: Sampling, seed: u64) -> Self {
        Self {
            sampling,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Always the likeliest token (temperature 0): what parity checks and benchmarks compare.
    pub fn greedy() -> Self {
        Self::new(
            Sampling {
                temperature: 0.0,
                top_k: None,
                top_p: None,
            },
            0,
        )
    }

    /// Picks a token id from one position's logits.
    pub fn sample(&mut self, logits: &[f32]) -> usize {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        };
        if self.sampling.temperature <= 0.0 {
            return argmax();
        }
        // Most likely first; ties keep id order so sampling stays deterministic.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let mut keep = match self.sampling.top_k {
            Some(k) if k > 0 => k.min(logits.len()),
            _ => logits.len(),
        };
        let scaled: Vec<f64> = order[..keep]
            .iter()
            .map(|&i| logits[i] as f64 / self.sampling.temperature)
            .collect();
        let max = scaled[0];
        if !max.is_finite() {
            return argmax();
        }
        let mut weights: Vec<f64> = scaled.iter().map(|&s| (s - max).exp()).collect();
        if let Some(p) = self.sampling.top_p {
            let total: f64 = weights.iter().sum();
            let mut cumulative = 0.0;
            // The smallest prefix whose probability reaches p (always at least one token).
            keep = weights
                .iter()
                .position(|w| {
                    cumulative += w / total;
                    cumulative >= p
                })
                .map_or(keep, |last| last + 1);
            weights.truncate(keep);
        }
        let candidates = &order[..keep];
        let total: f64 = weights.iter().sum();
        let mut threshold = self.rng.random::<f64>() * total;
        for (&token, &weight) in candidates.iter().zip(&weights) {
            threshold -= weight;
            if threshold < 0.0 {
                return token;
            }
        }
        candidates[keep - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_temperature_is_argmax() {
        let mut sampler = Sampler::new(
            Sampling {
                temperature: 0.0,
                ..Sampling::default()
            },
            0,
        );
        assert_eq!(sampler.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn top_k_restricts_the_choice() {
        let mut sampler = Sampler::new(
            Sampling {
                top_k: Some(2),
                ..Sampling::default()
            },
            3,
        );
        let logits = [1.0, 0.0, 1.2, 0.9, -5.0];
        for _ in 0..500 {
            let t = sampler.sample(&logits);
            assert!(t == 0 || t == 2, "{t}");
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps the first two (0.8 >= 0.75).
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
        let mut sampler = Sampler::new(
            Sampling {
                top_p: Some(0.75),
                ..Sampling::default()
            },
            9,
        );
        let draws: Vec<usize> = (0..2000).map(|_| sampler.sample(&logits)).collect();
        assert!(draws.iter().all(|&t| t < 2), "only the nucleus is sampled");
        let first = draws.iter().filter(|&&t| t == 0).count() as f64 / 2000.0;
        assert!(
            (first - 0.5 / 0.8).abs() < 0.04,
            "renormalised within the nucleus: {first}"
        );
        // A tiny p keeps just the most likely token.
        let mut greedy = Sampler::new(
            Sampling {
                top_p: Some(1e-9),
                ..Sampling::default()
            },
            1,
        );
        assert!((0..50).all(|_| greedy.sample(&logits) == 0));
    }

    #[test]
    fn frequencies_follow_softmax() {
        let mut sampler = Sampler::new(Sampling::default(), 42);
        let logits = [0.0f32, (3.0f32).ln()]; // probabilities 1/4 and 3/4
        let n = 20_000;
        let ones = (0..n).filter(|_| sampler.sample(&logits) == 1).count();
        let p = ones as f64 / n as f64;
        assert!((p - 0.75).abs() < 0.02, "{p}");
    }

    #[test]
    fn seeded_and_temperature_sharpens() {
        let draw = |seed, temperature| {
            let mut s = Sampler::new(
                Sampling {
                    temperature,
                    ..Sampling::default()
                },
                seed,
            );
            (0..200)
                .map(|_| s.sample(&[0.0, 1.0, 0.5]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5, 1.0), draw(5, 1.0));
        assert_ne!(draw(5, 1.0), draw(6, 1.0));
        let share = |v: Vec<usize>| v.iter().filter(|&&t| t == 1).count();
        assert!(share(draw(5, 0.2)) > share(draw(5, 1.0)));
    }
}
