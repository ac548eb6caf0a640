//! The kernels on Burn's `ndarray` backend.

use super::HostBackend;
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::NdArray;
use burn::tensor::TensorData;
use std::sync::Arc;

impl HostBackend for NdArray<f32> {
    fn contiguous(tensor: NdArrayTensor) -> NdArrayTensor {
        let NdArrayTensor::F32(storage) = &tensor else {
            panic!("the kernels take f32 tensors (checked by the caller)");
        };
        let view = storage.view();
        if view.is_standard_layout() {
            return tensor;
        }
        let shape = view.shape().to_vec();
        NdArrayTensor::from_data(TensorData::new(view.iter().copied().collect(), shape))
    }

    fn values(tensor: &NdArrayTensor) -> &[f32] {
        let NdArrayTensor::F32(storage) = tensor else {
            panic!("the kernels take f32 tensors (checked by the caller)");
        };
        storage
            .view()
            .to_slice()
            .expect("a contiguous ndarray tensor has a slice")
    }

    fn tensor(values: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
        NdArrayTensor::from_data(TensorData::new(values, shape.to_vec()))
    }
}

/// The values of an i64 or i32 tensor through `check`, straight from the array (its slice when
/// it is in standard layout); `None` for other integer types.
pub(super) fn indices(
    tensor: &NdArrayTensor,
    check: impl Fn(i64) -> usize,
) -> Option<Arc<[usize]>> {
    Some(match tensor {
        NdArrayTensor::I64(storage) => {
            let view = storage.view();
            match view.as_slice() {
                Some(values) => values.iter().map(|&v| check(v)).collect(),
                None => view.iter().map(|&v| check(v)).collect(),
            }
        }
        NdArrayTensor::I32(storage) => {
            let view = storage.view();
            match view.as_slice() {
                Some(values) => values.iter().map(|&v| check(v.into())).collect(),
                None => view.iter().map(|&v| check(v.into())).collect(),
            }
        }
        _ => return None,
    })
}
