//! Loading weights trained in PyTorch: safetensors files with the tutorial's module names and
//! layouts (`token_embedding_table`, `layers.0.sa.heads.1.key.weight`, `ffwd.net.0`, ...).
//!
//! PyTorch stores a Linear weight as `[out, in]`, Burn as `[in, out]`; the tutorial keeps each
//! attention head's key, query and value as separate Linears, tinygpt fuses them into one `qkv`
//! matrix (queries of all heads, then keys, then values). The mapping below does both.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tinygpt_layers::{FeedForward, Head, Layer, LayerNorm, MultiHeadAttention};
use tinygpt_model::{LanguageModel, ModelConfig};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a safetensors file: {1}")]
    Format(String, String),
    #[error("the file has no tensor {0:?}: is it a checkpoint of this architecture?")]
    Missing(String),
    #[error("tensor {name:?} has shape {found:?}, the model needs {expected:?}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(
        "layers[{0}] is not one of the tutorial's layers (Head, MultiHeadAttention, FeedForward, \
         Block, LayerNorm), which are all the tutorial's PyTorch files hold"
    )]
    NotATutorialLayer(usize),
    #[error("tensor {name:?} has dtype {dtype}, expected {expected}")]
    Dtype {
        name: String,
        dtype: String,
        expected: &'static str,
    },
}

/// Tensors read from a safetensors file, floats widened or narrowed to f32.
#[derive(Debug, Clone, Default)]
pub struct TorchTensors {
    floats: HashMap<String, (Vec<usize>, Vec<f32>)>,
    ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
}

impl TorchTensors {
    pub fn read(path: &Path) -> Result<Self, ImportError> {
        let bytes = std::fs::read(path).map_err(|source| ImportError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, ImportError> {
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| ImportError::Format(origin.to_string(), e.to_string()))?;
        let mut tensors = Self::default();
        for (name, view) in file.tensors() {
            let shape = view.shape().to_vec();
            let data = view.data();
            match view.dtype() {
                Dtype::F32 => {
                    let values = data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    tensors.floats.insert(name, (shape, values));
                }
                Dtype::F64 => {
                    let values = data
                        .chunks_exact(8)
                        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                        .collect();
                    tensors.floats.insert(name, (shape, values));
                }
                Dtype::I64 => {
                    let values = data
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                        .collect();
                    tensors.ints.insert(name, (shape, values));
                }
                other => {
                    return Err(ImportError::Dtype {
                        name,
                        dtype: format!("{other:?}"),
                        expected: "F32, F64 or I64",
                    })
                }
            }
        }
        Ok(tensors)
    }

    /// Adds (or replaces) a float tensor.
    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) {
        self.floats.insert(name.into(), (shape, values));
    }

    /// A float tensor's shape and values.
    pub fn float(&self, name: &str) -> Result<(&[usize], &[f32]), ImportError> {
        self.floats
            .get(name)
            .map(|(s, v)| (s.as_slice(), v.as_slice()))
            .ok_or_else(|| ImportError::Missing(name.to_string()))
    }

    /// An int64 tensor's shape and values.
    pub fn int(&self, name: &str) -> Result<(&[usize], &[i64]), ImportError> {
        self.ints
            .get(name)
            .map(|(s, v)| (s.as_slice(), v.as_slice()))
            .ok_or_else(|| ImportError::Missing(name.to_string()))
    }

    fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, ImportError> {
        let (shape, values) = self.float(name)?;
        if shape != expected {
            return Err(ImportError::Shape {
                name: name.to_string(),
                found: shape.to_vec(),
                expected: expected.to_vec(),
            });
        }
        Ok(Tensor::from_data(
            TensorData::new(values.to_vec(), expected),
            device,
        ))
    }

    /// A PyTorch Linear weight `[out, in]` as Burn's `[in, out]`.
    fn linear_weight<B: Backend>(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>, ImportError> {
        Ok(self
            .tensor::<B, 2>(name, [d_out, d_in], device)?
            .transpose())
    }
}

/// Builds the model of `config` with the weights named `<prefix><pytorch name>` in `tensors`.
pub fn import_model<B: Backend>(
    config: &ModelConfig,
    tensors: &TorchTensors,
    prefix: &str,
    device: &B::Device,
) -> Result<LanguageModel<B>, ImportError> {
    let mut model: LanguageModel<B> = config.init(device);
    let (v, c) = (config.vocab_size, config.n_embd);
    let name = |suffix: &str| format!("{prefix}{suffix}");
    set_embedding(
        &mut model.token_embedding,
        tensors.tensor(&name("token_embedding_table.weight"), [v, c], device)?,
    );
    if let Some(position) = &mut model.position_embedding {
        let t = config.block_size;
        set_embedding(
            position,
            tensors.tensor(&name("position_embedding_table.weight"), [t, c], device)?,
        );
    }
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let at = name(&format!("layers.{i}."));
        match layer {
            Layer::Head(head) => import_head(head, tensors, &at, device)?,
            Layer::MultiHeadAttention(mha) => import_attention(mha, tensors, &at, device)?,
            Layer::FeedForward(ffn) => import_feed_forward(ffn, tensors, &at, device)?,
            Layer::Block(block) => {
                import_layer_norm(&mut block.ln1, tensors, &format!("{at}ln1."), device)?;
                import_attention(&mut block.attention, tensors, &format!("{at}sa."), device)?;
                import_layer_norm(&mut block.ln2, tensors, &format!("{at}ln2."), device)?;
                import_feed_forward(
                    &mut block.feed_forward,
                    tensors,
                    &format!("{at}ffwd."),
                    device,
                )?;
            }
            Layer::LayerNorm(norm) => import_layer_norm(norm, tensors, &at, device)?,
            Layer::RmsNorm(_)
            | Layer::Attention(_)
            | Layer::SwiGlu(_)
            | Layer::LlamaBlock(_)
            | Layer::SpeedrunBlock(_) => {
                return Err(ImportError::NotATutorialLayer(i));
            }
        }
    }
    if let Some(lm_head) = &mut model.lm_head {
        import_linear(lm_head, tensors, &name("lm_head."), device)?;
    }
    Ok(model)
}

fn set_embedding<B: Backend>(embedding: &mut Embedding<B>, weight: Tensor<B, 2>) {
    embedding.weight = Param::from_tensor(weight);
}

fn dims<B: Backend>(linear: &Linear<B>) -> (usize, usize) {
    let [d_in, d_out] = linear.weight.shape().dims();
    (d_in, d_out)
}

fn import_linear<B: Backend>(
    linear: &mut Linear<B>,
    tensors: &TorchTensors,
    at: &str,
    device: &B::Device,
) -> Result<(), ImportError> {
    let (d_in, d_out) = dims(linear);
    linear.weight =
        Param::from_tensor(tensors.linear_weight(&format!("{at}weight"), d_in, d_out, device)?);
    if linear.bias.is_some() {
        linear.bias = Some(Param::from_tensor(tensors.tensor(
            &format!("{at}bias"),
            [d_out],
            device,
        )?));
    }
    Ok(())
}

/// Fuses per-head key/query/value weights into `[d_in, 3 * heads * head_size]`: all queries,
/// then all keys, then all values, head by head within each.
fn fused_qkv<B: Backend>(
    tensors: &TorchTensors,
    head_prefixes: &[String],
    d_in: usize,
    head_size: usize,
    device: &B::Device,
) -> Result<Tensor<B, 2>, ImportError> {
    let mut parts = Vec::with_capacity(3 * head_prefixes.len());
    for projection in ["query", "key", "value"] {
        for head in head_prefixes {
            parts.push(tensors.linear_weight(
                &format!("{head}{projection}.weight"),
                d_in,
                head_size,
                device,
            )?);
        }
    }
    Ok(Tensor::cat(parts, 1))
}

fn import_head<B: Backend>(
    head: &mut Head<B>,
    tensors: &TorchTensors,
    at: &str,
    device: &B::Device,
) -> Result<(), ImportError> {
    let (d_in, width) = dims(&head.qkv);
    let qkv = fused_qkv(tensors, &[at.to_string()], d_in, width / 3, device)?;
    head.qkv.weight = Param::from_tensor(qkv);
    Ok(())
}

fn import_attention<B: Backend>(
    mha: &mut MultiHeadAttention<B>,
    tensors: &TorchTensors,
    at: &str,
    device: &B::Device,
) -> Result<(), ImportError> {
    let (d_in, width) = dims(&mha.qkv);
    let heads: Vec<String> = (0..mha.n_head).map(|h| format!("{at}heads.{h}.")).collect();
    let qkv = fused_qkv(tensors, &heads, d_in, width / 3 / mha.n_head, device)?;
    mha.qkv.weight = Param::from_tensor(qkv);
    if let Some(projection) = &mut mha.projection {
        import_linear(projection, tensors, &format!("{at}proj."), device)?;
    }
    Ok(())
}

fn import_feed_forward<B: Backend>(
    ffn: &mut FeedForward<B>,
    tensors: &TorchTensors,
    at: &str,
    device: &B::Device,
) -> Result<(), ImportError> {
    import_linear(&mut ffn.hidden, tensors, &format!("{at}net.0."), device)?;
    if let Some(projection) = &mut ffn.projection {
        import_linear(projection, tensors, &format!("{at}net.2."), device)?;
    }
    Ok(())
}

fn import_layer_norm<B: Backend>(
    norm: &mut LayerNorm<B>,
    tensors: &TorchTensors,
    at: &str,
    device: &B::Device,
) -> Result<(), ImportError> {
    let [d] = norm.norm.gamma.shape().dims();
    norm.norm.gamma = Param::from_tensor(tensors.tensor(&format!("{at}weight"), [d], device)?);
    norm.norm.beta = Some(Param::from_tensor(tensors.tensor(
        &format!("{at}bias"),
        [d],
        device,
    )?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunConfig;
    // flex is compiled once in burn-flex; ndarray's generic operations would be compiled here.
    type B = burn::backend::Flex;

    fn multihead_config() -> ModelConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/multihead.ron");
        RunConfig::load(&path).unwrap().model.resolve(65).unwrap()
    }

    /// Every PyTorch tensor of the multihead stage, each filled with a value naming it.
    fn labelled() -> TorchTensors {
        let mut t = TorchTensors::default();
        t.insert(
            "token_embedding_table.weight",
            vec![65, 32],
            vec![0.5; 65 * 32],
        );
        t.insert(
            "position_embedding_table.weight",
            vec![8, 32],
            vec![0.25; 8 * 32],
        );
        for h in 0..4 {
            for (k, projection) in ["query", "key", "value"].iter().enumerate() {
                // [out = 8, in = 32]: row o holds 100*k + 10*h + o, so after the transpose
                // column o of the head's block must hold that value.
                let values = (0..8)
                    .flat_map(|o| std::iter::repeat_n((100 * k + 10 * h + o) as f32, 32))
                    .collect();
                t.insert(
                    format!("layers.0.heads.{h}.{projection}.weight"),
                    vec![8, 32],
                    values,
                );
            }
        }
        t.insert("lm_head.weight", vec![65, 32], vec![0.0; 65 * 32]);
        t.insert(
            "lm_head.bias",
            vec![65],
            (0..65).map(|i| i as f32).collect(),
        );
        t
    }

    #[test]
    fn heads_land_in_the_fused_qkv_columns() {
        let model =
            import_model::<B>(&multihead_config(), &labelled(), "", &Default::default()).unwrap();
        let Layer::MultiHeadAttention(mha) = &model.layers[0] else {
            panic!("multihead.ron's layer is MultiHeadAttention");
        };
        let w: Vec<f32> = mha.qkv.weight.val().into_data().to_vec().unwrap();
        let width = 96; // [32, 3 * 4 * 8]
        for row in [0, 17, 31] {
            for (k, _) in ["query", "key", "value"].iter().enumerate() {
                for h in 0..4 {
                    for o in 0..8 {
                        let column = k * 32 + h * 8 + o;
                        assert_eq!(
                            w[row * width + column],
                            (100 * k + 10 * h + o) as f32,
                            "row {row}, projection {k}, head {h}, output {o}"
                        );
                    }
                }
            }
        }
        let bias: Vec<f32> = model
            .lm_head
            .as_ref()
            .unwrap()
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(bias[64], 64.0);
    }

    #[test]
    fn missing_or_misshapen_tensors_are_clear_errors() {
        let config = multihead_config();
        let mut tensors = labelled();
        tensors.floats.remove("layers.0.heads.2.key.weight");
        let err = import_model::<B>(&config, &tensors, "", &Default::default()).unwrap_err();
        assert!(
            err.to_string().contains("layers.0.heads.2.key.weight"),
            "{err}"
        );

        let mut tensors = labelled();
        tensors.insert("lm_head.bias", vec![64], vec![0.0; 64]);
        let err = import_model::<B>(&config, &tensors, "", &Default::default()).unwrap_err();
        assert!(matches!(err, ImportError::Shape { .. }), "{err}");
        assert!(TorchTensors::from_bytes(b"not safetensors", "x").is_err());
    }
}
