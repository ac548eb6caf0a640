//! AdamW whose update is one pass over each parameter on the host backends (flex, ndarray), and
//! Burn's `AdamW` on every other backend.
//!
//! Burn's AdamW is about a dozen tensor operations per parameter per step (moment updates, bias
//! corrections, square root, division, the update), each allocating and walking the whole
//! tensor. [`FusedAdamW`] keeps Burn's optimizer state (`AdamWState`, so checkpoints are
//! unchanged) and, on flex and ndarray, computes the same f32 operations in the same order in one
//! loop:
//! the result is bit for bit Burn's (tested).

use crate::host::{cast, host_backend, Host, Mode};
use burn::backend::{Flex, NdArray};
use burn::optim::{
    AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer,
};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

/// Parameters smaller than this are updated on one thread: splitting costs more.
const PARALLEL_MIN: usize = 1 << 16;

/// AdamW without weight decay (the trainer applies decoupled decay itself, see
/// `tinygpt_train::grads::apply_weight_decay`).
#[derive(Clone)]
pub struct FusedAdamW {
    plain: AdamW,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
}

impl FusedAdamW {
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32) -> Self {
        let plain = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(0.0)
            .build();
        Self {
            plain,
            beta_1,
            beta_2,
            epsilon,
        }
    }

    /// The update on a host backend's tensors, as Burn's AdamW computes it.
    fn host_step<H: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<H, D>,
        grad: Tensor<H, D>,
        state: Option<AdamWState<H, D>>,
    ) -> (Tensor<H, D>, AdamWState<H, D>) {
        let shape = tensor.shape();
        let device = tensor.device();
        let values = |t: Tensor<H, D>| -> Vec<f32> {
            t.into_data()
                .into_vec::<f32>()
                .expect("checked: an f32 tensor")
        };
        let (param, grad) = (values(tensor), values(grad));
        let (time, moments) = match state {
            Some(state) => {
                let momentum = state.momentum;
                let moments = (values(momentum.moment_1), values(momentum.moment_2));
                (momentum.time + 1, Some(moments))
            }
            None => (1, None),
        };
        let (b1, b2) = (self.beta_1, self.beta_2);
        let (factor_1, factor_2) = (1.0 - b1, 1.0 - b2);
        let correction_1 = 1f32 - b1.powi(time as i32);
        let correction_2 = 1f32 - b2.powi(time as i32);
        let (lr, epsilon) = (lr as f32, self.epsilon);
        let len = param.len();
        let (mut new_param, mut new_m, mut new_v) =
            (vec![0.0f32; len], vec![0.0f32; len], vec![0.0f32; len]);
        let k = Coefficients {
            b1,
            b2,
            factor_1,
            factor_2,
            correction_1,
            correction_2,
            lr,
            epsilon,
        };
        let update = |range: std::ops::Range<usize>,
                      p_out: &mut [f32],
                      m_out: &mut [f32],
                      v_out: &mut [f32]| {
            let moments = moments
                .as_ref()
                .map(|(m, v)| (&m[range.clone()], &v[range.clone()]));
            update_slice(
                &param[range.clone()],
                &grad[range],
                moments,
                p_out,
                m_out,
                v_out,
                k,
            );
        };
        if len < PARALLEL_MIN {
            update(0..len, &mut new_param, &mut new_m, &mut new_v);
        } else {
            let chunk = PARALLEL_MIN / 4;
            new_param
                .par_chunks_mut(chunk)
                .zip(new_m.par_chunks_mut(chunk))
                .zip(new_v.par_chunks_mut(chunk))
                .enumerate()
                .for_each(|(c, ((p, m), v))| update(c * chunk..c * chunk + p.len(), p, m, v));
        }
        let tensor = |values: Vec<f32>| {
            Tensor::<H, D>::from_data(TensorData::new(values, shape.clone()), &device)
        };
        let state = AdamWState::new(AdaptiveMomentumState::new(
            time,
            tensor(new_m),
            tensor(new_v),
        ));
        (tensor(new_param), state)
    }
}

/// The scalars of one AdamW step.
#[derive(Debug, Clone, Copy)]
struct Coefficients {
    b1: f32,
    b2: f32,
    factor_1: f32,
    factor_2: f32,
    correction_1: f32,
    correction_2: f32,
    lr: f32,
    epsilon: f32,
}

crate::dispatched! {
    /// AdamW on one stretch of a parameter: new moments and the updated values, as Burn computes
    /// them. Zipped slices and the branch outside the loops, so the loops vectorise.
    fn update_slice(
        param: &[f32],
        grad: &[f32],
        moments: Option<(&[f32], &[f32])>,
        p_out: &mut [f32],
        m_out: &mut [f32],
        v_out: &mut [f32],
        k: Coefficients
    ) -> () {
        let outputs = p_out.iter_mut().zip(m_out.iter_mut()).zip(v_out.iter_mut());
        let step = |p: f32, m: f32, v: f32| {
            p - ((m / k.correction_1) / ((v / k.correction_2).sqrt() + k.epsilon)) * k.lr
        };
        match moments {
            Some((m, v)) => {
                let inputs = param.iter().zip(grad).zip(m).zip(v);
                for (((p_out, m_out), v_out), (((&p, &g), &m), &v)) in outputs.zip(inputs) {
                    *m_out = m * k.b1 + g * k.factor_1;
                    *v_out = v * k.b2 + (g * g) * k.factor_2;
                    *p_out = step(p, *m_out, *v_out);
                }
            }
            None => {
                for (((p_out, m_out), v_out), (&p, &g)) in outputs.zip(param.iter().zip(grad)) {
                    *m_out = g * k.factor_1;
                    *v_out = (g * g) * k.factor_2;
                    *p_out = step(p, *m_out, *v_out);
                }
            }
        }
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let host = match host_backend::<B>() {
            Some((host, Mode::Inference)) => Some(host),
            _ => None,
        };
        let fused = host.is_some()
            && tensor.dtype() == DType::F32
            && grad.dtype() == DType::F32
            && state.as_ref().is_none_or(|s| {
                s.momentum.max_moment_2.is_none()
                    && s.momentum.moment_1.dtype() == DType::F32
                    && s.momentum.moment_2.dtype() == DType::F32
            });
        if !fused {
            return self.plain.step(lr, tensor, grad, state);
        }
        match host {
            Some(Host::Flex) => {
                let (tensor, state) =
                    self.host_step::<Flex, D>(lr, cast(tensor), cast(grad), state.map(cast));
                (cast(tensor), Some(cast(state)))
            }
            _ => {
                let (tensor, state) =
                    self.host_step::<NdArray, D>(lr, cast(tensor), cast(grad), state.map(cast));
                (cast(tensor), Some(cast(state)))
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// A `[300, 300]` tensor of pseudo-random values in `[-scale, scale)`, the same every time
    /// without the backend's process-wide generator, which tests running beside this one share.
    fn fixed_random<H: Backend>(stream: u64, scale: f32) -> Tensor<H, 2> {
        let mut state = stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let values = (0..300 * 300)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect::<Vec<f32>>();
        Tensor::from_data(TensorData::new(values, [300, 300]), &Default::default())
    }

    /// Five steps of the kernel or Burn's AdamW on the same parameter and gradients.
    fn run<H: Backend>(fused: bool) -> Vec<Vec<f32>> {
        let optimizer = FusedAdamW::new(0.9, 0.95, 1e-8);
        let mut param = fixed_random::<H>(0, 1.0);
        let mut state = None;
        let mut history = Vec::new();
        for step in 0..5 {
            let grad = fixed_random::<H>(step + 1, 0.1 * (step + 1) as f32);
            let lr = 1e-3 * (step + 1) as f64;
            (param, state) = if fused {
                let (param, state) = optimizer.host_step(lr, param, grad, state);
                (param, Some(state))
            } else {
                optimizer.plain.step(lr, param, grad, state)
            };
            history.push(param.to_data().into_vec::<f32>().unwrap());
        }
        history
    }

    fn fused_is_burns_adamw_bit_for_bit_on<H: Backend>() {
        // 90,000 elements: the parallel path.
        let plain = run::<H>(false);
        crate::simd::at_every_simd_level(|level| {
            assert!(
                run::<H>(true) == plain,
                "the {level:?} update differs from Burn's"
            );
        });
        // And `step` takes the kernel (the optimizer's backend is autodiff's inner one).
        assert!(matches!(host_backend::<H>(), Some((_, Mode::Inference))));
    }

    #[test]
    fn fused_is_burns_adamw_bit_for_bit() {
        fused_is_burns_adamw_bit_for_bit_on::<Flex>();
        fused_is_burns_adamw_bit_for_bit_on::<NdArray>();
    }
}
