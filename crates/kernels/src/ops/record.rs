//! Recording an operation whose inputs are two tensors and an optional third (a bias or a
//! shift), so each such kernel writes its gradient once, not once per arity.

use crate::host::HostBackend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;
use std::fmt::Debug;
use std::marker::PhantomData;

/// What an operation keeps for its backward step, and the step itself: `parents` are the ids of
/// the inputs that need a gradient (`None` for one that does not, or an absent third input).
pub(crate) trait Gradient<H: HostBackend>: Clone + Send + Debug + 'static {
    fn register(
        self,
        grad_out: H::FloatTensorPrimitive,
        parents: [Option<NodeId>; 3],
        grads: &mut Gradients,
    );
}

/// Records `out = op(inputs[0], inputs[1], optional)` in the autodiff graph, with `state` for
/// the backward step; returns the tracked output.
pub(crate) fn record<H: HostBackend, S: Gradient<H>>(
    inputs: [&FloatTensor<Autodiff<H>>; 2],
    optional: Option<&FloatTensor<Autodiff<H>>>,
    state: S,
    out: H::FloatTensorPrimitive,
) -> FloatTensor<Autodiff<H>> {
    let [a, b] = inputs;
    match optional {
        Some(c) => match Three::<S>(PhantomData)
            .prepare::<NoCheckpointing>([a.node.clone(), b.node.clone(), c.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
        None => match Two::<S>(PhantomData)
            .prepare::<NoCheckpointing>([a.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    }
}

#[derive(Debug)]
struct Two<S>(PhantomData<S>);

#[derive(Debug)]
struct Three<S>(PhantomData<S>);

impl<H: HostBackend, S: Gradient<H>> Backward<H, 2> for Two<S> {
    type State = S;

    fn backward(self, ops: Ops<S, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_out = grads.consume::<H>(&ops.node);
        let [a, b] = ops.parents.map(|parent| parent.map(|p| p.id));
        ops.state.register(grad_out, [a, b, None], grads);
    }
}

impl<H: HostBackend, S: Gradient<H>> Backward<H, 3> for Three<S> {
    type State = S;

    fn backward(self, ops: Ops<S, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_out = grads.consume::<H>(&ops.node);
        let parents = ops.parents.map(|parent| parent.map(|p| p.id));
        ops.state.register(grad_out, parents, grads);
    }
}
