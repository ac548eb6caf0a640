//! From a [`BackendKind`] chosen at run time to code generic over `B: AutodiffBackend`: the one
//! place that names the concrete backend types.

use burn::tensor::backend::AutodiffBackend;
use tinygpt_train::{BackendError, BackendKind, Devices};

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

/// Whether this build can run the backend at all (CUDA needs the `cuda` cargo feature).
pub fn compiled_in(kind: BackendKind) -> bool {
    kind.is_cpu() || cfg!(feature = "cuda")
}

/// Runs `task` on the backend `kind`, after checking that the backend can run here.
///
/// Every call site instantiates its task for every backend: prefer [`crate::engine`], which
/// this crate has compiled already.
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
