//! tinygpt's jobs on the backend named at run time.
//!
//! The model, the layers and the trainer are generic over `B: Backend`, and Rust compiles
//! generic code for each concrete backend in the crate that names it. Named in the CLI and in
//! every test binary, the whole trainer was compiled again in each: minutes of build per binary.
//! This crate names the backends once ([`dispatch`]) and compiles the jobs for each of them
//! behind two trait objects, [`Engine`] (train, load, benchmark) and [`Model`] (generate,
//! evaluate, export): callers pick a backend by its [`BackendKind`] and compile none of it.

pub mod dispatch;
mod engine;

pub use dispatch::{compiled_in, dispatch, dispatch_devices, BackendTask, DevicesTask};
pub use engine::{engine, Chat, Engine, Model, Parameter};
pub use tinygpt_train::{BackendError, BackendKind, Devices};
