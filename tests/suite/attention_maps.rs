//! `tinygpt attention`'s numbers are the weights the model uses: for a multi-head layer with
//! learned positions and for a grouped-query layer with rotary embeddings, on flex and ndarray,
//! every row sums to 1, nothing attends to the future, the weights equal a recomputation from
//! the layer's own queries and keys, and weights × values give the fused kernel's output.

use burn::backend::{Flex, NdArray};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use tinygpt_layers::attention::{causal_weights, merge_heads, repeat_kv, split_heads};
use tinygpt_layers::linear::per_position;
use tinygpt_layers::{AttentionMap, Layer};
use tinygpt_model::{LanguageModel, ModelConfig};
use tinygpt_train::RunConfig;

fn model_config(model: &str) -> ModelConfig {
    let text = format!(
        "(model: {model}, data: (corpus: File(path: \"unused.txt\")), training: (batch_size: 1, \
         max_iters: 1, learning_rate: 1e-3, eval_interval: 1, eval_iters: 1))"
    );
    RunConfig::parse(&text, "test")
        .unwrap()
        .model
        .resolve(65)
        .unwrap()
}

const IDS: [i64; 7] = [3, 17, 42, 8, 8, 60, 1];

fn ids<B: Backend>(device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(IDS.to_vec(), [1, IDS.len()]), device)
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "{what}: max |diff| {worst}");
}

/// Rows sum to 1 and the future gets exactly 0.
fn assert_causal_rows(map: &AttentionMap) {
    for head in 0..map.heads {
        for i in 0..map.time {
            let row = map.row(head, i);
            let sum: f32 = row.iter().sum();
            assert!(
                (sum - 1.0).abs() < 1e-5,
                "head {head} row {i} sums to {sum}"
            );
            assert!(
                row[i + 1..].iter().all(|&w| w == 0.0),
                "row {i} sees the future"
            );
        }
    }
}

/// The token embeddings of `IDS` (plus the first positions' embeddings, when learned).
fn embedded<B: Backend>(model: &LanguageModel<B>, device: &B::Device) -> Tensor<B, 3> {
    let x = model.token_embedding.forward(ids::<B>(device));
    match &model.position_embedding {
        Some(positions) => {
            let [_, time, width] = x.dims();
            let table = positions.weight.val().slice([0..time, 0..width]);
            x + table.unsqueeze::<3>()
        }
        None => x,
    }
}

fn multi_head_on<B: Backend>() {
    let device = Default::default();
    let config = model_config(
        "(n_embd: 32, block_size: 8, layers: [MultiHeadAttention(n_head: 4), LayerNorm()])",
    );
    let model: LanguageModel<B> = config.init(&device);
    let maps = model.attention_maps(ids::<B>(&device));
    assert_eq!(maps.len(), 1);
    let (layer, map) = &maps[0];
    assert_eq!((*layer, map.heads, map.time), (0, 4, IDS.len()));
    assert_causal_rows(map);
    let Layer::MultiHeadAttention(mha) = &model.layers[0] else {
        panic!("layer 0 is the attention")
    };
    let x = embedded(&model, &device);
    let [q, k, v]: [Tensor<B, 3>; 3] = per_position(&mha.qkv, x.clone())
        .chunk(3, 2)
        .try_into()
        .unwrap();
    let weights = causal_weights(split_heads(q, 4), split_heads(k, 4));
    assert_close(
        &map.weights,
        &values(weights.clone()),
        "recomputed from q and k",
    );
    // The fused kernel's output is these weights times the values.
    let out = merge_heads(weights.matmul(split_heads(v, 4)));
    assert_close(&values(mha.forward(x)), &values(out), "weights x values");
}

fn grouped_query_on<B: Backend>() {
    let device = Default::default();
    let config = model_config(
        "(n_embd: 32, block_size: 8, position_embedding: false, layers: [Attention(n_head: 4, \
         n_kv_head: 2, rope: (theta: 10000.0)), RmsNorm()])",
    );
    let model: LanguageModel<B> = config.init(&device);
    let maps = model.attention_maps(ids::<B>(&device));
    assert_eq!(maps.len(), 1);
    let (_, map) = &maps[0];
    assert_eq!(map.heads, 4);
    assert_causal_rows(map);
    let Layer::Attention(attention) = &model.layers[0] else {
        panic!("layer 0 is the attention")
    };
    let x = embedded(&model, &device);
    // The values are not rotated: the captured weights times them, projected, are the layer.
    let qkv = per_position(&attention.qkv, x.clone());
    let [batch, time, width] = qkv.dims();
    let v = qkv.slice([0..batch, 0..time, width - 2 * 8..width]);
    let weights = Tensor::<B, 4>::from_data(
        TensorData::new(map.weights.clone(), [1, 4, time, time]),
        &device,
    );
    let out = merge_heads(weights.matmul(repeat_kv(split_heads(v, 2), 2)));
    let out = per_position(&attention.projection, out);
    assert_close(
        &values(attention.forward(x)),
        &values(out),
        "weights x values",
    );
    // Training and generation keep nothing: outside a capture, no maps are made.
    let (_, outside) = tinygpt_layers::capture_attention(|| ());
    assert!(outside.is_empty());
}

#[test]
fn attention_maps_are_the_weights_the_model_uses() {
    multi_head_on::<Flex>();
    multi_head_on::<NdArray<f32>>();
    grouped_query_on::<Flex>();
    grouped_query_on::<NdArray<f32>>();
}
