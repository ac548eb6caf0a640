//! Dropout masks follow the backend's seed.
//!
//! The backends' generators are process-wide, so a test that seeds one and expects a repeatable
//! draw cannot share its process with tests drawing random tensors at the same time.

use burn::backend::{Autodiff, Flex};
use burn::nn::DropoutConfig;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use tinygpt_kernels::dropout;

#[test]
fn dropout_masks_follow_the_backend_seed() {
    let _turn = crate::one_at_a_time();
    type B = Autodiff<Flex>;
    let device = Default::default();
    let module = DropoutConfig::new(0.2).init();
    let draw = |seed| {
        B::seed(&device, seed);
        dropout(&module, Tensor::<B, 2>::ones([64, 64], &device))
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
    // Consecutive masks differ too.
    B::seed(&device, 1);
    let first = dropout(&module, Tensor::<B, 2>::ones([64, 64], &device));
    let second = dropout(&module, Tensor::<B, 2>::ones([64, 64], &device));
    assert!(!first.equal(second).all().into_scalar());
}
