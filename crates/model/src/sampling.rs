//! Choosing the next token from logits: temperature, top-k, or greedy argmax.

use rand::{rngs::StdRng, Rng, SeedableRng};

/// How the next token is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Divides the logits; 0 means always take the most likely token.
    pub temperature: f64,
    /// Sample only among the `k` most likely tokens.
    pub top_k: Option<usize>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
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
        let mut order: Vec<usize> = (0..logits.len()).collect();
        let keep = match self.sampling.top_k {
            Some(k) if k > 0 && k < logits.len() => {
                order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
                k
            }
            _ => logits.len(),
        };
        let candidates = &order[..keep];
        let scaled: Vec<f64> = candidates
            .iter()
            .map(|&i| logits[i] as f64 / self.sampling.temperature)
            .collect();
        let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            return argmax();
        }
        let weights: Vec<f64> = scaled.iter().map(|&s| (s - max).exp()).collect();
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
                top_k: None,
            },
            0,
        );
        assert_eq!(sampler.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn top_k_restricts_the_choice() {
        let mut sampler = Sampler::new(
            Sampling {
                temperature: 1.0,
                top_k: Some(2),
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
                    top_k: None,
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
