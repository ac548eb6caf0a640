//! The workspace's cross-crate tests, one module per subject, in one binary: each test binary
//! compiles the generic model and kernels again for every backend it touches, so they share
//! one. Tests that depend on a backend's process-wide random generator being theirs alone are in
//! `tests/seeded` instead.

mod attention_maps;
mod backends;
mod causal_mask;
mod configs;
mod cuda_parity;
mod end_to_end;
mod exact;
mod fuzz;
mod gpt2;
mod layer_kernels;
mod linear;
mod llama;
mod model;
mod model_kernels;
mod parity;
mod recipe;
mod speedrun;
