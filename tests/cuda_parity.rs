//! CPU (ndarray) against CUDA: the same weights and batch give the same logits, loss (within
//! 1e-4) and gradients (within 1e-3). Needs `--features cuda` and an NVIDIA GPU; without either
//! the test reports that it was skipped and why.

#[test]
#[cfg_attr(
    not(feature = "cuda"),
    ignore = "built without the cuda feature: run `cargo test --features cuda --test cuda_parity` on a GPU machine"
)]
fn cuda_matches_ndarray() {
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
    use tinygpt_model::{LanguageModel, ModelConfig};
    use tinygpt_train::{dispatch, grads, BackendError, BackendKind, BackendTask, RunConfig};

    type Cpu = Autodiff<NdArray<f32>>;

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

    fn run<B: AutodiffBackend>(
        config: &ModelConfig,
        record: &[u8],
        batch: &(Vec<i64>, Vec<i64>, [usize; 2]),
        device: &B::Device,
    ) -> Outputs {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        let model: LanguageModel<B> = config
            .init(device)
            .load_record(recorder.load(record.to_vec(), device).unwrap());
        let tensor = |ids: &Vec<i64>| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), batch.2), device)
        };
        let (logits, loss) = model.forward_loss(tensor(&batch.0), tensor(&batch.1));
        let g = GradientsParams::from_grads(loss.backward(), &model);
        Outputs {
            logits: logits.into_data().convert::<f32>().to_vec().unwrap(),
            loss: loss.into_data().convert::<f32>().to_vec::<f32>().unwrap()[0],
            grads: grads::flat_gradients(&model, &g),
        }
    }

    /// Prints the worst relative difference and returns a failure line when it is over
    /// `tolerance`: every comparison is reported before the test fails.
    fn compare(what: &str, cpu: &[f32], gpu: &[f32], tolerance: f32) -> Option<String> {
        assert_eq!(cpu.len(), gpu.len(), "{what}: sizes");
        let worst = cpu
            .iter()
            .zip(gpu)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0.0f32, f32::max);
        println!("{what}: worst relative difference {worst:.2e} (tolerance {tolerance:.0e})");
        (worst > tolerance).then(|| format!("{what}: {worst:.2e} > {tolerance:.0e}"))
    }

    struct Compare {
        name: &'static str,
    }

    impl BackendTask for Compare {
        /// The comparisons over their tolerance.
        type Output = Vec<String>;
        fn run<B: AutodiffBackend>(self, device: B::Device, _kind: BackendKind) -> Vec<String> {
            let path = repo_root().join(format!("configs/{}.ron", self.name));
            let config = RunConfig::load(&path).unwrap().model.resolve(65).unwrap();
            let cpu_device = Default::default();
            let model: LanguageModel<Cpu> = config.init(&cpu_device);
            let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
                .record(model.into_record(), ())
                .unwrap();
            let (b, t) = (4, config.block_size);
            let ids = |offset: usize| (0..b * t).map(|i| ((i * 7 + offset) % 65) as i64).collect();
            let batch = (ids(0), ids(1), [b, t]);
            let cpu = run::<Cpu>(&config, &record, &batch, &cpu_device);
            let gpu = run::<B>(&config, &record, &batch, &device);
            println!("{}:", self.name);
            let mut failures = vec![
                compare("logits", &cpu.logits, &gpu.logits, 1e-4),
                compare("loss", &[cpu.loss], &[gpu.loss], 1e-4),
            ];
            assert_eq!(cpu.grads.len(), gpu.grads.len());
            for (i, (c, g)) in cpu.grads.iter().zip(&gpu.grads).enumerate() {
                failures.push(compare(&format!("gradient {i}"), c, g, 1e-3));
            }
            failures
                .into_iter()
                .flatten()
                .map(|f| format!("{}: {f}", self.name))
                .collect()
        }
    }

    pub fn check_all() {
        let mut failures = Vec::new();
        for name in ["transformer", "nanogpt_cpu", "gpt"] {
            match dispatch(BackendKind::Cuda, Compare { name }) {
                Ok(over) => failures.extend(over),
                Err(e @ BackendError::CudaUnavailable(_)) => {
                    println!("SKIPPED: CPU-vs-CUDA parity needs a GPU: {e}");
                    return;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            failures.is_empty(),
            "CPU and CUDA differ beyond tolerance:\n{}",
            failures.join("\n")
        );
    }
}
