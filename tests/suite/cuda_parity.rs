//! CPU against CUDA, and CUDA's half precisions against its f32, on the same weights and batch:
//! logits, loss and every gradient, each held to the error its arithmetic allows. Needs
//! `--features cuda` and an NVIDIA GPU; without either the test reports that it was skipped and
//! why.
//!
//! The bounds, in the test's measure |a - b| / max(|a|, 1) (so relative for values above 1 and
//! absolute below):
//! - f32 on CUDA against ndarray. Burn 0.21's CUDA matmul runs f32 products on the tensor cores
//!   in TF32 (cubek-matmul's `adjust_dtypes`; there is no switch): each operand is rounded to a
//!   10-bit mantissa, unit roundoff u = 2^-11, so a product is off by at most 2u and a matmul's
//!   output by 2u of its terms' scale. The forward pass chains a handful of matmuls per block
//!   whose rounding errors are independent and add in quadrature, not linearly: logits and loss
//!   within 8u = 3.9e-3. The backward pass runs two matmuls per forward one, through the softmax
//!   Jacobian: gradients within 32u = 1.6e-2. (The first H100 run measured 1.9e-4 on logits.)
//! - The same model with no matmul at all (bigram: an embedding lookup and the loss) takes no
//!   tensor-core path, so f32 there must agree to 1e-5 like the CPU backends do with each other.
//! - bf16 and f16 against f32 on CUDA, by the same argument with their own unit roundoff:
//!   bf16 u = 2^-8 (forward 8u = 3.1e-2, gradients 32u = 0.125), f16 u = 2^-11 (as TF32).

#[test]
#[cfg_attr(
    not(feature = "cuda"),
    ignore = "built without the cuda feature: run `cargo test --features cuda --test cuda_parity` on a GPU machine"
)]
fn cuda_matches_the_cpu_within_its_precision() {
    #[cfg(feature = "cuda")]
    parity::check_all();
}

#[cfg(feature = "cuda")]
mod parity {
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Module;
    use burn::optim::GradientsParams;
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::{Int, Tensor, TensorData};
    use tinygpt_backends::{dispatch, BackendError, BackendKind, BackendTask};
    use tinygpt_model::{LanguageModel, ModelConfig};
    use tinygpt_train::{grads, RunConfig};

    /// Tolerances for (logits and loss, gradients).
    struct Bounds {
        forward: f32,
        backward: f32,
    }

    const TF32_UNIT: f32 = 1.0 / 2048.0; // 2^-11
    const BF16_UNIT: f32 = 1.0 / 256.0; // 2^-8
    const F16_UNIT: f32 = 1.0 / 2048.0; // 2^-11

    const fn bounds(unit: f32) -> Bounds {
        Bounds {
            forward: 8.0 * unit,
            backward: 32.0 * unit,
        }
    }

    const EXACT: Bounds = Bounds {
        forward: 1e-5,
        backward: 1e-5,
    };

    /// The repository, where `configs/` lives; `TINYGPT_ROOT` overrides it for test executables
    /// run on another machine (`cargo xtask gpu-check`).
    fn repo_root() -> std::path::PathBuf {
        std::env::var_os("TINYGPT_ROOT")
            .map(Into::into)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
    }

    struct Outputs {
        logits: Vec<f32>,
        loss: f32,
        grads: Vec<Vec<f32>>,
    }

    type Batch = (Vec<i64>, Vec<i64>, [usize; 2]);

    /// One forward and backward pass of `config` with the weights in `record`, on any backend.
    struct Pass<'a> {
        config: &'a ModelConfig,
        record: &'a [u8],
        batch: &'a Batch,
    }

    impl BackendTask for Pass<'_> {
        type Output = Outputs;
        fn run<B: AutodiffBackend>(self, device: B::Device, _kind: BackendKind) -> Outputs {
            let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
            let model: LanguageModel<B> = self
                .config
                .init(&device)
                .load_record(recorder.load(self.record.to_vec(), &device).unwrap());
            let tensor = |ids: &Vec<i64>| {
                Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), self.batch.2), &device)
            };
            let (logits, loss) = model.forward_loss(tensor(&self.batch.0), tensor(&self.batch.1));
            let g = GradientsParams::from_grads(loss.backward(), &model);
            Outputs {
                logits: logits.into_data().convert::<f32>().to_vec().unwrap(),
                loss: loss.into_data().convert::<f32>().to_vec::<f32>().unwrap()[0],
                grads: grads::flat_gradients(&model, &g),
            }
        }
    }

    /// Prints the worst difference and returns a failure line when it is over `tolerance`:
    /// every comparison is reported before the test fails.
    fn compare(what: &str, reference: &[f32], other: &[f32], tolerance: f32) -> Option<String> {
        assert_eq!(reference.len(), other.len(), "{what}: sizes");
        let worst = reference
            .iter()
            .zip(other)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0.0f32, f32::max);
        println!("  {what}: worst difference {worst:.2e} (bound {tolerance:.1e})");
        (worst > tolerance).then(|| format!("{what}: {worst:.2e} > {tolerance:.1e}"))
    }

    /// Every comparison of `other` against `reference` that is over its bound.
    fn compare_all(
        title: &str,
        reference: &Outputs,
        other: &Outputs,
        bounds: &Bounds,
    ) -> Vec<String> {
        println!("{title}:");
        let mut failures = vec![
            compare("logits", &reference.logits, &other.logits, bounds.forward),
            compare("loss", &[reference.loss], &[other.loss], bounds.forward),
        ];
        assert_eq!(reference.grads.len(), other.grads.len());
        for (i, (a, b)) in reference.grads.iter().zip(&other.grads).enumerate() {
            failures.push(compare(&format!("gradient {i}"), a, b, bounds.backward));
        }
        failures
            .into_iter()
            .flatten()
            .map(|f| format!("{title}: {f}"))
            .collect()
    }

    pub fn check_all() {
        let mut failures = Vec::new();
        for name in ["bigram", "transformer", "nanogpt_cpu", "gpt"] {
            let path = repo_root().join(format!("configs/{name}.ron"));
            let config = RunConfig::load(&path).unwrap().model.resolve(65).unwrap();
            let model: LanguageModel<Autodiff<NdArray<f32>>> = config.init(&Default::default());
            let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
                .record(model.into_record(), ())
                .unwrap();
            let (b, t) = (4, config.block_size);
            let ids = |offset: usize| (0..b * t).map(|i| ((i * 7 + offset) % 65) as i64).collect();
            let batch = (ids(0), ids(1), [b, t]);
            let pass = |kind| {
                dispatch(
                    kind,
                    Pass {
                        config: &config,
                        record: &record,
                        batch: &batch,
                    },
                )
            };
            let f32_cuda = match pass(BackendKind::Cuda) {
                Ok(outputs) => outputs,
                Err(e @ BackendError::CudaUnavailable(_)) => {
                    println!("SKIPPED: CPU-vs-CUDA parity needs a GPU: {e}");
                    return;
                }
                Err(e) => panic!("{e}"),
            };
            let cpu = pass(BackendKind::NdArray).unwrap();
            if name == "bigram" {
                let title = format!("{name}, f32 CUDA vs ndarray (no matmul: exact)");
                failures.extend(compare_all(&title, &cpu, &f32_cuda, &EXACT));
                continue;
            }
            let title = format!("{name}, f32 CUDA (TF32 matmuls) vs ndarray");
            failures.extend(compare_all(&title, &cpu, &f32_cuda, &bounds(TF32_UNIT)));
            for (kind, unit) in [
                (BackendKind::CudaBf16, BF16_UNIT),
                (BackendKind::CudaF16, F16_UNIT),
            ] {
                let half = pass(kind).unwrap();
                let title = format!("{name}, {kind} vs f32 CUDA");
                failures.extend(compare_all(&title, &f32_cuda, &half, &bounds(unit)));
            }
        }
        assert!(
            failures.is_empty(),
            "CUDA differs beyond the bounds its precision allows:\n{}",
            failures.join("\n")
        );
    }
}
