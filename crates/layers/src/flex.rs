//! Run-time dispatch to the hand-written CPU kernels of the `flex` backend.
//!
//! Layers and losses stay generic over the backend (`B: Backend`). Where a fused kernel exists,
//! they ask [`flex_kernel_backend`] whether `B` is `Flex` or `Autodiff<Flex>`, move their
//! tensors to that concrete type with [`cast`] (a checked downcast, no `unsafe`), and fall back
//! to plain tensor ops on every other backend and when the kernels are switched off.

use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::TensorData;
use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicBool, Ordering};

/// The training backend the kernels serve (the trainer's `Autodiff<Flex>`).
pub type FlexAutodiff = Autodiff<Flex>;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the fused CPU kernels on or off for the whole process (on by default): benchmarks
/// compare the two paths in one run with it.
pub fn set_cpu_kernels(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether the fused CPU kernels are on.
pub fn cpu_kernels() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Which flex backend a kernel runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlexKind {
    /// `Flex`: forward only (evaluation, generation).
    Inference,
    /// `Autodiff<Flex>`: forward plus the kernel's own backward step.
    Training,
}

/// `Some` when `B` is a flex backend and the kernels are on.
pub fn flex_kernel_backend<B: Backend>() -> Option<FlexKind> {
    if !cpu_kernels() {
        return None;
    }
    let backend = TypeId::of::<B>();
    if backend == TypeId::of::<Flex>() {
        Some(FlexKind::Inference)
    } else if backend == TypeId::of::<FlexAutodiff>() {
        Some(FlexKind::Training)
    } else {
        None
    }
}

/// Moves a value between two names of one type; the caller has compared the `TypeId`s (through
/// [`flex_kernel_backend`]), so the downcast cannot fail.
pub fn cast<T: 'static, U: 'static>(value: T) -> U {
    let boxed: Box<dyn Any> = Box::new(value);
    *boxed
        .downcast::<U>()
        .unwrap_or_else(|_| unreachable!("the caller compared the TypeIds"))
}

/// The values of a flex tensor that the caller made contiguous (`to_contiguous`, a copy only
/// when it is not already) and checked to be f32.
pub fn f32_values(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("a contiguous f32 flex tensor has a slice")
}

/// A flex tensor of `shape` that takes ownership of `values`.
pub fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}
