//! The kernels on Burn's `flex` backend.

use super::HostBackend;
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::TensorData;

impl HostBackend for Flex {
    fn contiguous(tensor: FlexTensor) -> FlexTensor {
        tensor.to_contiguous()
    }

    fn values(tensor: &FlexTensor) -> &[f32] {
        tensor
            .as_slice::<f32>()
            .expect("a contiguous f32 flex tensor has a slice")
    }

    fn tensor(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
    }
}
