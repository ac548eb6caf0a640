//! Which Burn backend runs: the CLI and config pick one, the model code stays generic.

use burn::tensor::backend::AutodiffBackend;
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

    /// Whether this build can run the backend at all.
    pub fn compiled_in(self) -> bool {
        match self {
            BackendKind::NdArray | BackendKind::Flex => true,
            BackendKind::Cuda | BackendKind::CudaBf16 | BackendKind::CudaF16 => {
                cfg!(feature = "cuda")
            }
        }
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

/// Work that runs on whichever backend is chosen: implement it once, generically.
pub trait BackendTask {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device, kind: BackendKind) -> Self::Output;
}

/// Work on several devices of one backend at once (data-parallel training).
pub trait DevicesTask {
    type Output;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>, kind: BackendKind) -> Self::Output;
}

/// A one-device task run through [`dispatch_devices`].
struct OnFirst<T>(T);

impl<T: BackendTask> DevicesTask for OnFirst<T> {
    type Output = T::Output;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>, kind: BackendKind) -> T::Output {
        let device = devices.into_iter().next().expect("one device");
        self.0.run::<B>(device, kind)
    }
}

pub type NdArrayBackend = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
pub type FlexBackend = burn::backend::Autodiff<burn::backend::Flex>;
#[cfg(feature = "cuda")]
pub type CudaBackend<F = f32> = burn::backend::Autodiff<burn::backend::Cuda<F, i32>>;
/// CUDA without Burn's operation fusion (`TINYGPT_CUDA_FUSION=0`), to measure what fusion does.
#[cfg(feature = "cuda")]
pub type UnfusedCudaBackend<F = f32> =
    burn::backend::Autodiff<burn_cubecl::CubeBackend<burn::cubecl::cuda::CudaRuntime, F, i32, u8>>;

/// Runs `task` on the backend `kind`, after checking that the backend can run here.
pub fn dispatch<T: BackendTask>(kind: BackendKind, task: T) -> Result<T::Output, BackendError> {
    dispatch_devices(kind, None, OnFirst(task))
}

/// Runs `task` on the backend `kind` with the devices `devices` names (`None`: the one default
/// device), after checking that each can run here.
pub fn dispatch_devices<T: DevicesTask>(
    kind: BackendKind,
    devices: Option<&Devices>,
    task: T,
) -> Result<T::Output, BackendError> {
    let cpu_peers = match devices {
        Some(devices) if kind.is_cpu() => devices.cpu_peers()?,
        _ => 1,
    };
    match kind {
        BackendKind::NdArray => {
            Ok(task.run::<NdArrayBackend>(vec![Default::default(); cpu_peers], kind))
        }
        BackendKind::Flex => Ok(task.run::<FlexBackend>(vec![Default::default(); cpu_peers], kind)),
        BackendKind::Cuda | BackendKind::CudaBf16 | BackendKind::CudaF16 => {
            run_cuda(kind, devices.map(Devices::gpu_indices), task)
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<T: DevicesTask>(
    _kind: BackendKind,
    _indices: Option<Vec<usize>>,
    _task: T,
) -> Result<T::Output, BackendError> {
    Err(BackendError::CudaNotCompiled)
}

#[cfg(feature = "cuda")]
fn run_cuda<T: DevicesTask>(
    kind: BackendKind,
    indices: Option<Vec<usize>>,
    task: T,
) -> Result<T::Output, BackendError> {
    use burn::backend::cuda::CudaDevice;
    use burn::tensor::{bf16, f16};
    persist_kernel_caches();
    let devices = match indices {
        None => {
            let device = CudaDevice::default();
            probe_cuda(&device)?;
            vec![device]
        }
        Some(indices) => {
            let mut devices = Vec::with_capacity(indices.len());
            for index in indices {
                let device = CudaDevice::new(index);
                probe_cuda(&device).map_err(|e| BackendError::NoSuchGpu {
                    index,
                    reason: match e {
                        BackendError::CudaUnavailable(reason) => reason,
                        other => other.to_string(),
                    },
                })?;
                devices.push(device);
            }
            devices
        }
    };
    let fused = std::env::var("TINYGPT_CUDA_FUSION").map_or(true, |v| v != "0");
    Ok(match (kind, fused) {
        (BackendKind::CudaBf16, true) => task.run::<CudaBackend<bf16>>(devices, kind),
        (BackendKind::CudaF16, true) => task.run::<CudaBackend<f16>>(devices, kind),
        (_, true) => task.run::<CudaBackend>(devices, kind),
        (BackendKind::CudaBf16, false) => task.run::<UnfusedCudaBackend<bf16>>(devices, kind),
        (BackendKind::CudaF16, false) => task.run::<UnfusedCudaBackend<f16>>(devices, kind),
        (_, false) => task.run::<UnfusedCudaBackend>(devices, kind),
    })
}

/// Where CubeCL keeps what a CUDA run compiles: `TINYGPT_KERNEL_CACHE`, else CubeCL's "target"
/// location (the workspace's `target/`, or the user's cache directory, `~/.cache/cubecl`, outside
/// a Cargo workspace).
#[cfg(feature = "cuda")]
pub fn kernel_cache_location() -> burn::cubecl::config::cache::CacheConfig {
    use burn::cubecl::config::cache::CacheConfig;
    match std::env::var_os("TINYGPT_KERNEL_CACHE") {
        Some(dir) if !dir.is_empty() => CacheConfig::File(dir.into()),
        _ => CacheConfig::Target,
    }
}

/// Keeps the kernels nvrtc compiles (PTX) and the autotuner's choices on disk between runs, so
/// only the first run on a machine pays for them (CubeCL keeps autotune results by default, and
/// compiled kernels not at all). A `cubecl.toml` the user wrote, and `CUBECL_*` variables, still
/// apply; a compilation cache set there wins.
#[cfg(feature = "cuda")]
fn persist_kernel_caches() {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if CubeClRuntimeConfig::storage().lock().is_some() {
            return; // already read by CubeCL: too late to change, and nothing to override
        }
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if config.compilation.cache.is_none() {
            config.compilation.cache = Some(kernel_cache_location());
        }
        if std::env::var_os("TINYGPT_KERNEL_CACHE").is_some() {
            config.autotune.cache = kernel_cache_location();
        }
        CubeClRuntimeConfig::set(config);
    });
}

/// Burn's CUDA runtime panics when the driver or device is missing; turn that into an error
/// before any real work starts.
#[cfg(feature = "cuda")]
fn probe_cuda(device: &burn::backend::cuda::CudaDevice) -> Result<(), BackendError> {
    use burn::tensor::Tensor;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        Tensor::<burn::backend::Cuda<f32, i32>, 1>::ones([4], device)
            .sum()
            .into_scalar()
    });
    std::panic::set_hook(hook);
    match probe {
        Ok(sum) if (sum - 4.0).abs() < 1e-6 => Ok(()),
        Ok(sum) => Err(BackendError::CudaUnavailable(format!(
            "a test sum returned {sum} instead of 4"
        ))),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA runtime failed to start".into());
            Err(BackendError::CudaUnavailable(reason))
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

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        struct Nothing;
        impl BackendTask for Nothing {
            type Output = ();
            fn run<B: AutodiffBackend>(self, _: B::Device, _: BackendKind) {}
        }
        let err = dispatch(BackendKind::Cuda, Nothing).unwrap_err();
        assert_eq!(err, BackendError::CudaNotCompiled);
        assert!(err.to_string().contains("--features cuda"));
    }
}
