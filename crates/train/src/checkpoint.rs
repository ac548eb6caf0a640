//! Checkpoint files: weights, optimizer state, step, config and vocabulary in one self-checking
//! file, written atomically so a crash mid-write never destroys the previous checkpoint.
//!
//! Layout: `MAGIC`, then three length-prefixed sections (JSON metadata, model record, optimizer
//! record; lengths u64 little-endian), then the sha256 of everything before it.

use crate::LossEstimate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use tinygpt_tokenizer::AnyTokenizer;
#[cfg(test)]
use tinygpt_tokenizer::CharTokenizer;

const MAGIC: &[u8; 16] = b"TINYGPT-CKPT-v1\n";
const DIGEST_LEN: usize = 32;
pub const CHECKPOINT_DIR: &str = "checkpoints";
pub const BEST_CHECKPOINT: &str = "best.ckpt";

/// What a checkpoint says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Optimizer steps completed.
    pub step: usize,
    /// The run config, as RON.
    pub config: String,
    pub vocab: AnyTokenizer,
    /// The latest loss estimate at or before `step` (none before the first evaluation).
    pub last_eval: Option<LossEstimate>,
    /// The lowest validation loss so far, the one `best.ckpt` holds.
    pub best_val_loss: Option<f64>,
    /// Backend that wrote it (records are portable across backends).
    pub backend: String,
    /// Training time spent up to `step`, in seconds (what a time budget counts).
    #[serde(default)]
    pub train_time_s: f64,
}

/// A checkpoint read back from disk; the records are decoded by the caller for its backend.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub model: Vec<u8>,
    pub optimizer: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write checkpoint {path}: {source} (the previous checkpoint is untouched)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a tinygpt checkpoint (wrong file header)")]
    Foreign { path: PathBuf },
    #[error("checkpoint {path} is truncated or corrupted ({reason}); use an earlier checkpoint")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{dir} holds no checkpoint ({CHECKPOINT_DIR}/step-*.ckpt): is it a tinygpt run directory \
         whose training reached its first evaluation?"
    )]
    NoCheckpoint { dir: PathBuf },
    #[error("the run directory {dir} does not exist")]
    NoRunDir { dir: PathBuf },
}

impl Checkpoint {
    /// Serialises into the on-disk format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).expect("checkpoint metadata serialises");
        let mut bytes = Vec::with_capacity(
            MAGIC.len() + 24 + meta.len() + self.model.len() + self.optimizer.len() + DIGEST_LEN,
        );
        bytes.extend_from_slice(MAGIC);
        for section in [&meta[..], &self.model, &self.optimizer] {
            bytes.extend_from_slice(&(section.len() as u64).to_le_bytes());
            bytes.extend_from_slice(section);
        }
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        bytes
    }

    /// Parses the on-disk format, checking header, lengths and digest.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        let corrupt = |reason: &str| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(CheckpointError::Foreign {
                path: path.to_path_buf(),
            });
        }
        if bytes.len() < MAGIC.len() + DIGEST_LEN {
            return Err(corrupt("too short"));
        }
        let (body, digest) = bytes.split_at(bytes.len() - DIGEST_LEN);
        if Sha256::digest(body).as_slice() != digest {
            return Err(corrupt("checksum mismatch"));
        }
        let mut rest = &body[MAGIC.len()..];
        let mut sections = Vec::with_capacity(3);
        for _ in 0..3 {
            if rest.len() < 8 {
                return Err(corrupt("section header cut short"));
            }
            let (len, tail) = rest.split_at(8);
            let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
            if tail.len() < len {
                return Err(corrupt("section cut short"));
            }
            let (section, tail) = tail.split_at(len);
            sections.push(section.to_vec());
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        let optimizer = sections.pop().expect("three sections");
        let model = sections.pop().expect("three sections");
        let meta = serde_json::from_slice(&sections[0])
            .map_err(|e| corrupt(&format!("bad metadata: {e}")))?;
        Ok(Self {
            meta,
            model,
            optimizer,
        })
    }

    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = fs::read(path).map_err(|source| CheckpointError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Writes to a temporary file beside `path`, syncs it and renames it into place.
    pub fn write_atomic(&self, path: &Path) -> Result<(), CheckpointError> {
        write_atomic(path, &self.to_bytes()).map_err(|source| CheckpointError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

pub use tinygpt_formats::write_atomic;

/// `checkpoints/step-0000500.ckpt`.
pub fn step_checkpoint_path(run_dir: &Path, step: usize) -> PathBuf {
    run_dir
        .join(CHECKPOINT_DIR)
        .join(format!("step-{step:07}.ckpt"))
}

/// Step checkpoints in a run directory, oldest first.
pub fn list_step_checkpoints(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = fs::read_dir(run_dir.join(CHECKPOINT_DIR)) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".ckpt")?
                .parse()
                .ok()?;
            Some((step, path))
        })
        .collect();
    found.sort();
    found
}

/// The newest step checkpoint of a run directory.
pub fn latest_checkpoint(run_dir: &Path) -> Result<PathBuf, CheckpointError> {
    if !run_dir.is_dir() {
        return Err(CheckpointError::NoRunDir {
            dir: run_dir.to_path_buf(),
        });
    }
    list_step_checkpoints(run_dir)
        .pop()
        .map(|(_, path)| path)
        .ok_or_else(|| CheckpointError::NoCheckpoint {
            dir: run_dir.to_path_buf(),
        })
}

/// Deletes all but the newest `keep` step checkpoints.
pub fn prune_step_checkpoints(run_dir: &Path, keep: usize) {
    let found = list_step_checkpoints(run_dir);
    let excess = found.len().saturating_sub(keep);
    for (_, path) in &found[..excess] {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            meta: CheckpointMeta {
                step: 500,
                config: "(model: ())".into(),
                vocab: CharTokenizer::fit("abc\n").unwrap().into(),
                last_eval: Some(LossEstimate {
                    step: 500,
                    train: 2.0,
                    val: 2.1,
                }),
                best_val_loss: Some(2.1),
                backend: "ndarray".into(),
                train_time_s: 0.0,
            },
            model: vec![1, 2, 3, 4, 5],
            optimizer: vec![9; 100],
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.ckpt");
        let ckpt = sample();
        ckpt.write_atomic(&path).unwrap();
        let back = Checkpoint::read(&path).unwrap();
        assert_eq!(back.meta, ckpt.meta);
        assert_eq!(back.model, ckpt.model);
        assert_eq!(back.optimizer, ckpt.optimizer);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }

    #[test]
    fn truncated_corrupted_and_foreign_files_are_rejected() {
        let path = Path::new("x.ckpt");
        let bytes = sample().to_bytes();
        for cut in [bytes.len() - 1, bytes.len() / 2, MAGIC.len() + 3] {
            let err = Checkpoint::from_bytes(&bytes[..cut], path).unwrap_err();
            assert!(
                matches!(err, CheckpointError::Corrupt { .. }),
                "cut {cut}: {err}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[MAGIC.len() + 20] ^= 0x40;
        assert!(matches!(
            Checkpoint::from_bytes(&flipped, path),
            Err(CheckpointError::Corrupt { .. })
        ));
        assert!(matches!(
            Checkpoint::from_bytes(b"PK\x03\x04 a zip file", path),
            Err(CheckpointError::Foreign { .. })
        ));
    }

    #[test]
    fn latest_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            latest_checkpoint(&dir.path().join("missing")),
            Err(CheckpointError::NoRunDir { .. })
        ));
        assert!(matches!(
            latest_checkpoint(dir.path()),
            Err(CheckpointError::NoCheckpoint { .. })
        ));
        fs::create_dir(dir.path().join(CHECKPOINT_DIR)).unwrap();
        for step in [0, 500, 1000, 1500] {
            sample()
                .write_atomic(&step_checkpoint_path(dir.path(), step))
                .unwrap();
        }
        assert_eq!(
            latest_checkpoint(dir.path()).unwrap(),
            step_checkpoint_path(dir.path(), 1500)
        );
        prune_step_checkpoints(dir.path(), 2);
        let steps: Vec<_> = list_step_checkpoints(dir.path())
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![1000, 1500]);
    }
}
