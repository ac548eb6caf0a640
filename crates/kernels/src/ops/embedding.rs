//! An embedding lookup as one operation on ndarray: rows of the table copied out, and the
//! backward pass adding each position's gradient into its token's row.
//!
//! burn-ndarray gathers rows with `select`, which grows the output one row at a time
//! (`append`), and scatters the gradient back with `select_assign`: together about a third of a
//! bigram training step on ndarray. flex's own gather is fast and keeps its path.

use crate::host::{cast, host_backend, indices, Host, HostBackend, Mode};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorPrimitive};
use std::sync::Arc;

/// `weight[ids]`: `[batch, time, dim]` rows of the `[rows, dim]` table through the kernel on
/// ndarray, else the inputs back for Burn's `Embedding`.
#[allow(clippy::type_complexity)]
pub fn embedding<B: Backend>(
    weight: Tensor<B, 2>,
    ids: Tensor<B, 2, Int>,
) -> Result<Tensor<B, 3>, (Tensor<B, 2>, Tensor<B, 2, Int>)> {
    let mode = match host_backend::<B>() {
        Some((Host::NdArray, mode)) if weight.dtype() == DType::F32 => mode,
        _ => return Err((weight, ids)),
    };
    let [rows, dim] = weight.dims();
    let [batch, time] = ids.dims();
    let ids = indices(ids, rows, |id| {
        format!("token id {id} is outside the embedding's {rows} rows")
    });
    let shape = Shape {
        rows,
        dim,
        batch,
        time,
    };
    Ok(match mode {
        Mode::Inference => cast(inference_ndarray(cast(weight), &ids, shape)),
        Mode::Training => cast(training_ndarray(cast(weight), ids, shape)),
    })
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    rows: usize,
    dim: usize,
    batch: usize,
    time: usize,
}

fn gather(table: &[f32], ids: &[usize], dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        out.extend_from_slice(&table[id * dim..(id + 1) * dim]);
    }
    out
}

fn lookup<H: HostBackend>(
    weight: H::FloatTensorPrimitive,
    ids: &[usize],
    s: Shape,
) -> H::FloatTensorPrimitive {
    let weight = H::contiguous(weight);
    H::tensor(
        gather(H::values(&weight), ids, s.dim),
        &[s.batch, s.time, s.dim],
    )
}

compiled_here! {
    fn inference_ndarray(weight: Tensor<NdArray, 2>, ids: &[usize], s: Shape) -> Tensor<NdArray, 3> =
        inference::<NdArray>;
    fn training_ndarray(
        weight: Tensor<Autodiff<NdArray>, 2>,
        ids: Arc<[usize]>,
        s: Shape,
    ) -> Tensor<Autodiff<NdArray>, 3> = training::<NdArray>;
}

fn inference<H: HostBackend>(weight: Tensor<H, 2>, ids: &[usize], s: Shape) -> Tensor<H, 3> {
    let out = lookup::<H>(weight.into_primitive().tensor(), ids, s);
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

fn training<H: HostBackend>(
    weight: Tensor<Autodiff<H>, 2>,
    ids: Arc<[usize]>,
    s: Shape,
) -> Tensor<Autodiff<H>, 3> {
    let weight = weight.into_primitive().tensor();
    let out = lookup::<H>(weight.primitive.clone(), &ids, s);
    let out = match Lookup
        .prepare::<NoCheckpointing>([weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Saved { ids, shape: s }, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug)]
struct Lookup;

#[derive(Debug, Clone)]
struct Saved {
    ids: Arc<[usize]>,
    shape: Shape,
}

impl<H: HostBackend> Backward<H, 1> for Lookup {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad_out = H::contiguous(grads.consume::<H>(&ops.node));
        let Some(parent) = parent else { return };
        let Saved { ids, shape: s } = ops.state;
        let mut grad = vec![0.0f32; s.rows * s.dim];
        // In position order, so the sums are the same every run.
        for (&id, row) in ids.iter().zip(H::values(&grad_out).chunks(s.dim)) {
            for (g, &v) in grad[id * s.dim..(id + 1) * s.dim].iter_mut().zip(row) {
                *g += v;
            }
        }
        grads.register::<H>(parent.id, H::tensor(grad, &[s.rows, s.dim]));
    }
}
