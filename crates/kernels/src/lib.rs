//! What makes tinygpt fast on a CPU, kept apart from what the model is.
//!
//! The kernels work on plain `f32` slices and know nothing of Burn: causal self-attention with
//! its backward pass ([`attention`]), cross-entropy ([`cross_entropy`]), the AdamW update
//! ([`adamw`]), a Linear layer's matrix products ([`linear`]), layer normalisation
//! ([`layer_norm`], RMSNorm too), rotary position embeddings ([`rope`]), a SwiGLU MLP's gate ([`swiglu`]), embedding lookups ([`ops::embedding`]) and dropout masks drawn on every core ([`dropout`]), all built on the row
//! math in
//! [`simd`], which picks AVX-512, AVX2 or the baseline at run time and computes the same values on
//! each. [`host`] binds them to the Burn backends whose tensors live in host memory, one module
//! per backend (flex, ndarray), and [`ops`] turns them into Burn operations with their own
//! backward steps.
//!
//! The model code stays generic over the backend and calls the narrow interface below: each
//! function runs its kernel when the backend is one it serves and the kernels are on
//! ([`set_cpu_kernels`]), and otherwise hands its tensors back for the plain tensor-op path, so
//! CUDA and any other backend run exactly what they ran before. Tests in the crates that own the
//! plain paths hold the two to the same values and gradients.

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod dropout;
pub mod host;
pub mod layer_norm;
pub mod linear;
pub mod ops;
pub mod rope;
pub mod simd;
pub mod swiglu;

pub use adamw::FusedAdamW;
pub use dropout::{dropout, dropout_plain, seed_thread_masks};
pub use host::{cpu_kernels, host_backend, set_cpu_kernels, Host, Mode};
pub use ops::attention::attention;
pub use ops::cross_entropy::cross_entropy;
pub use ops::embedding::embedding;
pub use ops::layer_norm::{layer_norm, rms_norm};
pub use ops::linear::{linear, linear_relu, linear_transposed};
pub use ops::rope::rope;
pub use ops::swiglu::swiglu;
pub use rope::RopeTable;
