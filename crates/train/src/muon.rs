//! Muon for the hidden matrices, AdamW for everything else: the optimizer a run trains with.
//!
//! Muon (Keller Jordan's `muon.py`): Nesterov momentum, then the update orthogonalised by five
//! steps of a quintic Newton-Schulz iteration, scaled by `sqrt(max(1, d_out / d_in))`.
//!
//! Burn 0.21 ships `burn::optim::Muon`, but its `AdjustLrFn::Original` computes
//! `sqrt(max(1, rows / cols))` on Burn's `[d_input, d_output]` Linear layout, the transpose of
//! PyTorch's `[out, in]`: it would scale the MLP's down-projection by 2 and its up-projection by 1,
//! the reverse of the reference. This one is written in the reference's terms, momentum
//! included (`buf = β·buf + (1-β)·g`, `u = (1-β)·g + β·buf`), and a test checks it against a
//! direct transcription of the reference.

use crate::{grads, TrainError, TrainingSpec};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, LearningRate, Optimizer, SimpleOptimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use std::collections::HashSet;
use tinygpt_kernels::FusedAdamW;
use tinygpt_model::LanguageModel;

/// The reference's quintic coefficients: they push every singular value towards 1 fast, not
/// exactly (to about 0.7–1.2), which is what the update needs.
pub const NEWTON_SCHULZ: (f32, f32, f32) = (3.4445, -4.7750, 2.0315);

/// Muon's step for one 2-D weight (Burn's `[d_input, d_output]` layout).
#[derive(Debug, Clone, Copy)]
pub struct Muon {
    pub momentum: f32,
    pub nesterov: bool,
    pub ns_steps: usize,
    pub weight_decay: f32,
}

/// The momentum buffer of one weight.
#[derive(Record, Clone)]
pub struct MuonState<B: Backend, const D: usize> {
    pub momentum: Tensor<B, D>,
}

/// `X` with its singular values pushed towards 1 (`U Vᵀ` of its SVD, approximately): the
/// reference's `zeropower_via_newtonschulz5`, in f32.
pub fn orthogonalize<B: Backend>(g: Tensor<B, 2>, steps: usize) -> Tensor<B, 2> {
    let [rows, cols] = g.dims();
    // Work on the wide orientation: X Xᵀ is then the smaller square.
    let tall = rows > cols;
    let mut x = if tall { g.transpose() } else { g };
    let norm = x.clone().square().sum().sqrt().add_scalar(1e-7);
    x = x.div(norm.unsqueeze());
    let (a, b, c) = NEWTON_SCHULZ;
    for _ in 0..steps {
        let gram = x.clone().matmul(x.clone().transpose());
        let poly = gram.clone().mul_scalar(b) + gram.clone().matmul(gram).mul_scalar(c);
        x = x.clone().mul_scalar(a) + poly.matmul(x);
    }
    if tall {
        x.transpose()
    } else {
        x
    }
}

impl Muon {
    /// The reference's shape factor, `sqrt(max(1, out / in))` for PyTorch's `[out, in]`, read
    /// on Burn's `[d_input, d_output]`.
    pub fn shape_scale(d_input: usize, d_output: usize) -> f64 {
        (d_output as f64 / d_input as f64).max(1.0).sqrt()
    }
}

impl<B: Backend> SimpleOptimizer<B> for Muon {
    type State<const D: usize> = MuonState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        assert_eq!(
            D, 2,
            "Muon orthogonalises matrices; the run gives it only 2-D weights"
        );
        let beta = self.momentum as f64;
        let buffer = match state {
            Some(state) => state.momentum.mul_scalar(beta) + grad.clone().mul_scalar(1.0 - beta),
            None => grad.clone().mul_scalar(1.0 - beta),
        };
        let update = if self.nesterov {
            grad.mul_scalar(1.0 - beta) + buffer.clone().mul_scalar(beta)
        } else {
            buffer.clone()
        };
        let shape = update.shape();
        let (d_input, d_output) = (shape[0], shape[1]);
        let update: Tensor<B, D> =
            orthogonalize(update.reshape([d_input, d_output]), self.ns_steps).reshape(shape);
        let tensor = if self.weight_decay > 0.0 {
            tensor.mul_scalar(1.0 - lr * self.weight_decay as f64)
        } else {
            tensor
        };
        let step = lr * Self::shape_scale(d_input, d_output);
        (
            tensor - update.mul_scalar(step),
            Some(MuonState { momentum: buffer }),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        MuonState {
            momentum: state.momentum.to_device(device),
        }
    }
}

type AdamWAdaptor<B> = OptimizerAdaptor<FusedAdamW, LanguageModel<B>, B>;
type MuonAdaptor<B> = OptimizerAdaptor<Muon, LanguageModel<B>, B>;
type Recorder32 = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// The Muon group of a run: its optimizer, its parameters, and its learning rate as a multiple of
/// AdamW's (so one schedule moves both).
struct MuonGroup<B: AutodiffBackend> {
    optimizer: MuonAdaptor<B>,
    params: HashSet<ParamId>,
    lr_ratio: f64,
}

/// The optimizer of a run: AdamW over every parameter, or, with `training.muon`, Muon over the
/// hidden matrices and AdamW over the rest.
pub struct RunOptimizer<B: AutodiffBackend> {
    adamw: AdamWAdaptor<B>,
    muon: Option<MuonGroup<B>>,
}

/// The 2-D weights inside the layer stack: Muon's group. Embeddings and the lm_head are 2-D too,
/// but they stay on AdamW, as in the reference.
pub fn hidden_matrices<B: Backend>(model: &LanguageModel<B>) -> HashSet<ParamId> {
    struct Matrices(HashSet<ParamId>);
    impl<B: Backend> ModuleVisitor<B> for Matrices {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if D == 2 {
                self.0.insert(param.id);
            }
        }
    }
    let mut matrices = Matrices(HashSet::new());
    for layer in &model.layers {
        layer.visit(&mut matrices);
    }
    matrices.0
}

impl<B: AutodiffBackend> RunOptimizer<B> {
    /// The optimizer `t` asks for, for `model`.
    pub fn new(model: &LanguageModel<B>, t: &TrainingSpec) -> Self {
        let o = &t.optimizer;
        let adamw = OptimizerAdaptor::from(FusedAdamW::new(
            o.beta1 as f32,
            o.beta2 as f32,
            o.eps as f32,
        ));
        let muon = t.muon.as_ref().map(|spec| MuonGroup {
            optimizer: OptimizerAdaptor::from(Muon {
                momentum: spec.momentum as f32,
                nesterov: spec.nesterov,
                ns_steps: spec.ns_steps,
                weight_decay: spec.weight_decay as f32,
            }),
            params: hidden_matrices(model),
            lr_ratio: spec.lr / t.learning_rate,
        });
        Self { adamw, muon }
    }

    /// Parameters Muon updates (none without `training.muon`).
    pub fn muon_params(&self) -> usize {
        self.muon.as_ref().map_or(0, |group| group.params.len())
    }

    /// One update: clip by global norm (if configured), decoupled weight decay of the AdamW
    /// group, then AdamW at `lr` and Muon at its share of it.
    pub fn step(
        &mut self,
        model: LanguageModel<B>,
        mut grads: GradientsParams,
        lr: f64,
        t: &TrainingSpec,
    ) -> LanguageModel<B> {
        if let Some(max_norm) = t.grad_clip {
            grads = grads::clip_global_norm(&model, grads, max_norm).0;
        }
        let o = &t.optimizer;
        let muon_params = self.muon.as_ref().map(|group| &group.params);
        let model = grads::apply_weight_decay(
            model,
            lr,
            o.weight_decay,
            o.decay_matrices_only,
            muon_params,
        );
        let Some(group) = &mut self.muon else {
            return self.adamw.step(lr, model, grads);
        };
        let mut muon_grads = GradientsParams::new();
        for &id in &group.params {
            if let Some(grad) = grads.remove::<B::InnerBackend, 2>(id) {
                muon_grads.register(id, grad);
            }
        }
        let model = self.adamw.step(lr, model, grads);
        group.optimizer.step(lr * group.lr_ratio, model, muon_grads)
    }

    /// The optimizer state for a checkpoint: AdamW's record alone (as before Muon existed), or
    /// AdamW's length-prefixed and then Muon's.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let record = |bytes: Result<Vec<u8>, _>| {
            bytes.map_err(|e: burn::record::RecorderError| TrainError::Record(e.to_string()))
        };
        let adamw = record(Recorder32::default().record(self.adamw.to_record(), ()))?;
        let Some(group) = &self.muon else {
            return Ok(adamw);
        };
        let muon = record(Recorder32::default().record(group.optimizer.to_record(), ()))?;
        let mut bytes = Vec::with_capacity(8 + adamw.len() + muon.len());
        bytes.extend_from_slice(&(adamw.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&adamw);
        bytes.extend_from_slice(&muon);
        Ok(bytes)
    }

    /// Restores what [`RunOptimizer::to_bytes`] wrote.
    pub fn load_bytes(mut self, bytes: &[u8], device: &B::Device) -> Result<Self, TrainError> {
        let state = |e: burn::record::RecorderError| {
            TrainError::Record(format!(
                "optimizer state: {e} (was the run trained with the same optimizer, Muon or \
                 AdamW?)"
            ))
        };
        let adamw_bytes = match &self.muon {
            None => bytes,
            Some(_) => length_prefixed(bytes).ok_or_else(|| {
                TrainError::Record(
                    "optimizer state: the checkpoint holds no Muon state; it was trained with \
                     AdamW alone: resume it without training.muon"
                        .into(),
                )
            })?,
        };
        let adamw = Recorder32::default()
            .load(adamw_bytes.to_vec(), device)
            .map_err(state)?;
        self.adamw = self.adamw.load_record(adamw);
        if let Some(group) = &mut self.muon {
            let muon_bytes = &bytes[8 + adamw_bytes.len()..];
            let muon = Recorder32::default()
                .load(muon_bytes.to_vec(), device)
                .map_err(state)?;
            // Nothing to copy: a run loads its state before its first step.
            group.optimizer = group.optimizer.clone().load_record(muon);
        }
        Ok(self)
    }
}

/// The section a `u64` little-endian length at the start of `bytes` announces.
fn length_prefixed(bytes: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    bytes.get(8..8usize.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    type B = Flex;

    /// The reference, transcribed into f64 on PyTorch's `[out, in]` layout: `muon.py`'s
    /// `muon_update` and `zeropower_via_newtonschulz5` (in f64 rather than bf16).
    fn reference_step(
        weight: &[Vec<f64>], // [out][in]
        grad: &[Vec<f64>],
        buf: &mut [Vec<f64>],
        lr: f64,
        beta: f64,
    ) -> Vec<Vec<f64>> {
        let (out, inp) = (weight.len(), weight[0].len());
        let mut u = vec![vec![0.0; inp]; out];
        for i in 0..out {
            for j in 0..inp {
                buf[i][j] += (1.0 - beta) * (grad[i][j] - buf[i][j]); // buf.lerp_(g, 1 - β)
                u[i][j] = grad[i][j] + beta * (buf[i][j] - grad[i][j]); // g.lerp_(buf, β)
            }
        }
        let transpose = |m: &Vec<Vec<f64>>| -> Vec<Vec<f64>> {
            (0..m[0].len())
                .map(|j| (0..m.len()).map(|i| m[i][j]).collect())
                .collect()
        };
        let matmul = |a: &Vec<Vec<f64>>, b: &Vec<Vec<f64>>| -> Vec<Vec<f64>> {
            a.iter()
                .map(|row| {
                    (0..b[0].len())
                        .map(|j| row.iter().zip(b).map(|(x, brow)| x * brow[j]).sum())
                        .collect()
                })
                .collect()
        };
        let tall = out > inp;
        let mut x = if tall { transpose(&u) } else { u };
        let norm: f64 = x.iter().flatten().map(|v| v * v).sum::<f64>().sqrt() + 1e-7;
        x.iter_mut().flatten().for_each(|v| *v /= norm);
        let (a, b, c) = (3.4445, -4.7750, 2.0315);
        for _ in 0..5 {
            let gram = matmul(&x, &transpose(&x));
            let gram2 = matmul(&gram, &gram);
            let poly: Vec<Vec<f64>> = gram
                .iter()
                .zip(&gram2)
                .map(|(r1, r2)| r1.iter().zip(r2).map(|(p, q)| b * p + c * q).collect())
                .collect();
            let px = matmul(&poly, &x);
            x = x
                .iter()
                .zip(&px)
                .map(|(r1, r2)| r1.iter().zip(r2).map(|(p, q)| a * p + q).collect())
                .collect();
        }
        let update = if tall { transpose(&x) } else { x };
        let scale = (out as f64 / inp as f64).max(1.0).sqrt();
        weight
            .iter()
            .zip(&update)
            .map(|(w, u)| w.iter().zip(u).map(|(w, u)| w - lr * scale * u).collect())
            .collect()
    }

    fn random(rows: usize, cols: usize) -> Tensor<B, 2> {
        Tensor::random(
            [rows, cols],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        )
    }

    fn rows_of(t: &Tensor<B, 2>) -> Vec<Vec<f64>> {
        let [rows, cols] = t.dims();
        let values: Vec<f32> = t.to_data().to_vec().unwrap();
        (0..rows)
            .map(|i| (0..cols).map(|j| values[i * cols + j] as f64).collect())
            .collect()
    }

    #[test]
    fn matches_the_reference_over_three_steps_on_both_orientations() {
        // Burn [d_in, d_out] = (8, 24): an up-projection, scaled by sqrt(3); (24, 8): a
        // down-projection, scaled by 1. Burn's own Muon has these two the other way round.
        for (d_in, d_out) in [(8, 24), (24, 8), (16, 16)] {
            let muon = Muon {
                momentum: 0.95,
                nesterov: true,
                ns_steps: 5,
                weight_decay: 0.0,
            };
            let mut weight = random(d_in, d_out);
            // The reference works on the transpose, PyTorch's [out, in].
            let mut reference = rows_of(&weight.clone().transpose());
            let mut buf = vec![vec![0.0; d_in]; d_out];
            let mut state = None;
            for _ in 0..3 {
                let grad = random(d_in, d_out);
                let grad_ref = rows_of(&grad.clone().transpose());
                let (next, next_state) =
                    SimpleOptimizer::<B>::step(&muon, 0.02, weight, grad, state);
                weight = next;
                state = next_state;
                reference = reference_step(&reference, &grad_ref, &mut buf, 0.02, 0.95);
            }
            let got = rows_of(&weight.transpose());
            let worst = got
                .iter()
                .flatten()
                .zip(reference.iter().flatten())
                .map(|(g, r)| (g - r).abs())
                .fold(0.0, f64::max);
            assert!(worst < 2e-5, "[{d_in}, {d_out}]: off by {worst}");
        }
    }

    #[test]
    fn orthogonalized_singular_values_are_near_one() {
        let x = orthogonalize(random(12, 40), 5);
        // X Xᵀ of an orthogonal-ish wide matrix is near the identity: its diagonal within the
        // quintic's band (about 0.7 to 1.2 for singular values, squared here).
        let gram = x.clone().matmul(x.transpose());
        let values: Vec<f32> = gram.into_data().to_vec().unwrap();
        for i in 0..12 {
            let d = values[i * 12 + i];
            assert!((0.4..1.5).contains(&d), "diagonal {i}: {d}");
        }
    }

    #[test]
    fn the_group_is_the_layers_matrices() {
        let spec: tinygpt_model::ModelSpec = ron::Options::default()
            .with_default_extension(crate::config::RON_EXTENSIONS)
            .from_str(
                "(n_embd: 16, block_size: 8, position_embedding: false, layers: \
                 [LlamaBlock(n_head: 2, hidden: 32), RmsNorm()], lm_head_bias: false)",
            )
            .unwrap();
        let model: LanguageModel<Autodiff<B>> = spec.resolve(20).unwrap().init(&Default::default());
        let group = hidden_matrices(&model);
        // qkv, o, gate+up (fused), down: four matrices; not the embedding or the head.
        assert_eq!(group.len(), 4, "{group:?}");
        assert!(!group.contains(&model.token_embedding.weight.id));
        assert!(!group.contains(&model.lm_head.as_ref().unwrap().weight.id));
    }
}
