//! Backends picked by name at run time (`tinygpt-backends`).

use std::path::Path;
use tinygpt_backends::{engine, BackendError, BackendKind};
use tinygpt_train::bench::StepPlan;
use tinygpt_train::RunConfig;

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_a_clear_error() {
    let err = engine(BackendKind::Cuda, None)
        .err()
        .expect("no CUDA in this build");
    assert_eq!(err, BackendError::CudaNotCompiled);
    assert!(err.to_string().contains("--features cuda"));
}

#[test]
fn times_training_steps() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/bigram.ron");
    let run = RunConfig::load(&path).unwrap();
    let config = run.model.resolve(65).unwrap();
    let mut seen = Vec::new();
    let plan = StepPlan {
        batch_size: 4,
        warmup: 1,
        steps: 3,
    };
    let timing = engine(BackendKind::NdArray, None)
        .unwrap()
        .time_train_steps(&config, &run.training, plan, &mut |i, _| seen.push(i))
        .unwrap();
    assert_eq!(
        seen,
        [0, 1, 2, 3],
        "every step, warm-up included, is reported"
    );
    assert_eq!(timing.steps, 3);
    assert_eq!(timing.backend, "ndarray");
    assert!(timing.min_ms <= timing.median_ms && timing.median_ms <= timing.max_ms);
    assert!(timing.tokens_per_sec > 0.0 && timing.gflops > 0.0);
}
