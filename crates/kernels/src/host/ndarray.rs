//! The kernels on Burn's `ndarray` backend.

use super::HostBackend;
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::NdArray;
use burn::tensor::TensorData;

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
