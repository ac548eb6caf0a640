//! The real `tinygpt` binary, started as a user would: one module per subject, in one test
//! binary.

mod commands;
mod common;
mod devices;
mod gpt2;
mod llama;
mod plot;
