//! A run as its files tell it: `metrics.csv`'s columns by name and `summary.json`'s final
//! numbers.

use crate::{group_digits, PlotError, METRICS_FILE, SUMMARY_FILE};
use std::path::{Path, PathBuf};

/// One run's curves: `metrics.csv`'s columns by name, and `summary.json`'s final numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The run directory's name (or the file's, for a bare metrics.csv).
    pub name: String,
    pub dir: PathBuf,
    /// Column names of metrics.csv, `step` first.
    pub columns: Vec<String>,
    /// One row per evaluation, values in `columns`' order.
    pub rows: Vec<Vec<f64>>,
    /// Parameters and the whole-split validation loss, once the run has ended.
    pub parameters: Option<u64>,
    pub val_loss_full: Option<f64>,
    /// Tokens each optimizer step reads (batch × context × accumulation × peers), when known.
    pub tokens_per_step: Option<f64>,
}

impl Run {
    /// Reads a run directory, or a `metrics.csv` given directly.
    pub fn read(path: &Path) -> Result<Self, PlotError> {
        let (dir, metrics) = if path.is_dir() {
            (path.to_path_buf(), path.join(METRICS_FILE))
        } else if path.file_name().is_some_and(|n| n == METRICS_FILE) {
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            (dir, path.to_path_buf())
        } else {
            return Err(PlotError::NotARun(path.to_path_buf()));
        };
        if !metrics.is_file() {
            return Err(PlotError::NotARun(path.to_path_buf()));
        }
        let text = std::fs::read_to_string(&metrics).map_err(|source| PlotError::Read {
            path: metrics.clone(),
            source,
        })?;
        let bad = |message: String| PlotError::Format {
            path: metrics.clone(),
            message,
        };
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let columns: Vec<String> = lines
            .next()
            .ok_or_else(|| bad("the file is empty (no header)".into()))?
            .split(',')
            .map(|c| c.trim().to_string())
            .collect();
        if columns.first().map(String::as_str) != Some("step") {
            return Err(bad(format!(
                "the header starts with {:?}, not \"step\"",
                columns.first().cloned().unwrap_or_default()
            )));
        }
        let mut rows = Vec::new();
        for (i, line) in lines.enumerate() {
            let row: Vec<f64> = line
                .split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("row {}: {e}", i + 1)))?;
            if row.len() != columns.len() {
                return Err(bad(format!(
                    "row {} has {} values for {} columns",
                    i + 1,
                    row.len(),
                    columns.len()
                )));
            }
            rows.push(row);
        }
        if rows.is_empty() {
            return Err(PlotError::Empty { path: metrics });
        }
        let summary = std::fs::read_to_string(dir.join(SUMMARY_FILE))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
        let number = |field: &str| summary.as_ref().and_then(|s| s.get(field)?.as_f64());
        let name = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.clone())
            .file_name()
            .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
        Ok(Self {
            name,
            parameters: number("parameters").map(|p| p as u64),
            val_loss_full: number("val_loss_full"),
            dir,
            columns,
            rows,
            tokens_per_step: None,
        })
    }

    /// A column's values, by name.
    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let at = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(|row| row[at]).collect())
    }

    /// The metrics a comparison can draw: the CSV's columns but `step`, and `val_loss_full`.
    pub fn metrics(&self) -> Vec<String> {
        let mut names: Vec<String> = self.columns[1..].to_vec();
        names.push("val_loss_full".into());
        names
    }

    pub(crate) fn label(&self) -> String {
        match self.parameters {
            Some(p) => format!("{} ({} params)", self.name, group_digits(p)),
            None => self.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    #[test]
    fn what_is_not_a_run_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let message = Run::read(dir.path()).unwrap_err().to_string();
        assert!(message.contains("metrics.csv"), "{message}");
        write_run(&dir.path().join("empty"), &[], false);
        assert!(matches!(
            Run::read(&dir.path().join("empty")),
            Err(PlotError::Empty { .. })
        ));
        std::fs::write(dir.path().join("empty/metrics.csv"), "step,loss\n1,x\n").unwrap();
        let message = Run::read(&dir.path().join("empty"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("row 1"), "{message}");
    }
}
