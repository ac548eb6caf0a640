//! Pictures of runs and models: every run's own loss chart (`loss.png` and `loss.svg`: train and
//! val loss against steps and against seconds, the learning rate underneath; [`curves`]), charts
//! comparing runs by step, seconds or tokens seen on any metric of their `metrics.csv`, the same
//! curves as text for a terminal ([`text`]), and heatmaps of attention weights ([`heatmap`]).
//!
//! Drawn with plotters; text uses DejaVu Sans compiled into the binary, so a chart renders the
//! same on a machine without system fonts.

pub mod curves;
pub mod heatmap;
mod run;
pub mod text;

pub use curves::{compare, write_run_charts, Compare, XAxis};
pub use heatmap::{heatmaps, token_label, Heatmap};
pub use run::Run;
pub use text::text_chart;

use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

pub const METRICS_FILE: &str = "metrics.csv";
pub const SUMMARY_FILE: &str = "summary.json";
pub const LOSS_PNG: &str = "loss.png";
pub const LOSS_SVG: &str = "loss.svg";

/// What goes wrong reading a run or drawing it, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error(
        "{0} is not a run: it has no {METRICS_FILE} (`tinygpt train` writes one into every run \
         directory)"
    )]
    NotARun(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path} has no loss rows yet: the first is written at step 0's evaluation")]
    Empty { path: PathBuf },
    #[error("{run} has no metric {metric:?}; it has: {available}")]
    NoMetric {
        run: String,
        metric: String,
        available: String,
    },
    #[error("{run} has no tokens axis: its tokens per step are not known")]
    NoTokens { run: String },
    #[error("cannot draw {path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("{0}: the chart is written as .png or .svg; give one of those extensions")]
    Extension(PathBuf),
}

/// `1234567` -> `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

static FONT: Once = Once::new();

/// Makes DejaVu Sans plotters' `sans-serif` (once per process): text renders without system
/// fonts.
pub fn register_font() {
    FONT.call_once(|| {
        // DejaVu Sans is a valid TrueType font: registering it cannot fail.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

const SIZE: (u32, u32) = (1100, 720);
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn draw_error(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Draws to `path`, a `.png` or `.svg`.
fn draw_to(
    path: &Path,
    draw: impl Fn(&DrawingArea<BitMapBackend, Shift>) -> Result<(), String>,
    draw_svg: impl Fn(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    draw_sized(path, SIZE, draw, draw_svg)
}

fn draw_sized(
    path: &Path,
    size: (u32, u32),
    draw: impl Fn(&DrawingArea<BitMapBackend, Shift>) -> Result<(), String>,
    draw_svg: impl Fn(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    register_font();
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            draw(&root).map_err(|e| draw_error(path, e))?;
            root.present().map_err(|e| draw_error(path, e))
        }
        Some("svg") => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            draw_svg(&root).map_err(|e| draw_error(path, e))?;
            root.present().map_err(|e| draw_error(path, e))
        }
        _ => Err(PlotError::Extension(path.to_path_buf())),
    }
}

#[cfg(test)]
mod test_util {
    use crate::{METRICS_FILE, SUMMARY_FILE};
    use std::path::Path;

    pub fn write_run(dir: &Path, rows: &[(usize, f64, f64)], summary: bool) {
        std::fs::create_dir_all(dir).unwrap();
        let mut csv = String::from("step,train_loss,val_loss,lr,tokens_per_sec,elapsed_s\n");
        for (i, (step, train, val)) in rows.iter().enumerate() {
            csv.push_str(&format!(
                "{step},{train},{val},1e-3,1000.0,{}\n",
                i as f64 * 0.5
            ));
        }
        std::fs::write(dir.join(METRICS_FILE), csv).unwrap();
        if summary {
            std::fs::write(
                dir.join(SUMMARY_FILE),
                r#"{"parameters": 42369, "val_loss_full": 2.05}"#,
            )
            .unwrap();
        }
    }

    pub fn curve(n: usize, offset: f64) -> Vec<(usize, f64, f64)> {
        (0..n)
            .map(|i| {
                let loss = offset + 4.0 / (1.0 + i as f64);
                (i * 100, loss, loss + 0.1)
            })
            .collect()
    }

    /// Pixels that are not white.
    pub fn inked(path: &Path) -> (u32, u32, usize) {
        let bytes = std::fs::read(path).unwrap();
        let decoder = png_decoder(&bytes);
        let (w, h, pixels) = decoder;
        let inked = pixels
            .chunks(3)
            .filter(|p| p.iter().any(|&c| c < 250))
            .count();
        (w, h, inked)
    }

    /// Decodes an RGB PNG with plotters' own encoder's counterpart (the `image` crate).
    pub fn png_decoder(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let image = image::load_from_memory(bytes).unwrap().to_rgb8();
        (image.width(), image.height(), image.into_raw())
    }
}
