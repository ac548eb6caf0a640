//! Whole-model gradient operations Burn's optimizers do not offer: the global gradient norm and
//! clipping by it (as `torch.nn.utils.clip_grad_norm_`), gradient accumulation, and decoupled
//! weight decay restricted to matrices (as nanoGPT's parameter groups).

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use std::collections::HashSet;

/// Sum of squares of every gradient, as a one-element tensor (read once, not per parameter).
struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let squares = grad.square().sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + squares,
                None => squares,
            });
        }
    }
}

/// The L2 norm of all gradients taken together.
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut visitor = SquaredNorm::<B> { grads, total: None };
    model.visit(&mut visitor);
    visitor
        .total
        .map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt())
}

/// Multiplies every gradient by `factor`.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}

pub fn scale<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: GradientsParams,
    factor: f64,
) -> GradientsParams {
    model.visit(&mut Scale {
        grads: &mut grads,
        factor,
    });
    grads
}

/// Scales all gradients so their global norm is at most `max_norm`; returns the norm before
/// clipping. Same rule as PyTorch: factor `max_norm / (norm + 1e-6)` when it is below 1.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let norm = global_norm(model, &grads);
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        (scale(model, grads, factor), norm)
    } else {
        (grads, norm)
    }
}

/// Adds `more` into `sum`, parameter by parameter.
struct Accumulate<'a> {
    sum: &'a mut GradientsParams,
    more: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Accumulate<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(extra) = self.more.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let total = match self.sum.remove::<B::InnerBackend, D>(param.id) {
            Some(sum) => sum + extra,
            None => extra,
        };
        self.sum.register(param.id, total);
    }
}

pub fn accumulate<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    sum: Option<GradientsParams>,
    mut more: GradientsParams,
) -> GradientsParams {
    let Some(mut sum) = sum else {
        return more;
    };
    model.visit(&mut Accumulate {
        sum: &mut sum,
        more: &mut more,
    });
    sum
}

/// Decoupled weight decay, `p <- p * (1 - lr * weight_decay)`, as AdamW applies it before its
/// update; `matrices_only` spares biases and LayerNorm parameters (rank 1).
struct Decay<'a> {
    factor: f64,
    matrices_only: bool,
    /// Parameters another optimizer decays (Muon's group).
    except: Option<&'a HashSet<ParamId>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Decay<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if (self.matrices_only && D < 2) || self.except.is_some_and(|ids| ids.contains(&param.id)) {
            return param;
        }
        let factor = self.factor;
        param.map(|tensor| {
            let decayed = Tensor::from_inner(tensor.inner().mul_scalar(factor));
            decayed.require_grad()
        })
    }
}

pub fn apply_weight_decay<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: M,
    lr: f64,
    weight_decay: f64,
    matrices_only: bool,
    except: Option<&HashSet<ParamId>>,
) -> M {
    if weight_decay == 0.0 {
        return model;
    }
    model.map(&mut Decay {
        factor: 1.0 - lr * weight_decay,
        matrices_only,
        except,
    })
}

/// Every gradient flattened to f32, in parameter order (for tests and parity checks).
pub fn flat_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> Vec<Vec<f32>> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        out: Vec<Vec<f32>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let values = grad
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .unwrap_or_default();
                self.out.push(values);
            }
        }
    }
    let mut collect = Collect {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut collect);
    collect.out
}
