//! A run's time budget: `time_budget: "10m"` in a config, `--time-budget 3m` on the command line.
//!
//! The budget is training time only (the optimizer steps): evaluations, checkpoints and the final
//! sample are not counted, so the same budget buys the same training on a run that evaluates
//! often and one that does not.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Training time a run may spend: `"90s"`, `"10m"`, `"1h30m"`, `"2.5m"`, or plain seconds.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct TimeBudget(Duration);

impl TimeBudget {
    pub fn from_secs_f64(seconds: f64) -> Self {
        Self(Duration::from_secs_f64(seconds))
    }

    pub fn duration(&self) -> Duration {
        self.0
    }

    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }

    /// How much of the budget `spent` is, from 0; 1 or more once it is used up.
    pub fn fraction(&self, spent: Duration) -> f64 {
        spent.as_secs_f64() / self.as_secs_f64()
    }
}

/// A budget that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "cannot read the time budget {text:?}: write a positive duration such as \"90s\", \"10m\", \
     \"1h30m\" or \"2.5m\" (units h, m, s)"
)]
pub struct BudgetError {
    text: String,
}

impl FromStr for TimeBudget {
    type Err = BudgetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || BudgetError {
            text: text.to_string(),
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(error());
        }
        // Plain seconds.
        if let Ok(seconds) = trimmed.parse::<f64>() {
            return positive(seconds).ok_or_else(error);
        }
        let mut seconds = 0.0;
        let mut number = String::new();
        let mut last_unit = f64::INFINITY;
        for c in trimmed.chars() {
            let unit = match c {
                '0'..='9' | '.' => {
                    number.push(c);
                    continue;
                }
                'h' => 3600.0,
                'm' => 60.0,
                's' => 1.0,
                _ => return Err(error()),
            };
            // Each unit once, largest first: "1h30m", not "30m1h" or "1m1m".
            if number.is_empty() || unit >= last_unit {
                return Err(error());
            }
            let value: f64 = number.parse().map_err(|_| error())?;
            seconds += value * unit;
            number.clear();
            last_unit = unit;
        }
        if !number.is_empty() {
            return Err(error());
        }
        positive(seconds).ok_or_else(error)
    }
}

fn positive(seconds: f64) -> Option<TimeBudget> {
    (seconds > 0.0 && seconds.is_finite() && seconds < 1e9)
        .then(|| TimeBudget::from_secs_f64(seconds))
}

impl fmt::Display for TimeBudget {
    /// The shortest spelling that reads back to the same budget: `10m`, `1h30m`, `2m30s`, `1.5s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.as_secs_f64();
        if total.fract() != 0.0 {
            return write!(f, "{total}s");
        }
        let total = total as u64;
        let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if seconds > 0 || total == 0 {
            write!(f, "{seconds}s")?;
        }
        Ok(())
    }
}

impl Serialize for TimeBudget {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TimeBudget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_spellings_a_user_writes() {
        for (text, seconds) in [
            ("10m", 600.0),
            ("90s", 90.0),
            ("1h30m", 5400.0),
            ("2.5m", 150.0),
            ("1h2m3s", 3723.0),
            ("600", 600.0),
            ("0.5s", 0.5),
            (" 3m ", 180.0),
        ] {
            let budget: TimeBudget = text.parse().unwrap();
            assert_eq!(budget.as_secs_f64(), seconds, "{text}");
        }
        for bad in [
            "", "0", "-5", "10x", "m", "30m1h", "1m1m", "5m3", "1.2.3s", "inf",
        ] {
            let err = bad.parse::<TimeBudget>().unwrap_err().to_string();
            assert!(err.contains("10m"), "{bad}: {err}");
        }
    }

    #[test]
    fn writes_what_reads_back() {
        for text in ["10m", "1h30m", "2m30s", "45s", "1.5s", "2h"] {
            let budget: TimeBudget = text.parse().unwrap();
            assert_eq!(budget.to_string(), text);
            let ron = ron::to_string(&budget).unwrap();
            assert_eq!(ron::from_str::<TimeBudget>(&ron).unwrap(), budget);
        }
        assert_eq!("150s".parse::<TimeBudget>().unwrap().to_string(), "2m30s");
    }

    #[test]
    fn fraction_of_the_budget() {
        let budget: TimeBudget = "10s".parse().unwrap();
        assert_eq!(budget.fraction(Duration::from_secs(5)), 0.5);
        assert!(budget.fraction(Duration::from_secs(11)) > 1.0);
    }
}
