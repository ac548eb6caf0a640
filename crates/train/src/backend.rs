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
}

/// Work that runs on whichever backend is chosen: implement it once, generically.
pub trait BackendTask {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device, kind: BackendKind) -> Self::Output;
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
    match kind {
        BackendKind::NdArray => Ok(task.run::<NdArrayBackend>(Default::default(), kind)),
        BackendKind::Flex => Ok(task.run::<FlexBackend>(Default::default(), kind)),
        BackendKind::Cuda | BackendKind::CudaBf16 | BackendKind::CudaF16 => run_cuda(kind, task),
    }
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<T: BackendTask>(_kind: BackendKind, _task: T) -> Result<T::Output, BackendError> {
    Err(BackendError::CudaNotCompiled)
}

#[cfg(feature = "cuda")]
fn run_cuda<T: BackendTask>(kind: BackendKind, task: T) -> Result<T::Output, BackendError> {
    use burn::tensor::{bf16, f16};
    persist_kernel_caches();
    let device = burn::backend::cuda::CudaDevice::default();
    probe_cuda(&device)?;
    let fused = std::env::var("TINYGPT_CUDA_FUSION").map_or(true, |v| v != "0");
    Ok(match (kind, fused) {
        (BackendKind::CudaBf16, true) => task.run::<CudaBackend<bf16>>(device, kind),
        (BackendKind::CudaF16, true) => task.run::<CudaBackend<f16>>(device, kind),
        (_, true) => task.run::<CudaBackend>(device, kind),
        (BackendKind::CudaBf16, false) => task.run::<UnfusedCudaBackend<bf16>>(device, kind),
        (BackendKind::CudaF16, false) => task.run::<UnfusedCudaBackend<f16>>(device, kind),
        (_, false) => task.run::<UnfusedCudaBackend>(device, kind),
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
