//! Data-parallel training on Burn's collective: N peers (devices of this machine, on as many
//! nodes as `--nodes`) each hold a replica of the model, train on their share of the rows of the
//! one-device batch, and average their gradients with an all-reduce before the same AdamW step.
//!
//! Burn's collective blocks in every call and has no timeout, so a [`Watchdog`] ends the process
//! with an error naming the node that stopped answering instead of letting the run hang.

use crate::TrainError;
use burn::collective::{self, AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorPrimitive};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a peer waits for the others in one collective operation before the run ends with an
/// error: the default of `--collective-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Gradient values per all-reduce: buckets of about 64 MiB of f32, as PyTorch DDP's 25 MB
/// buckets, so a large model does not need a second copy of all its gradients at once.
const BUCKET_VALUES: usize = 16 << 20;

/// The machines of a run and how they reach each other (one node by default).
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Machines (processes) taking part; each runs the same number of peers.
    pub nodes: u32,
    /// This node's place, 0..nodes. Node 0 runs the orchestrator and holds global rank 0.
    pub node_rank: u32,
    /// `host:port` of node 0's orchestrator (required with more than one node).
    pub coordinator: Option<String>,
    /// `host[:port]` the other nodes reach this one at [default: this machine's address towards
    /// the coordinator, port coordinator's + 1 + node rank].
    pub node_address: Option<String>,
    /// The longest a peer waits for the others in one operation.
    pub timeout: Duration,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            nodes: 1,
            node_rank: 0,
            coordinator: None,
            node_address: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What is wrong with a cluster description, before anything starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("--nodes must be at least 1")]
    NoNodes,
    #[error("--node-rank {rank} is not below --nodes {nodes} (ranks count from 0)")]
    RankOutOfRange { rank: u32, nodes: u32 },
    #[error(
        "--nodes {0} needs --coordinator HOST:PORT: the address of node 0, where the nodes meet \
         (the same on every node)"
    )]
    NoCoordinator(u32),
    #[error("{flag} {value:?} is not HOST:PORT{detail}")]
    BadAddress {
        flag: &'static str,
        value: String,
        detail: String,
    },
    #[error(
        "the batch does not divide among {peers} peers: batch_size {batch_size} must be a \
         multiple of the number of peers (devices × nodes); change batch_size or the devices"
    )]
    BatchDoesNotDivide { batch_size: usize, peers: usize },
}

impl Cluster {
    /// Checks the description; returns the coordinator's address when there are several nodes.
    pub fn validate(&self) -> Result<Option<(String, u16)>, ClusterError> {
        if self.nodes == 0 {
            return Err(ClusterError::NoNodes);
        }
        if self.node_rank >= self.nodes {
            return Err(ClusterError::RankOutOfRange {
                rank: self.node_rank,
                nodes: self.nodes,
            });
        }
        if self.nodes == 1 {
            return Ok(None);
        }
        let coordinator = self
            .coordinator
            .as_deref()
            .ok_or(ClusterError::NoCoordinator(self.nodes))?;
        let (host, port) = split_host_port(coordinator, "--coordinator")?;
        let port = port.ok_or_else(|| ClusterError::BadAddress {
            flag: "--coordinator",
            value: coordinator.into(),
            detail: ": give the port node 0 listens on, e.g. node0.example.com:29500".into(),
        })?;
        if let Some(address) = &self.node_address {
            split_host_port(address, "--node-address")?;
        }
        Ok(Some((host, port)))
    }

    /// Peers in the whole run when each node has `local` of them.
    pub fn world(&self, local: usize) -> usize {
        local * self.nodes as usize
    }
}

/// `host`, `host:port` or `[v6]:port`, without a scheme.
fn split_host_port(value: &str, flag: &'static str) -> Result<(String, Option<u16>), ClusterError> {
    let bad = |detail: &str| ClusterError::BadAddress {
        flag,
        value: value.into(),
        detail: detail.into(),
    };
    let value = value.trim();
    if value.is_empty() || value.contains("://") || value.contains('/') {
        return Err(bad(
            " (give a host name or IP address and a port, no scheme)",
        ));
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad(""))?;
        (host, after.strip_prefix(':'))
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            _ => (value, None),
        }
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| bad(": the port must be a number from 1 to 65535"))
        })
        .transpose()?;
    if host.is_empty() {
        return Err(bad(""));
    }
    Ok((host.to_string(), port))
}

fn ws_url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("ws://[{host}]:{port}")
    } else {
        format!("ws://{host}:{port}")
    }
}

/// This peer's place in a data-parallel run, and the all-reduce every replica calls in step.
pub struct Peer {
    /// Global rank: node rank × peers per node + this node's peer index. Rank 0 writes the run.
    pub rank: usize,
    /// Peers in the whole run.
    pub world: usize,
    watchdog: Arc<Watchdog>,
}

impl Peer {
    /// This peer's rows of a batch of `batch_size` (which the world divides).
    pub fn rows(&self, batch_size: usize) -> Range<usize> {
        let share = batch_size / self.world;
        self.rank * share..(self.rank + 1) * share
    }

    fn id(&self) -> PeerId {
        PeerId(self.rank as u32)
    }

    /// The element-wise mean (or sum) of `tensor` over every peer; every peer gets the same.
    pub fn all_reduce<B: Backend>(
        &self,
        tensor: Tensor<B, 1>,
        operation: ReduceOperation,
        during: &'static str,
    ) -> Result<Tensor<B, 1>, TrainError> {
        let primitive = tensor.into_primitive().tensor();
        let reduced = self.watchdog.guard(self.rank, during, || {
            collective::all_reduce::<B>(self.id(), primitive, operation)
        })?;
        reduced
            .map(|p| Tensor::from_primitive(TensorPrimitive::Float(p)))
            .map_err(|e| self.watchdog.error(during, format!("{e:?}")))
    }
}

/// `tensor` reduced over the peers of a data-parallel run, or `tensor` itself on one device.
pub fn all_reduce_if<B: Backend>(
    peer: Option<&Peer>,
    tensor: Tensor<B, 1>,
    operation: ReduceOperation,
    during: &'static str,
) -> Result<Tensor<B, 1>, TrainError> {
    match peer {
        Some(peer) => peer.all_reduce(tensor, operation, during),
        None => Ok(tensor),
    }
}

/// Ends the process when a collective operation waits longer than the timeout: Burn's calls
/// cannot be cancelled, and a peer or node that died would otherwise leave the others blocked
/// forever.
pub(crate) struct Watchdog {
    timeout: Duration,
    /// Peers now inside a collective operation: since when, doing what.
    waiting: Mutex<HashMap<usize, (Instant, &'static str)>>,
    done: AtomicBool,
    /// Who the other side is, for the messages.
    others: String,
}

impl Watchdog {
    fn start(timeout: Duration, others: String) -> Arc<Self> {
        let watchdog = Arc::new(Self {
            timeout,
            waiting: Mutex::new(HashMap::new()),
            done: AtomicBool::new(false),
            others,
        });
        let watching = Arc::clone(&watchdog);
        let poll = (timeout / 20).clamp(Duration::from_millis(50), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("tinygpt-watchdog".into())
            .spawn(move || {
                while !watching.done.load(Ordering::SeqCst) {
                    std::thread::sleep(poll);
                    let overdue = watching
                        .waiting
                        .lock()
                        .expect("watchdog lock")
                        .values()
                        .find(|(since, _)| since.elapsed() > watching.timeout)
                        .map(|&(_, during)| during);
                    if let Some(during) = overdue {
                        if watching.done.load(Ordering::SeqCst) {
                            return;
                        }
                        eprintln!("error: {}", watching.timeout_message(during));
                        // The blocked calls cannot be cancelled: leave at once. Checkpoints are
                        // written atomically, so the last one is intact.
                        std::process::exit(1);
                    }
                }
            })
            .expect("spawning the watchdog thread");
        watchdog
    }

    fn timeout_message(&self, during: &str) -> String {
        format!(
            "data-parallel training: {} did not answer within {} s during {during}; the run is \
             stopped (its last checkpoint is intact: continue with train --resume RUN_DIR once \
             every node is back, or raise --collective-timeout for a slow start)",
            self.others,
            self.timeout.as_secs_f64()
        )
    }

    /// Runs one collective call under watch. Burn's collective panics (in its threads, then in
    /// ours) when a node's connection drops: that becomes an error naming who was lost.
    fn guard<T>(
        &self,
        rank: usize,
        during: &'static str,
        call: impl FnOnce() -> T,
    ) -> Result<T, TrainError> {
        self.waiting
            .lock()
            .expect("watchdog lock")
            .insert(rank, (Instant::now(), during));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
        self.waiting.lock().expect("watchdog lock").remove(&rank);
        result.map_err(|panic| {
            let reason = panic_message(&*panic);
            self.error(during, format!("Burn's collective stopped: {reason}"))
        })
    }

    fn error(&self, during: &'static str, detail: String) -> TrainError {
        TrainError::Collective {
            during,
            detail: format!(
                "lost contact with {} ({detail}); the run's last checkpoint is intact: continue \
                 with train --resume RUN_DIR once every node is back",
                self.others
            ),
        }
    }

    fn stop(&self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// What a panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Who a peer waits for, as the timeout message names them.
fn describe_others(cluster: &Cluster, local: usize) -> String {
    if cluster.nodes == 1 {
        return format!("one of the {local} peers on this node");
    }
    let others: Vec<String> = (0..cluster.nodes)
        .filter(|&n| n != cluster.node_rank)
        .map(|n| n.to_string())
        .collect();
    let coordinator = cluster.coordinator.as_deref().unwrap_or("?");
    match others.as_slice() {
        [one] => format!(
            "node {one} (the other node of 2, coordinator {coordinator}; this is node {})",
            cluster.node_rank
        ),
        _ => format!(
            "one of nodes {} (coordinator {coordinator}; this is node {} of {})",
            others.join(", "),
            cluster.node_rank,
            cluster.nodes
        ),
    }
}

/// The collective's set-up for `local` peers on this node and the cluster's other nodes.
fn collective_config(
    local: usize,
    cluster: &Cluster,
    coordinator: Option<&(String, u16)>,
) -> Result<CollectiveConfig, TrainError> {
    let config = CollectiveConfig::default()
        .with_num_devices(local)
        // Between the threads of one process a tree of sums is cheap and deterministic.
        .with_local_all_reduce_strategy(AllReduceStrategy::Tree(2));
    let Some((host, port)) = coordinator else {
        return Ok(config);
    };
    let (node_host, node_port) = match &cluster.node_address {
        Some(address) => split_host_port(address, "--node-address")?,
        None => (local_address_towards(host, *port)?, None),
    };
    let default_port = port
        .checked_add(1 + cluster.node_rank as u16)
        .ok_or_else(|| ClusterError::BadAddress {
            flag: "--coordinator",
            value: format!("{host}:{port}"),
            detail: ": no port above it is free for the nodes' data service".into(),
        })?;
    let node_port = node_port.unwrap_or(default_port);
    let address = |url: String| -> burn_communication::Address {
        url.parse().expect("an address parses from any string")
    };
    Ok(config
        .with_num_nodes(cluster.nodes)
        .with_global_address(address(ws_url(host, *port)))
        .with_node_address(address(ws_url(&node_host, node_port)))
        .with_data_service_port(node_port)
        // Burn's global ring all-reduce fails on tensors smaller than the node count (a loss, a
        // LayerNorm bias): a binary tree handles every size.
        .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2)))
}

/// The address this machine uses to reach `host` (no packet is sent: connecting a UDP socket
/// only picks the route), which is where the other nodes reach it too.
fn local_address_towards(host: &str, port: u16) -> Result<String, TrainError> {
    let unreachable = |detail: String| TrainError::Collective {
        during: "finding this node's address",
        detail: format!(
            "cannot resolve the coordinator {host}:{port}: {detail}; check --coordinator, or \
             give this node's address with --node-address"
        ),
    };
    let target: SocketAddr = (host, port)
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let socket = UdpSocket::bind(bind).map_err(|e| unreachable(e.to_string()))?;
    socket
        .connect(target)
        .map_err(|e| unreachable(e.to_string()))?;
    let local = socket
        .local_addr()
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(local.ip().to_string())
}

/// Starts Burn's orchestrator, where the nodes register, on node 0 (a thread with its own async
/// runtime for the rest of the process).
fn start_orchestrator(port: u16) -> Result<(), TrainError> {
    // Burn's server only logs a bind failure: look first, to say so clearly.
    std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| TrainError::Collective {
        during: "starting the orchestrator",
        detail: format!(
            "node 0 cannot listen on port {port} ({e}): choose a free port in --coordinator on \
             every node"
        ),
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tinygpt-orchestrator")
        .enable_all()
        .build()
        .map_err(|e| TrainError::Collective {
            during: "starting the orchestrator",
            detail: e.to_string(),
        })?;
    std::thread::Builder::new()
        .name("tinygpt-orchestrator".into())
        .spawn(move || runtime.block_on(burn_collective::start_global_orchestrator(port)))
        .map_err(|e| TrainError::Collective {
            during: "starting the orchestrator",
            detail: e.to_string(),
        })?;
    Ok(())
}

/// Joins the collective: registers this node's peers (each call blocks until every peer of every
/// node has registered) and runs `work` for each peer on a thread of its own. Returns each
/// peer's result, in local order.
pub fn run_peers<B, T, F>(
    devices: &[B::Device],
    cluster: &Cluster,
    work: F,
) -> Result<Vec<Result<T, TrainError>>, TrainError>
where
    B: AutodiffBackend,
    T: Send,
    F: Fn(usize, &B::Device, &Peer) -> Result<T, TrainError> + Sync,
{
    let coordinator = cluster.validate()?;
    let local = devices.len();
    let world = cluster.world(local);
    let config = collective_config(local, cluster, coordinator.as_ref())?;
    if let (Some((_, port)), 0) = (&coordinator, cluster.node_rank) {
        start_orchestrator(*port)?;
    }
    // A process that ran peers before (tests) starts from a clean collective.
    reset::<B::InnerBackend>();
    let watchdog = Watchdog::start(cluster.timeout, describe_others(cluster, local));
    let results = std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::channel();
        for (index, device) in devices.iter().enumerate() {
            let peer = Peer {
                rank: cluster.node_rank as usize * local + index,
                world,
                watchdog: Arc::clone(&watchdog),
            };
            let (sender, config, work) = (sender.clone(), config.clone(), &work);
            std::thread::Builder::new()
                .name(format!("tinygpt-peer-{}", peer.rank))
                .spawn_scoped(scope, move || {
                    let joined = peer.watchdog.guard(peer.rank, "joining the run", || {
                        collective::register::<B::InnerBackend>(peer.id(), device.clone(), config)
                    });
                    let result = match joined {
                        Err(e) => Err(e),
                        Ok(Err(e)) => Err(peer.watchdog.error("joining the run", format!("{e:?}"))),
                        Ok(Ok(())) => {
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    work(index, device, &peer)
                                }))
                                .unwrap_or_else(|panic| {
                                    Err(TrainError::Collective {
                                        during: "training",
                                        detail: format!(
                                            "peer {} panicked: {}",
                                            peer.rank,
                                            panic_message(&*panic)
                                        ),
                                    })
                                });
                            if result.is_ok() {
                                // Leaving is bookkeeping: the work is done and saved.
                                let _ = peer.watchdog.guard(peer.rank, "leaving the run", || {
                                    collective::finish_collective::<B::InnerBackend>(peer.id())
                                });
                            }
                            result
                        }
                    };
                    let _ = sender.send((index, result));
                })
                .expect("spawning a peer thread");
        }
        drop(sender);
        let mut results: Vec<Option<Result<T, TrainError>>> = (0..local).map(|_| None).collect();
        let mut released = false;
        for (index, result) in receiver {
            if result.is_err() && !released {
                // The other peers may be blocked in an all-reduce this one will never join:
                // resetting the collective fails their calls, so they return too.
                reset::<B::InnerBackend>();
                released = true;
            }
            results[index] = Some(result);
        }
        results
    });
    watchdog.stop();
    reset::<B::InnerBackend>();
    Ok(results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(TrainError::Collective {
                    during: "training",
                    detail: "a peer thread panicked".into(),
                })
            })
        })
        .collect())
}

/// Clears the collective's state for backend `B`, failing the calls peers are blocked in. A no-op
/// when Burn's collective already stopped (a lost node takes it down).
fn reset<B: Backend>() {
    let _ = std::panic::catch_unwind(collective::reset_collective::<B>);
}

/// Averages the gradients over every peer, in buckets, in the order the model visits its
/// parameters (the same on every peer; Burn's `GradientsParams::all_reduce` orders by parameter
/// id, which differs between processes). `control` rides along in the last bucket and comes back
/// averaged too.
pub fn all_reduce_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: GradientsParams,
    control: Tensor<B::InnerBackend, 1>,
    peer: &Peer,
) -> Result<(GradientsParams, Tensor<B::InnerBackend, 1>), TrainError> {
    struct Flatten<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        flat: Vec<Tensor<B::InnerBackend, 1>>,
        /// Per parameter in visit order: whether it had a gradient (every used weight has).
        present: Vec<bool>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let grad = self.grads.remove::<B::InnerBackend, D>(param.id);
            self.present.push(grad.is_some());
            if let Some(grad) = grad {
                let len = grad.shape().num_elements();
                self.flat.push(grad.reshape([len]));
            }
        }
    }
    let mut flatten = Flatten::<B> {
        grads: &mut grads,
        flat: Vec::new(),
        present: Vec::new(),
    };
    model.visit(&mut flatten);
    let present = flatten.present;
    let mut pending = flatten.flat;
    let gradients = pending.len();
    let control_len = control.dims()[0];
    pending.push(control);

    // Consecutive tensors into buckets of about BUCKET_VALUES, each reduced in one call.
    let mut reduced: Vec<Tensor<B::InnerBackend, 1>> = Vec::with_capacity(pending.len());
    let mut bucket: Vec<Tensor<B::InnerBackend, 1>> = Vec::new();
    let mut bucket_len = 0;
    let count = pending.len();
    for (i, tensor) in pending.into_iter().enumerate() {
        bucket_len += tensor.dims()[0];
        bucket.push(tensor);
        if bucket_len >= BUCKET_VALUES || i + 1 == count {
            let sizes: Vec<usize> = bucket.iter().map(|t| t.dims()[0]).collect();
            let joined = if bucket.len() == 1 {
                bucket.pop().expect("one tensor")
            } else {
                Tensor::cat(std::mem::take(&mut bucket), 0)
            };
            let mean = peer.all_reduce(joined, ReduceOperation::Mean, "the gradient all-reduce")?;
            let mut offset = 0;
            for size in sizes {
                reduced.push(mean.clone().slice(offset..offset + size));
                offset += size;
            }
            bucket_len = 0;
        }
    }
    let control = reduced.pop().expect("the control values");
    debug_assert_eq!(control.dims()[0], control_len);
    debug_assert_eq!(reduced.len(), gradients);

    struct Restore<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        flat: std::vec::IntoIter<Tensor<B::InnerBackend, 1>>,
        present: &'a [bool],
        index: usize,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Restore<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let had = self.present.get(self.index).copied().unwrap_or(false);
            self.index += 1;
            if had {
                let flat = self.flat.next().expect("one gradient per parameter");
                let dims: [usize; D] = param.shape().dims();
                self.grads.register(param.id, flat.reshape(dims));
            }
        }
    }
    model.visit(&mut Restore::<B> {
        grads: &mut grads,
        flat: reduced.into_iter(),
        present: &present,
        index: 0,
    });
    Ok((grads, control))
}

/// Rank 0's value of every parameter, on every peer, exactly: the others add zeros. A run that
/// initialises on several nodes thus starts from one set of weights, as DDP broadcasts rank 0's.
pub fn sync_from_rank0<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: M,
    peer: &Peer,
) -> Result<M, TrainError> {
    struct FromRank0<'a> {
        peer: &'a Peer,
        error: Option<TrainError>,
    }
    impl<B: AutodiffBackend> ModuleMapper<B> for FromRank0<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            if self.error.is_some() {
                return param;
            }
            let (peer, error) = (self.peer, &mut self.error);
            param.map(|tensor| {
                let grad = tensor.is_require_grad();
                let inner = tensor.inner();
                let dims = inner.dims();
                let len = inner.shape().num_elements();
                let mine = if peer.rank == 0 {
                    inner.clone().reshape([len])
                } else {
                    inner.zeros_like().reshape([len])
                };
                let synced =
                    match peer.all_reduce(mine, ReduceOperation::Sum, "the initial weights") {
                        Ok(sum) => sum.reshape(dims),
                        Err(e) => {
                            *error = Some(e);
                            inner
                        }
                    };
                let tensor = Tensor::from_inner(synced);
                if grad {
                    tensor.require_grad()
                } else {
                    tensor
                }
            })
        }
    }
    let mut mapper = FromRank0 { peer, error: None };
    let model = model.map(&mut mapper);
    match mapper.error {
        Some(error) => Err(error),
        None => Ok(model),
    }
}

/// Sum over peers of each one's largest absolute difference from rank 0's parameters: 0 exactly
/// when every replica holds the same weights.
pub fn replica_difference<B: Backend, M: burn::module::Module<B>>(
    model: &M,
    peer: &Peer,
) -> Result<f64, TrainError> {
    struct Difference<'a, B: Backend> {
        peer: &'a Peer,
        largest: Option<Tensor<B, 1>>,
        error: Option<TrainError>,
    }
    impl<B: Backend> ModuleVisitor<B> for Difference<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.error.is_some() {
                return;
            }
            let value = param.val();
            let len = value.shape().num_elements();
            let flat = value.reshape([len]);
            let mine = if self.peer.rank == 0 {
                flat.clone()
            } else {
                flat.zeros_like()
            };
            match self
                .peer
                .all_reduce(mine, ReduceOperation::Sum, "the replica check")
            {
                Ok(rank0) => {
                    let diff = (flat - rank0).abs().max();
                    self.largest = Some(match self.largest.take() {
                        Some(largest) => largest.max_pair(diff),
                        None => diff,
                    });
                }
                Err(e) => self.error = Some(e),
            }
        }
    }
    let mut visitor = Difference::<B> {
        peer,
        largest: None,
        error: None,
    };
    model.visit(&mut visitor);
    if let Some(error) = visitor.error {
        return Err(error);
    }
    let Some(largest) = visitor.largest else {
        return Ok(0.0);
    };
    let total = peer.all_reduce(largest, ReduceOperation::Sum, "the replica check")?;
    Ok(total.into_scalar().elem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_clear_errors() {
        assert_eq!(
            split_host_port("node0.example.com:29500", "--coordinator"),
            Ok(("node0.example.com".into(), Some(29500)))
        );
        assert_eq!(
            split_host_port("10.0.0.2", "--node-address"),
            Ok(("10.0.0.2".into(), None))
        );
        assert_eq!(
            split_host_port("[::1]:7000", "--coordinator"),
            Ok(("::1".into(), Some(7000)))
        );
        assert_eq!(
            split_host_port("::1", "--node-address"),
            Ok(("::1".into(), None))
        );
        for bad in ["", "ws://a:1", "a:0", "a:http", ":80", "a:70000"] {
            let err = split_host_port(bad, "--coordinator").unwrap_err();
            assert!(err.to_string().contains("--coordinator"), "{bad}: {err}");
        }
        assert_eq!(ws_url("::1", 5), "ws://[::1]:5");
    }

    #[test]
    fn clusters_are_checked_before_anything_starts() {
        let one = Cluster::default();
        assert_eq!(one.validate(), Ok(None));
        let two = |coordinator: Option<&str>| Cluster {
            nodes: 2,
            coordinator: coordinator.map(Into::into),
            ..Cluster::default()
        };
        assert_eq!(two(None).validate(), Err(ClusterError::NoCoordinator(2)));
        assert!(two(None)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--coordinator HOST:PORT"));
        assert_eq!(
            two(Some("127.0.0.1:29500")).validate(),
            Ok(Some(("127.0.0.1".into(), 29500)))
        );
        assert!(matches!(
            two(Some("127.0.0.1")).validate(),
            Err(ClusterError::BadAddress { .. })
        ));
        let rank = Cluster {
            node_rank: 2,
            ..two(Some("h:1"))
        };
        assert_eq!(
            rank.validate(),
            Err(ClusterError::RankOutOfRange { rank: 2, nodes: 2 })
        );
        assert_eq!(
            Cluster {
                nodes: 0,
                ..Cluster::default()
            }
            .validate(),
            Err(ClusterError::NoNodes)
        );
    }

    #[test]
    fn node_addresses_default_to_the_route_towards_the_coordinator() {
        let cluster = Cluster {
            nodes: 2,
            node_rank: 1,
            coordinator: Some("127.0.0.1:29500".into()),
            ..Cluster::default()
        };
        let coordinator = cluster.validate().unwrap();
        let config = collective_config(2, &cluster, coordinator.as_ref()).unwrap();
        let shown = config.to_string();
        assert!(shown.contains("ws://127.0.0.1:29500"), "{shown}");
        assert!(shown.contains("ws://127.0.0.1:29502"), "{shown}");
        assert!(config.is_valid());
        let named = Cluster {
            node_address: Some("10.1.2.3:4000".into()),
            ..cluster
        };
        let shown = collective_config(2, &named, coordinator.as_ref())
            .unwrap()
            .to_string();
        assert!(shown.contains("ws://10.1.2.3:4000"), "{shown}");
    }

    #[test]
    fn the_message_names_the_node_that_was_lost() {
        let cluster = Cluster {
            nodes: 2,
            node_rank: 0,
            coordinator: Some("127.0.0.1:29500".into()),
            ..Cluster::default()
        };
        assert!(describe_others(&cluster, 1).starts_with("node 1 "));
        let four = Cluster {
            nodes: 4,
            node_rank: 2,
            ..cluster
        };
        assert!(describe_others(&four, 1).starts_with("one of nodes 0, 1, 3 "));
    }
}
