//! Heatmaps: one square of weights each (an attention head's), laid out in a grid.

use crate::{draw_sized, PlotError};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One square heatmap: `values[i * size + j]` in `[0, 1]` (an attention head's weights, query
/// `i` on the rows, key `j` on the columns).
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    pub title: String,
    pub size: usize,
    pub values: Vec<f32>,
}

/// A token as a tick label: whitespace made visible, long pieces cut.
pub fn token_label(text: &str) -> String {
    let shown: String = text
        .chars()
        .map(|c| match c {
            '\n' => '⏎',
            ' ' => '␣',
            '\t' => '⇥',
            c if c.is_control() => '�',
            c => c,
        })
        .collect();
    if shown.chars().count() > 8 {
        shown.chars().take(7).chain(['…']).collect()
    } else {
        shown
    }
}

/// White (0) to dark blue (1).
fn heat(value: f32) -> RGBColor {
    let v = value.clamp(0.0, 1.0) as f64;
    let mix = |from: f64, to: f64| (from + (to - from) * v).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

/// Draws `maps` as a grid of `columns` heatmaps per row into `out` (`.png` or `.svg`), the
/// tokens `labels` on both axes of each (when they fit).
pub fn heatmaps(
    maps: &[Heatmap],
    labels: &[String],
    columns: usize,
    title: &str,
    out: &Path,
) -> Result<(), PlotError> {
    let columns = columns.clamp(1, maps.len().max(1));
    let rows = maps.len().div_ceil(columns).max(1);
    let cell: u32 = if maps.len() == 1 { 820 } else { 300 };
    let size = (cell * columns as u32, cell * rows as u32 + 40);
    draw_sized(
        out,
        size,
        |root| layout_heatmaps(root, maps, labels, columns, title),
        |root| layout_heatmaps(root, maps, labels, columns, title),
    )
}

fn layout_heatmaps<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    maps: &[Heatmap],
    labels: &[String],
    columns: usize,
    title: &str,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let rows = maps.len().div_ceil(columns).max(1);
    let cells = root.split_evenly((rows, columns));
    let single = maps.len() == 1;
    for (map, area) in maps.iter().zip(cells.iter()) {
        let t = map.size as i32;
        // Tick labels only where they can be read.
        let show = map.size <= if single { 64 } else { 24 };
        let font = if single { 14 } else { 10 };
        let label_area = if show { font as u32 * 5 } else { 8 };
        let mut chart = ChartBuilder::on(area)
            .caption(&map.title, ("sans-serif", if single { 18 } else { 14 }))
            .margin(6)
            .x_label_area_size(label_area)
            .y_label_area_size(label_area)
            // A segmented range of 0..n holds n + 1 segments: 0..t - 1 holds the t positions.
            .build_cartesian_2d((0..t - 1).into_segmented(), (0..t - 1).into_segmented())
            .map_err(|e| e.to_string())?;
        let name = |v: &SegmentValue<i32>, flip: bool| -> String {
            match v {
                SegmentValue::CenterOf(i) if show => {
                    let i = if flip { t - 1 - i } else { *i };
                    labels.get(i as usize).cloned().unwrap_or_default()
                }
                _ => String::new(),
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(map.size)
            .y_labels(map.size)
            .x_label_formatter(&|v| name(v, false))
            .y_label_formatter(&|v| name(v, true))
            .x_label_style(if labels.iter().any(|l| l.chars().count() > 2) {
                // Word pieces stand on their side; single characters read upright.
                ("sans-serif", font)
                    .into_font()
                    .transform(FontTransform::Rotate90)
            } else {
                ("sans-serif", font).into_font()
            })
            .y_label_style(("sans-serif", font))
            .x_desc(if show { "key (attended to)" } else { "" })
            .y_desc(if show { "query" } else { "" })
            .axis_desc_style(("sans-serif", font + 2))
            .draw()
            .map_err(|e| e.to_string())?;
        // Query i on row i from the top: drawn at y = t - 1 - i.
        chart
            .draw_series((0..t).flat_map(|i| {
                (0..t).map(move |j| {
                    let value = map.values[(i * t + j) as usize];
                    let y = t - 1 - i;
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(j), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(j + 1), SegmentValue::Exact(y + 1)),
                        ],
                        heat(value).filled(),
                    )
                })
            }))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmaps_draw_each_weight_where_it_belongs() {
        let dir = tempfile::tempdir().unwrap();
        // Attention to the first token only: the left column dark, the rest white.
        let t = 6;
        let values: Vec<f32> = (0..t * t)
            .map(|k| if k % t == 0 { 1.0 } else { 0.0 })
            .collect();
        let labels: Vec<String> = ["R", "O", " ", "\n", "E", "O"]
            .iter()
            .map(|s| token_label(s))
            .collect();
        assert_eq!(labels[2], "␣");
        assert_eq!(labels[3], "⏎");
        let one = Heatmap {
            title: "layer 0, head 0".into(),
            size: t,
            values,
        };
        let out = dir.path().join("head.png");
        heatmaps(std::slice::from_ref(&one), &labels, 1, "attention", &out).unwrap();
        let image = image::open(&out).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (820, 860));
        let RGBColor(r, g, b) = heat(1.0);
        let dark = [r, g, b];
        let columns: Vec<u32> = image
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 == dark)
            .map(|(x, _, _)| x)
            .collect();
        assert!(columns.len() > 1000, "{} dark pixels", columns.len());
        // Every dark pixel lies in the left sixth of the plotting area.
        let (min, max) = (columns.iter().min().unwrap(), columns.iter().max().unwrap());
        assert!(max - min < 820 / 6, "dark from x = {min} to {max}");
        let grid: Vec<Heatmap> = (0..8).map(|_| one.clone()).collect();
        let out = dir.path().join("grid.svg");
        heatmaps(&grid, &labels, 4, "attention", &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.contains("layer 0, head 0") && svg.contains("⏎"));
    }
}
