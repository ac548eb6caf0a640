//! safetensors files in and out: one `model.safetensors` or the shards a
//! `model.safetensors.index.json` lists, read by name with every shape checked and the unused
//! names reported; and a float32 or bfloat16 file written from named tensors.

use crate::{HfError, INDEX_FILE, WEIGHTS_FILE};
use burn::tensor::{backend::Backend, Tensor};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The weight files of a directory, mapped.
pub(crate) struct WeightFiles {
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name -> file, from the index (`None` for a single file).
    index: Option<HashMap<String, usize>>,
}

impl WeightFiles {
    pub(crate) fn open(dir: &Path) -> Result<Self, HfError> {
        let single = dir.join(WEIGHTS_FILE);
        if single.is_file() {
            return Ok(Self {
                files: vec![(single.clone(), map(&single)?)],
                index: None,
            });
        }
        let index_path = dir.join(INDEX_FILE);
        if !index_path.is_file() {
            return Err(HfError::NoWeights {
                dir: dir.to_path_buf(),
            });
        }
        let bad = |message: String| HfError::BadConfig {
            path: index_path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&index_path).map_err(|source| HfError::Read {
            path: index_path.clone(),
            source,
        })?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let weight_map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
        let mut shard_names: Vec<&str> = Vec::new();
        let mut index = HashMap::new();
        for (tensor, shard) in weight_map {
            let shard = shard
                .as_str()
                .ok_or_else(|| bad(format!("{tensor:?} maps to {shard}, not a file name")))?;
            if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
                return Err(bad(format!(
                    "{shard:?} is not a file name in this directory"
                )));
            }
            let at = match shard_names.iter().position(|s| *s == shard) {
                Some(at) => at,
                None => {
                    shard_names.push(shard);
                    shard_names.len() - 1
                }
            };
            index.insert(tensor.clone(), at);
        }
        let mut files = Vec::with_capacity(shard_names.len());
        for shard in shard_names {
            let path = dir.join(shard);
            if !path.is_file() {
                return Err(HfError::Read {
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{INDEX_FILE} lists this shard but it is not there"),
                    ),
                    path,
                });
            }
            let mapped = map(&path)?;
            files.push((path, mapped));
        }
        Ok(Self {
            files,
            index: Some(index),
        })
    }

    /// The tensors of every file, parsed.
    pub(crate) fn tensors(&self) -> Result<Tensors<'_>, HfError> {
        let mut files = Vec::with_capacity(self.files.len());
        for (path, bytes) in &self.files {
            let file = SafeTensors::deserialize(bytes).map_err(|e| HfError::Weights {
                path: path.clone(),
                message: e.to_string(),
            })?;
            files.push((path.as_path(), file));
        }
        let mut by_name = HashMap::new();
        for (at, (path, file)) in files.iter().enumerate() {
            for name in file.names() {
                if let Some(index) = &self.index {
                    if index.get(name) != Some(&at) {
                        return Err(HfError::Weights {
                            path: path.to_path_buf(),
                            message: format!("holds {name:?}, which {INDEX_FILE} puts elsewhere"),
                        });
                    }
                }
                by_name.insert(name.to_string(), at);
            }
        }
        if let Some(index) = &self.index {
            if let Some(lost) = index.keys().find(|name| !by_name.contains_key(*name)) {
                let (path, _) = &files[index[lost]];
                return Err(HfError::Missing {
                    path: path.to_path_buf(),
                    name: lost.clone(),
                });
            }
        }
        Ok(Tensors {
            files,
            by_name,
            used: BTreeSet::new(),
        })
    }
}

// SAFETY (for `map`): the maps are read-only and dropped once the model is built; a file
// changed underneath meanwhile gives wrong weights or a format error, never unsafety in this
// process's own data. Mapped, not read: the weights are copied once, into the model.
fn map(path: &Path) -> Result<Mmap, HfError> {
    let read_error = |source| HfError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    unsafe { Mmap::map(&file) }.map_err(read_error)
}

/// Named tensors across a directory's weight files; remembers which were taken.
pub(crate) struct Tensors<'a> {
    files: Vec<(&'a Path, SafeTensors<'a>)>,
    by_name: HashMap<String, usize>,
    used: BTreeSet<String>,
}

impl Tensors<'_> {
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The file that holds `name`, or the first one (for errors about a missing tensor).
    pub(crate) fn path_of(&self, name: &str) -> &Path {
        let at = self.by_name.get(name).copied().unwrap_or(0);
        self.files[at].0
    }

    /// Tensor `name` and the file that holds it.
    fn view(&self, name: &str) -> Result<(PathBuf, safetensors::tensor::TensorView<'_>), HfError> {
        let path = self.path_of(name).to_path_buf();
        let view = self
            .by_name
            .get(name)
            .and_then(|&at| self.files[at].1.tensor(name).ok())
            .ok_or_else(|| HfError::Missing {
                path: path.clone(),
                name: name.to_string(),
            })?;
        Ok((path, view))
    }

    /// Tensor `name` as f32 values in the file's (row-major) order, checked to have shape
    /// `expected`; with `crop_rows`, a tensor with more rows is cut to `expected[0]` of them.
    pub(crate) fn take(
        &mut self,
        name: &str,
        expected: &[usize],
        crop_rows: bool,
    ) -> Result<Vec<f32>, HfError> {
        let (path, view) = self.view(name)?;
        let shape = view.shape();
        let rows_fit = crop_rows
            && shape.len() == expected.len()
            && !shape.is_empty()
            && shape[0] >= expected[0]
            && shape[1..] == expected[1..];
        if shape != expected && !rows_fit {
            return Err(HfError::Shape {
                path,
                name: name.to_string(),
                found: shape.to_vec(),
                expected: expected.to_vec(),
            });
        }
        let count: usize = expected.iter().product();
        let values = to_f32(view.dtype(), view.data(), count).ok_or_else(|| HfError::Dtype {
            path,
            name: name.to_string(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        self.used.insert(name.to_string());
        Ok(values)
    }

    /// Names not taken, except those `harmless` accepts, sorted.
    pub(crate) fn leftovers(&self, harmless: impl Fn(&str) -> bool) -> Vec<String> {
        let mut names: Vec<String> = self
            .names()
            .filter(|name| !self.used.contains(*name) && !harmless(name))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// The file to name when reporting leftovers.
    pub(crate) fn first_path(&self) -> &Path {
        self.files[0].0
    }
}

/// The float formats a Hugging Face checkpoint stores, as `config.json` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafetensorsDtype {
    F32,
    F16,
    BF16,
}

impl SafetensorsDtype {
    /// `torch_dtype` / `dtype` in `config.json`.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
        }
    }

    pub fn from_torch_name(name: &str) -> Option<Self> {
        match name {
            "float32" => Some(Self::F32),
            "float16" => Some(Self::F16),
            "bfloat16" => Some(Self::BF16),
            _ => None,
        }
    }
}

/// The first `count` values of little-endian `bytes` of `dtype`, as f32 (`None` for a dtype
/// that is not a float).
pub(crate) fn to_f32(dtype: Dtype, bytes: &[u8], count: usize) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .take(count)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .take(count)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .take(count)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .take(count)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => return None,
    })
}

/// A safetensors file (metadata `format: pt`, as `save_pretrained` writes) of named f32
/// tensors, stored as f32.
pub(crate) fn serialize(
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    path: &Path,
) -> Result<Vec<u8>, HfError> {
    let bytes: BTreeMap<&String, Vec<u8>> = tensors
        .iter()
        .map(|(name, (_, values))| (name, values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = tensors.iter().map(|(name, (shape, _))| {
        let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), &bytes[name])
            .expect("shape and byte count agree");
        (name.clone(), view)
    });
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| HfError::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `[rows, cols]` row-major -> `[cols, rows]` row-major.
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    transpose_into(values, [rows, cols], &mut out, rows, 0);
    out
}

/// `values`, a row-major `[rows, cols]` matrix (an `nn.Linear` weight), written transposed into
/// columns `first_column..first_column + rows` of `out`, a row-major `[cols, out_width]` one
/// (Burn's Linear layout; several weights side by side make a fused one). In tiles that stay in
/// cache.
pub(crate) fn transpose_into(
    values: &[f32],
    [rows, cols]: [usize; 2],
    out: &mut [f32],
    out_width: usize,
    first_column: usize,
) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * out_width + first_column + r] = values[r * cols + c];
                }
            }
        }
    }
}

/// A tensor's values as f32, in row-major order.
pub(crate) fn f32_values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 values")
}

/// Atomic file replacement: readers see the old file or the new one, never a partial write.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Persist the rename itself.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_rows_and_columns() {
        let rows = 37;
        let cols = 70;
        let values: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let t = transpose(&values, rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(t[c * rows + r], values[r * cols + c]);
            }
        }
        assert_eq!(transpose(&t, cols, rows), values);
    }

    fn write(dir: &Path, name: &str, tensors: &[(&str, Vec<usize>)]) {
        let map: BTreeMap<String, (Vec<usize>, Vec<f32>)> = tensors
            .iter()
            .map(|(n, shape)| {
                let count = shape.iter().product();
                (n.to_string(), (shape.clone(), vec![1.5; count]))
            })
            .collect();
        std::fs::write(dir.join(name), serialize(&map, Path::new(name)).unwrap()).unwrap();
    }

    #[test]
    fn shards_are_read_through_the_index_and_a_missing_shard_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.safetensors", &[("x", vec![2, 3])]);
        write(dir.path(), "b.safetensors", &[("y", vec![4])]);
        let index =
            r#"{"metadata": {}, "weight_map": {"x": "a.safetensors", "y": "b.safetensors"}}"#;
        std::fs::write(dir.path().join(INDEX_FILE), index).unwrap();
        let files = WeightFiles::open(dir.path()).unwrap();
        let mut tensors = files.tensors().unwrap();
        assert_eq!(tensors.take("x", &[2, 3], false).unwrap(), vec![1.5; 6]);
        assert_eq!(tensors.leftovers(|_| false), vec!["y".to_string()]);
        assert!(matches!(
            tensors.take("y", &[5], false),
            Err(HfError::Shape { .. })
        ));

        std::fs::remove_file(dir.path().join("b.safetensors")).unwrap();
        let message = WeightFiles::open(dir.path()).err().unwrap().to_string();
        assert!(message.contains("b.safetensors"), "{message}");

        let index = r#"{"weight_map": {"x": "a.safetensors", "z": "a.safetensors"}}"#;
        std::fs::write(dir.path().join(INDEX_FILE), index).unwrap();
        let files = WeightFiles::open(dir.path()).unwrap();
        let message = files.tensors().err().unwrap().to_string();
        assert!(message.contains("\"z\""), "{message}");

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            WeightFiles::open(empty.path()),
            Err(HfError::NoWeights { .. })
        ));
    }
}
