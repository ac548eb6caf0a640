//! Which backends the kernels serve, and how they reach a tensor's values.
//!
//! Layers and losses stay generic over the backend (`B: Backend`). Where a fused kernel exists,
//! they ask [`host_backend`] whether `B` is one of the host-memory backends (flex or ndarray, with
//! or without autodiff), move their tensors to that concrete type with [`cast`] (a checked
//! downcast, no `unsafe`), and fall back to plain tensor ops on every other backend and when the
//! kernels are switched off. A backend joins by implementing [`HostBackend`] in its own module.

mod flex;
mod ndarray;

use burn::backend::ndarray::NdArrayTensor;
use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A backend whose float tensors are f32 values in host memory that a kernel can read and
/// write directly.
pub trait HostBackend: Backend {
    /// The tensor with its values contiguous in row-major order (a copy only when they are not).
    fn contiguous(tensor: Self::FloatTensorPrimitive) -> Self::FloatTensorPrimitive;
    /// The values of a tensor that [`HostBackend::contiguous`] returned, checked to be f32.
    fn values(tensor: &Self::FloatTensorPrimitive) -> &[f32];
    /// A tensor of `shape` that takes ownership of `values`.
    fn tensor(values: Vec<f32>, shape: &[usize]) -> Self::FloatTensorPrimitive;
}

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

/// The host-memory backends the kernels serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Flex,
    NdArray,
}

/// Whether a kernel runs forward only or records its own backward step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The backend itself: forward only (evaluation, generation, the optimizer's update).
    Inference,
    /// `Autodiff<backend>`: forward plus the kernel's own backward step.
    Training,
}

/// `Some` when `B` is a backend the kernels serve and the kernels are on.
pub fn host_backend<B: Backend>() -> Option<(Host, Mode)> {
    if !cpu_kernels() {
        return None;
    }
    let backend = TypeId::of::<B>();
    [
        (TypeId::of::<Flex>(), (Host::Flex, Mode::Inference)),
        (TypeId::of::<Autodiff<Flex>>(), (Host::Flex, Mode::Training)),
        (
            TypeId::of::<NdArray<f32>>(),
            (Host::NdArray, Mode::Inference),
        ),
        (
            TypeId::of::<Autodiff<NdArray<f32>>>(),
            (Host::NdArray, Mode::Training),
        ),
    ]
    .into_iter()
    .find_map(|(id, served)| (id == backend).then_some(served))
}

/// Moves a value between two names of one type; the caller has compared the `TypeId`s (through
/// [`host_backend`]), so the downcast cannot fail.
pub fn cast<T: 'static, U: 'static>(value: T) -> U {
    let boxed: Box<dyn Any> = Box::new(value);
    *boxed
        .downcast::<U>()
        .unwrap_or_else(|_| unreachable!("the caller compared the TypeIds"))
}

/// The values of an int tensor (token ids, targets) as indices below `bound`; panics with
/// `outside(value)` on one that is not, which a caller's checks should have made impossible.
///
/// On ndarray the values are read from the array itself: its `into_data` collects a shared
/// array (a batch the caller still holds) element by element through a dynamic-rank iterator,
/// which was 15% of a bigram training step.
pub(crate) fn indices<B: Backend, const D: usize>(
    tensor: Tensor<B, D, Int>,
    bound: usize,
    outside: impl Fn(i64) -> String,
) -> Arc<[usize]> {
    let check = |value: i64| {
        usize::try_from(value)
            .ok()
            .filter(|&index| index < bound)
            .unwrap_or_else(|| panic!("{}", outside(value)))
    };
    let mut primitive = tensor.into_primitive();
    if TypeId::of::<B::IntTensorPrimitive>() == TypeId::of::<NdArrayTensor>() {
        let values: NdArrayTensor = cast(primitive);
        if let Some(indices) = ndarray::indices(&values, check) {
            return indices;
        }
        primitive = cast(values);
    }
    Tensor::<B, D, Int>::from_primitive(primitive)
        .into_data()
        .convert::<i64>()
        .iter::<i64>()
        .map(check)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_flex_and_ndarray_with_and_without_autodiff() {
        assert_eq!(host_backend::<Flex>(), Some((Host::Flex, Mode::Inference)));
        assert_eq!(
            host_backend::<Autodiff<NdArray<f32>>>(),
            Some((Host::NdArray, Mode::Training))
        );
        assert_eq!(host_backend::<NdArray<f64>>(), None);
    }

    fn round_trip<H: HostBackend>() {
        let tensor = H::tensor(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
        let transposed = H::float_swap_dims(tensor, 0, 1);
        let contiguous = H::contiguous(transposed);
        assert_eq!(H::values(&contiguous), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }

    fn indices_of<B: Backend>() {
        let device = Default::default();
        let ids = Tensor::<B, 2, Int>::from_data([[3, 1, 4], [1, 5, 9]], &device);
        let kept = ids.clone();
        // A transposed view, read while another handle shares the values.
        let outside = |id| format!("id {id}");
        assert_eq!(
            *indices(ids.clone().swap_dims(0, 1), 10, outside),
            [3, 1, 1, 5, 4, 9]
        );
        assert_eq!(*indices(ids, 10, outside), [3, 1, 4, 1, 5, 9]);
        drop(kept);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            indices(Tensor::<B, 1, Int>::from_data([0, 9], &device), 9, |id| {
                format!("token id {id} is too large")
            })
        }));
        let message = *result.unwrap_err().downcast::<String>().unwrap();
        assert_eq!(message, "token id 9 is too large");
    }

    #[test]
    fn indices_on_every_backend() {
        indices_of::<Flex>();
        indices_of::<NdArray>();
        indices_of::<Autodiff<NdArray>>();
        let negative = std::panic::catch_unwind(|| {
            indices(
                Tensor::<NdArray, 1, Int>::from_data([-1], &Default::default()),
                9,
                |id| format!("{id}"),
            )
        });
        assert!(negative.is_err());
    }

    #[test]
    fn values_come_out_in_row_major_order() {
        round_trip::<Flex>();
        round_trip::<NdArray<f32>>();
    }
}
