//! `metrics.csv`: one row per loss estimate, for plotting and comparing runs.

use crate::TrainError;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub const METRICS_HEADER: &str = "step,train_loss,val_loss,lr,tokens_per_sec,elapsed_s";

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    pub step: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub lr: f64,
    /// Training throughput since the previous row (0 for the first).
    pub tokens_per_sec: f64,
    /// Seconds since the run started.
    pub elapsed_s: f64,
}

pub struct MetricsWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsWriter {
    pub fn create(path: &Path) -> Result<Self, TrainError> {
        let err = |source| TrainError::RunDir {
            path: path.to_path_buf(),
            source,
        };
        let mut out = BufWriter::new(File::create(path).map_err(err)?);
        writeln!(out, "{METRICS_HEADER}").map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
        })
    }

    /// Reopens a run's metrics for appending after `step`, dropping rows a crash left past it.
    pub fn resume(path: &Path, step: usize) -> Result<Self, TrainError> {
        let err = |source| TrainError::RunDir {
            path: path.to_path_buf(),
            source,
        };
        let kept = read_metrics(path)
            .map_err(err)?
            .into_iter()
            .filter(|row| row.step <= step);
        let mut writer = Self::create(path)?;
        for row in kept {
            writer.append(&row)?;
        }
        Ok(writer)
    }

    /// Appends and flushes a row, so the file is current while training runs.
    pub fn append(&mut self, row: &MetricsRow) -> Result<(), TrainError> {
        let err = |source| TrainError::RunDir {
            path: self.path.clone(),
            source,
        };
        writeln!(
            self.out,
            "{},{:.6},{:.6},{:e},{:.1},{:.3}",
            row.step, row.train_loss, row.val_loss, row.lr, row.tokens_per_sec, row.elapsed_s
        )
        .map_err(err)?;
        self.out.flush().map_err(err)
    }
}

/// Reads a metrics file back (for reports and tests).
pub fn read_metrics(path: &Path) -> std::io::Result<Vec<MetricsRow>> {
    let text = std::fs::read_to_string(path)?;
    let bad = |line: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad metrics row: {line}"),
        )
    };
    text.lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let f: Vec<f64> = line
                .split(',')
                .map(|v| v.parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad(line))?;
            if f.len() != 6 {
                return Err(bad(line));
            }
            Ok(MetricsRow {
                step: f[0] as usize,
                train_loss: f[1],
                val_loss: f[2],
                lr: f[3],
                tokens_per_sec: f[4],
                elapsed_s: f[5],
            })
        })
        .collect()
}
