//! Which Burn backend runs, and on which devices: the names the CLI and configs use. The
//! backends themselves are named in `tinygpt-backends`; the model code stays generic.

use std::fmt;
use std::str::FromStr;

/// The backends tinygpt can train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// Burn's ndarray CPU backend (multi-threaded, SIMD).
    NdArray,
    /// Burn's pure-Rust `flex` CPU backend: the fastest on the CPU, so the default.
    #[default]
    Flex,
    /// NVIDIA GPUs through CUDA (needs the `cuda` cargo feature and a driver at run time).
    Cuda,
    /// CUDA with bfloat16 tensors (parameters, activations and optimizer state).
    CudaBf16,
    /// CUDA with float16 tensors.
    CudaF16,
}

impl BackendKind {
    pub const ALL: [BackendKind; 5] = [
        BackendKind::NdArray,
        BackendKind::Flex,
        BackendKind::Cuda,
        BackendKind::CudaBf16,
        BackendKind::CudaF16,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::NdArray => "ndarray",
            BackendKind::Flex => "flex",
            BackendKind::Cuda => "cuda",
            BackendKind::CudaBf16 => "cuda-bf16",
            BackendKind::CudaF16 => "cuda-f16",
        }
    }

    /// Bytes of one tensor value: parameters, optimizer state and activations.
    pub fn bytes_per_value(self) -> f64 {
        match self {
            BackendKind::NdArray | BackendKind::Flex | BackendKind::Cuda => 4.0,
            BackendKind::CudaBf16 | BackendKind::CudaF16 => 2.0,
        }
    }

    /// Whether this runs on the CPU, in the machine's RAM.
    pub fn is_cpu(self) -> bool {
        matches!(self, BackendKind::NdArray | BackendKind::Flex)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| BackendError::Unknown(s.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("unknown backend {0:?}: choose ndarray, flex, cuda, cuda-bf16 or cuda-f16")]
    Unknown(String),
    #[error(
        "this tinygpt was built without CUDA support: rebuild with `--features cuda` \
         (e.g. `cargo xtask train CONFIG --features cuda -- --backend cuda`), or use \
         --backend ndarray or --backend flex"
    )]
    CudaNotCompiled,
    #[error(
        "no usable CUDA device: {0}\n\
         Check that an NVIDIA GPU and its driver are present (`nvidia-smi`), or use \
         --backend ndarray or --backend flex"
    )]
    CudaUnavailable(String),
    #[error(
        "GPU {index} cannot be used: {reason}\n\
         --devices names GPUs by their index, from 0 (`nvidia-smi -L` lists them)"
    )]
    NoSuchGpu { index: usize, reason: String },
    #[error(
        "--devices {given:?}: on the CPU backends --devices is a number of peers (e.g. \
         --devices 2); lists and ranges name GPUs"
    )]
    CpuDeviceList { given: String },
}

/// The devices a run uses (`--devices`): a number of peers on the CPU backends, GPU indices on
/// CUDA (`0,1,2,3`, `0-7`, or one index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    /// A bare number: that many CPU peers, or the one GPU with that index.
    Number(usize),
    /// A list or range of GPU indices, in order.
    List(Vec<usize>),
}

impl Default for Devices {
    fn default() -> Self {
        Devices::Number(1)
    }
}

impl FromStr for Devices {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |part: &str| {
            part.trim().parse::<usize>().map_err(|_| {
                format!(
                    "{text:?} is not a device count or a list of GPU indices (e.g. 2, 0,1 or \
                     0-7)"
                )
            })
        };
        if !text.contains([',', '-']) {
            let n = number(text)?;
            return Ok(Devices::Number(n));
        }
        let mut indices = Vec::new();
        for part in text.split(',') {
            match part.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (number(first)?, number(last)?);
                    if first > last {
                        return Err(format!("the range {part:?} runs backwards"));
                    }
                    indices.extend(first..=last);
                }
                None => indices.push(number(part)?),
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = indices.iter().find(|&&i| !seen.insert(i)) {
            return Err(format!("GPU {twice} is listed twice in {text:?}"));
        }
        Ok(Devices::List(indices))
    }
}

impl Devices {
    /// How many peers this makes on a CPU backend.
    pub fn cpu_peers(&self) -> Result<usize, BackendError> {
        match self {
            Devices::Number(0) => Err(BackendError::CpuDeviceList { given: "0".into() }),
            Devices::Number(n) => Ok(*n),
            Devices::List(list) => Err(BackendError::CpuDeviceList {
                given: list
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            }),
        }
    }

    /// The GPU indices, for CUDA.
    pub fn gpu_indices(&self) -> Vec<usize> {
        match self {
            Devices::Number(index) => vec![*index],
            Devices::List(list) => list.clone(),
        }
    }

    /// How many peers this makes on `kind`.
    pub fn peers(&self, kind: BackendKind) -> Result<usize, BackendError> {
        if kind.is_cpu() {
            self.cpu_peers()
        } else {
            Ok(self.gpu_indices().len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!("ndarray".parse::<BackendKind>(), Ok(BackendKind::NdArray));
        assert_eq!("FLEX".parse::<BackendKind>(), Ok(BackendKind::Flex));
        assert_eq!("cuda".parse::<BackendKind>(), Ok(BackendKind::Cuda));
        let err = "tpu".parse::<BackendKind>().unwrap_err().to_string();
        assert!(err.contains("ndarray, flex, cuda"), "{err}");
        assert_eq!(
            "cuda-bf16".parse::<BackendKind>(),
            Ok(BackendKind::CudaBf16)
        );
    }

    #[test]
    fn devices_parse_as_counts_lists_and_ranges() {
        assert_eq!("2".parse::<Devices>(), Ok(Devices::Number(2)));
        assert_eq!("0,1,3".parse::<Devices>(), Ok(Devices::List(vec![0, 1, 3])));
        assert_eq!(
            "0-3".parse::<Devices>(),
            Ok(Devices::List(vec![0, 1, 2, 3]))
        );
        assert_eq!("4-5,0".parse::<Devices>(), Ok(Devices::List(vec![4, 5, 0])));
        for bad in ["", "two", "3-1", "0,0", "1,", "-1", "0-1-2"] {
            assert!(bad.parse::<Devices>().is_err(), "{bad}");
        }
        assert_eq!(Devices::Number(2).peers(BackendKind::Flex), Ok(2));
        assert_eq!(Devices::Number(2).peers(BackendKind::Cuda), Ok(1));
        assert_eq!(Devices::Number(2).gpu_indices(), vec![2]);
        let err = Devices::List(vec![0, 1]).cpu_peers().unwrap_err();
        assert!(err.to_string().contains("number of peers"), "{err}");
        assert!(Devices::Number(0).cpu_peers().is_err());
    }
}
