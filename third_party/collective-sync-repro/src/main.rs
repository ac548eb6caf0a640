//! Node 0 starts Burn's orchestrator on port 29400; each node registers one peer and
//! all-reduces a 4-element tensor three times, printing after each. The global strategy is a
//! tree (`ring` as the second argument picks Burn's default, the ring, which hangs on this small
//! tensor already in the first all-reduce, patched or not).

use burn_collective::{
    all_reduce, register, AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation,
};
use burn_flex::Flex;
use burn_tensor::Tensor;

fn main() {
    let rank: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).expect("rank 0 or 1");
    if rank == 0 {
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(burn_collective::start_global_orchestrator(29400))
        });
    }
    let address = |port: u16| format!("ws://127.0.0.1:{port}").parse().unwrap();
    let config = CollectiveConfig::default()
        .with_num_devices(1)
        .with_num_nodes(2)
        .with_global_address(address(29400))
        .with_node_address(address(29401 + rank as u16))
        .with_data_service_port(29401 + rank as u16)
        .with_global_all_reduce_strategy(match std::env::args().nth(2).as_deref() {
            Some("ring") => AllReduceStrategy::Ring,
            _ => AllReduceStrategy::Tree(2),
        });
    let device = Default::default();
    register::<Flex>(PeerId(rank), device, config).unwrap();
    for round in 1..=3 {
        let tensor = Tensor::<Flex, 1>::from_floats([rank as f32 + 1.0; 4], &device);
        let sum = all_reduce::<Flex>(PeerId(rank), tensor.into_primitive().tensor(), ReduceOperation::Sum)
            .unwrap();
        let sum = Tensor::<Flex, 1>::from_primitive(burn_tensor::TensorPrimitive::Float(sum));
        println!("node {rank}: all-reduce {round} done: {:?}", sum.into_data().to_vec::<f32>().unwrap());
    }
}
