//! The kernels as Burn operations on the host backends: forward only on the backend itself,
//! forward plus a hand-written backward step under `Autodiff`.

pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod layer_norm;
pub mod linear;
mod record;
