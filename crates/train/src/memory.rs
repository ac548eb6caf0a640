//! How much memory a run will need, estimated from its config before anything is allocated, and
//! how much the machine can give: so a model too big for it is refused with advice, not killed by
//! the kernel or aborted by the allocator half-way through building it.

use crate::BackendKind;
use tinygpt_model::{ModelConfig, StepShape};

/// Bytes a run needs, by what holds them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    pub parameters: u64,
    /// The model's weights.
    pub weights: f64,
    /// Gradients, AdamW's two moments and the updated weights while a step replaces them (training);
    /// the checkpoint's copy while it is read (generation).
    pub optimizer: f64,
    /// What one forward pass keeps: for training, every tensor autodiff needs for the backward
    /// pass of one batch; for generation, the keys and values cache of a full context.
    pub activations: f64,
    /// What running anything takes besides: the backends' thread pools, the allocator's caches,
    /// GEMM packing buffers.
    pub runtime: f64,
}

/// [`MemoryEstimate::runtime`]: a training step of the smallest configs grows the process by 5
/// to 30 MB beyond its tensors (measured with `tinygpt bench`, README "Memory").
const RUNTIME_BYTES: f64 = 32e6;

/// Copies of the weights besides the weights themselves during training: gradients, AdamW's
/// first and second moments, gradient sums under accumulation, and the new weights while an
/// update replaces the old.
const TRAINING_COPIES: f64 = 4.0;

impl MemoryEstimate {
    /// One training (or `bench`) step of `batch` sequences of the model's full context on
    /// `backend`.
    pub fn training(model: &ModelConfig, batch: usize, backend: BackendKind) -> Self {
        let bytes = backend.bytes_per_value();
        let parameters = model.num_params();
        let step = StepShape {
            batch,
            time: model.block_size,
            fused_attention: backend.is_cpu() && tinygpt_model::cpu_kernels(),
        };
        Self {
            parameters,
            weights: parameters as f64 * bytes,
            optimizer: parameters as f64 * bytes * TRAINING_COPIES,
            activations: model.activations(&step) * bytes,
            runtime: RUNTIME_BYTES,
        }
    }

    /// Sampling from the model: its weights, the checkpoint being read, and a full context's keys
    /// and values (bounded by two vectors of each layer's input width per position).
    pub fn generation(model: &ModelConfig, backend: BackendKind) -> Self {
        let bytes = backend.bytes_per_value();
        let parameters = model.num_params();
        let cache: f64 = model
            .layers
            .iter()
            .map(|layer| 2.0 * model.block_size as f64 * layer.d_input as f64)
            .sum();
        Self {
            parameters,
            weights: parameters as f64 * bytes,
            optimizer: parameters as f64 * bytes,
            activations: (cache + model.vocab_size as f64) * bytes,
            runtime: RUNTIME_BYTES,
        }
    }

    /// `replicas` copies of this run in one memory (data-parallel peers of one machine).
    pub fn replicas(self, replicas: usize) -> Self {
        let n = replicas as f64;
        Self {
            weights: self.weights * n,
            optimizer: self.optimizer * n,
            activations: self.activations * n,
            ..self
        }
    }

    pub fn total(&self) -> f64 {
        self.weights + self.optimizer + self.activations + self.runtime
    }

    /// What to make smaller for a training run that does not fit.
    pub fn what_to_shrink(&self) -> &'static str {
        if self.activations > self.weights + self.optimizer {
            "Lower training.batch_size or model.block_size (activations are most of it)"
        } else {
            "Shrink the model: model.n_embd or the number of layers (its parameters are most of it)"
        }
    }
}

/// Memory this process may still use, and what limits it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Available {
    pub bytes: u64,
    pub limited_by: &'static str,
}

/// What the machine can give this process: the smallest of the memory the kernel reports
/// available, the room left under a cgroup (container) memory limit, and the room left under an
/// address-space limit (`ulimit -v`). `None` where the system does not say (outside Linux).
pub fn available_memory() -> Option<Available> {
    let mut sources = Vec::new();
    if let Some(bytes) = meminfo_available() {
        sources.push(Available {
            bytes,
            limited_by: "available RAM",
        });
    }
    if let Some(bytes) = cgroup_room() {
        sources.push(Available {
            bytes,
            limited_by: "the container's memory limit (cgroup)",
        });
    }
    if let Some(bytes) = address_space_room() {
        sources.push(Available {
            bytes,
            limited_by: "the address-space limit (ulimit -v)",
        });
    }
    sources.into_iter().min_by_key(|a| a.bytes)
}

fn meminfo_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    kibibytes_field(&text, "MemAvailable:")
}

/// `field  1234 kB` in a /proc file, in bytes.
fn kibibytes_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `memory.max - memory.current` of this process's cgroup (v2), when it has a limit.
fn cgroup_room() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = membership
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .unwrap_or("/");
    let candidates = [format!("/sys/fs/cgroup{path}"), "/sys/fs/cgroup".into()];
    candidates.iter().find_map(|dir| {
        let read = |name: &str| std::fs::read_to_string(format!("{dir}/{name}")).ok();
        let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max": no limit
        let current: u64 = read("memory.current")?.trim().parse().ok()?;
        Some(max.saturating_sub(current))
    })
}

/// The address-space limit less what the process has mapped already.
#[cfg(not(unix))]
fn address_space_room() -> Option<u64> {
    None
}

/// The address-space limit less what the process has mapped already.
#[cfg(unix)]
fn address_space_room() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct, which `limit` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mapped = kibibytes_field(&status, "VmSize:")?;
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every unix
    Some((limit.rlim_cur as u64).saturating_sub(mapped))
}

/// Peak resident memory of this process so far (`VmHWM`), and its current size (`VmRSS`).
pub fn resident_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some((
        kibibytes_field(&status, "VmHWM:")?,
        kibibytes_field(&status, "VmRSS:")?,
    ))
}

/// Above this share of what is available a run is refused: the estimate is within about 20% of
/// what runs measure (README, "Memory"), so even an overestimate this large would not fit.
const REFUSE_ABOVE: f64 = 1.25;
/// Above this share a run is allowed with a warning.
const WARN_ABOVE: f64 = 0.8;

/// What to do about an estimate, given what is available.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Fits,
    /// Near the limit: go on, but say so.
    Tight(String),
    /// Far over: stop, and say what to shrink.
    TooBig(String),
}

/// Compares `need` with `available`. `what` names the job ("training"), `shrink` says what to
/// make smaller.
pub fn judge(
    need: &MemoryEstimate,
    available: Option<Available>,
    what: &str,
    shrink: &str,
) -> Verdict {
    let Some(available) = available else {
        return Verdict::Fits;
    };
    let total = need.total();
    let share = total / available.bytes as f64;
    let summary = format!(
        "{what} needs about {} ({}), and {} leaves {}",
        human_bytes(total),
        need.breakdown(),
        available.limited_by,
        human_bytes(available.bytes as f64),
    );
    if share > REFUSE_ABOVE {
        Verdict::TooBig(format!(
            "{summary}: it would run out of memory. {shrink}, or run on a machine with more memory \
             (tinygpt info CONFIG shows the estimate)"
        ))
    } else if share > WARN_ABOVE {
        Verdict::Tight(format!(
            "{summary}: it may run out of memory; {}",
            shrink.to_lowercase()
        ))
    } else {
        Verdict::Fits
    }
}

impl MemoryEstimate {
    /// "10,788,929 parameters: weights 43.2 MB, gradients and optimizer 173 MB, activations
    /// 7.8 GB, runtime 32.0 MB".
    pub fn breakdown(&self) -> String {
        format!(
            "{} parameters: weights {}, gradients and optimizer {}, activations {}, runtime {}",
            group_digits(self.parameters),
            human_bytes(self.weights),
            human_bytes(self.optimizer),
            human_bytes(self.activations),
            human_bytes(self.runtime)
        )
    }
}

/// `1234567` -> `1,234,567` (one helper for every count tinygpt prints or draws).
pub use tinygpt_plot::group_digits;

/// Bytes in decimal units, three significant digits: `6.21 GB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else if value >= 99.95 {
        format!("{value:.0} {}", UNITS[unit])
    } else if value >= 9.995 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(total: f64) -> MemoryEstimate {
        MemoryEstimate {
            parameters: 1,
            weights: total,
            optimizer: 0.0,
            activations: 0.0,
            runtime: 0.0,
        }
    }

    #[test]
    fn far_over_is_refused_near_is_warned() {
        let available = Some(Available {
            bytes: 1_000_000_000,
            limited_by: "available RAM",
        });
        let shrink = "Lower batch_size";
        assert_eq!(
            judge(&estimate(5e8), available, "training", shrink),
            Verdict::Fits
        );
        assert!(matches!(
            judge(&estimate(1.1e9), available, "training", shrink),
            Verdict::Tight(_)
        ));
        let Verdict::TooBig(message) = judge(&estimate(4e9), available, "training", shrink) else {
            panic!("4 GB of 1 GB must be refused");
        };
        assert!(
            message.contains("4.00 GB") && message.contains("1.00 GB"),
            "{message}"
        );
        assert!(message.contains("Lower batch_size"), "{message}");
        assert_eq!(
            judge(&estimate(4e9), None, "training", shrink),
            Verdict::Fits
        );
    }

    #[test]
    fn units() {
        assert_eq!(human_bytes(999.0), "999 B");
        assert_eq!(human_bytes(1_234_567.0), "1.23 MB");
        assert_eq!(human_bytes(19.2e9), "19.2 GB");
        assert_eq!(human_bytes(345e12), "345 TB");
        assert_eq!(group_digits(124_439_808), "124,439,808");
    }

    #[test]
    fn this_machine_reports_its_memory() {
        if cfg!(target_os = "linux") {
            let available = available_memory().expect("Linux reports MemAvailable");
            assert!(available.bytes > 0);
            let (peak, now) = resident_memory().expect("Linux reports VmHWM");
            assert!(peak >= now && now > 0);
        }
    }
}
