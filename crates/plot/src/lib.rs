//! Pictures of runs: every run's own loss chart (`loss.png` and `loss.svg`: train and val loss
//! against steps and against seconds, the learning rate underneath) and charts comparing runs
//! by step, seconds or tokens seen, on any metric of their `metrics.csv`.
//!
//! Drawn with plotters; text uses DejaVu Sans compiled into the binary, so a chart renders the
//! same on a machine without system fonts.

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

    fn label(&self) -> String {
        match self.parameters {
            Some(p) => format!("{} ({} params)", self.name, group_digits(p)),
            None => self.name.clone(),
        }
    }
}

/// `1234567` -> `1,234,567`.
fn group_digits(n: u64) -> String {
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

/// What a comparison puts on the x axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    Step,
    Seconds,
    Tokens,
}

impl std::str::FromStr for XAxis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "step" | "steps" => Ok(XAxis::Step),
            "seconds" | "time" => Ok(XAxis::Seconds),
            "tokens" => Ok(XAxis::Tokens),
            other => Err(format!("{other:?}: the x axis is step, seconds or tokens")),
        }
    }
}

impl XAxis {
    fn label(self) -> &'static str {
        match self {
            XAxis::Step => "step",
            XAxis::Seconds => "seconds since the run started",
            XAxis::Tokens => "tokens seen",
        }
    }
}

/// How to draw a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Compare {
    pub x: XAxis,
    pub metric: String,
    pub log_y: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Self {
            x: XAxis::Step,
            metric: "val_loss".into(),
            log_y: false,
        }
    }
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

/// The range of `values` with a margin, never empty.
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    // A constant series (a fixed learning rate) gets room around it, not a range of zero width.
    let margin = if hi - lo <= hi.abs() * 1e-6 {
        hi.abs().max(1e-9) * 0.5
    } else {
        (hi - lo) * 0.05
    };
    (lo - margin, hi + margin)
}

/// A named, coloured curve of (x, y) points.
type Series = (String, RGBColor, Vec<(f64, f64)>);

/// One panel: named series of (x, y) points, with axis labels.
struct Panel<'a> {
    title: String,
    x_label: &'a str,
    y_label: &'a str,
    series: Vec<Series>,
    /// Single points drawn as crosses (the final whole-split loss).
    marks: Vec<(String, RGBColor, (f64, f64))>,
    log_y: bool,
    x_format: fn(&f64) -> String,
    y_format: fn(&f64) -> String,
}

/// Tick labels: whole numbers for steps, seconds and tokens; losses to two decimals; a
/// learning rate in scientific notation.
fn whole(v: &f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else {
        format!("{v:.0}")
    }
}

fn decimal(v: &f64) -> String {
    if v.abs() >= 100.0 || (*v != 0.0 && v.abs() < 0.01) {
        format!("{v:.1e}")
    } else {
        format!("{v:.2}")
    }
}

fn scientific(v: &f64) -> String {
    format!("{v:.1e}")
}

impl Panel<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        if self.log_y {
            // Drawn as log10 on a linear axis, ticks labelled with the values: plotters' log
            // axis labels only powers of ten, and a loss curve rarely spans one.
            let log = |(x, y): (f64, f64)| (x, y.log10());
            let panel = Panel {
                title: format!("{} (log scale)", self.title),
                x_label: self.x_label,
                y_label: self.y_label,
                series: self
                    .series
                    .iter()
                    .map(|(n, c, p)| {
                        let kept = p.iter().filter(|p| p.1 > 0.0).map(|&p| log(p)).collect();
                        (n.clone(), *c, kept)
                    })
                    .collect(),
                marks: self
                    .marks
                    .iter()
                    .filter(|m| m.2 .1 > 0.0)
                    .map(|(n, c, p)| (n.clone(), *c, log(*p)))
                    .collect(),
                log_y: false,
                x_format: self.x_format,
                y_format: |v| decimal(&10f64.powf(*v)),
            };
            return panel.draw(area);
        }
        let xs = self
            .series
            .iter()
            .flat_map(|(_, _, points)| points.iter().map(|p| p.0))
            .chain(self.marks.iter().map(|m| m.2 .0));
        let ys = self
            .series
            .iter()
            .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
            .chain(self.marks.iter().map(|m| m.2 .1));
        let (x0, x1) = padded(xs);
        let (y0, y1) = padded(ys);
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64);
        macro_rules! finish {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(self.x_label)
                    .y_desc(self.y_label)
                    .x_label_formatter(&self.x_format)
                    .y_label_formatter(&self.y_format)
                    .label_style(("sans-serif", 14))
                    .axis_desc_style(("sans-serif", 15))
                    .draw()
                    .map_err(|e| e.to_string())?;
                for (name, color, points) in &self.series {
                    chart
                        .draw_series(LineSeries::new(
                            points.iter().copied(),
                            color.stroke_width(2),
                        ))
                        .map_err(|e| e.to_string())?
                        .label(name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                        });
                    chart
                        .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(|e| e.to_string())?;
                }
                for (name, color, point) in &self.marks {
                    chart
                        .draw_series(std::iter::once(Cross::new(
                            *point,
                            7,
                            color.stroke_width(3),
                        )))
                        .map_err(|e| e.to_string())?
                        .label(name.as_str())
                        .legend(move |(x, y)| Cross::new((x + 9, y), 5, color.stroke_width(2)));
                }
                if self.series.len() + self.marks.len() > 1 {
                    chart
                        .configure_series_labels()
                        .background_style(WHITE.mix(0.85))
                        .border_style(BLACK.mix(0.3))
                        .label_font(("sans-serif", 14))
                        .position(SeriesLabelPosition::UpperRight)
                        .draw()
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }};
        }
        finish!(builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?)
    }
}

fn points(xs: &[f64], ys: &[f64]) -> Vec<(f64, f64)> {
    xs.iter()
        .zip(ys)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(&x, &y)| (x, y))
        .collect()
}

/// A run's own chart: train and val loss against steps (with the final whole-split val loss)
/// and against seconds, the learning rate underneath.
fn run_panels(run: &Run) -> Result<[Panel<'static>; 3], PlotError> {
    let missing = |metric: &str| PlotError::NoMetric {
        run: run.name.clone(),
        metric: metric.into(),
        available: run.metrics().join(", "),
    };
    let steps = run.column("step").ok_or_else(|| missing("step"))?;
    let seconds = run
        .column("elapsed_s")
        .ok_or_else(|| missing("elapsed_s"))?;
    let train = run
        .column("train_loss")
        .ok_or_else(|| missing("train_loss"))?;
    let val = run.column("val_loss").ok_or_else(|| missing("val_loss"))?;
    let lr = run.column("lr").ok_or_else(|| missing("lr"))?;
    let last_step = steps.last().copied().unwrap_or(0.0);
    let last_second = seconds.last().copied().unwrap_or(0.0);
    let title = match run.parameters {
        Some(p) => format!("{}: {} parameters", run.name, group_digits(p)),
        None => run.name.clone(),
    };
    let losses = |x: &[f64]| {
        vec![
            ("train loss".to_string(), COLORS[0], points(x, &train)),
            (
                "val loss (estimate)".to_string(),
                COLORS[1],
                points(x, &val),
            ),
        ]
    };
    let full = |x: f64| {
        run.val_loss_full
            .map(|v| ("val loss (whole split)".to_string(), COLORS[3], (x, v)))
            .into_iter()
            .collect::<Vec<_>>()
    };
    Ok([
        Panel {
            title: format!("{title}: loss by step"),
            x_label: "step",
            y_label: "cross-entropy loss (nats)",
            series: losses(&steps),
            marks: full(last_step),
            log_y: false,
            x_format: whole,
            y_format: decimal,
        },
        Panel {
            title: "loss by time".into(),
            x_label: "seconds since the run started",
            y_label: "cross-entropy loss (nats)",
            series: losses(&seconds),
            marks: full(last_second),
            log_y: false,
            x_format: decimal,
            y_format: decimal,
        },
        Panel {
            title: "learning rate".into(),
            x_label: "step",
            y_label: "learning rate",
            series: vec![("lr".into(), COLORS[2], points(&steps, &lr))],
            marks: Vec::new(),
            log_y: false,
            x_format: whole,
            y_format: scientific,
        },
    ])
}

fn layout_run<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[Panel; 3],
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(SIZE.1 * 64 / 100);
    let (left, right) = top.split_horizontally(SIZE.0 * 58 / 100);
    panels[0].draw(&left)?;
    panels[1].draw(&right)?;
    panels[2].draw(&bottom)
}

/// Writes `loss.png` and `loss.svg` into the run directory.
pub fn write_run_charts(run_dir: &Path) -> Result<(), PlotError> {
    let run = Run::read(run_dir)?;
    let panels = run_panels(&run)?;
    for name in [LOSS_PNG, LOSS_SVG] {
        draw_to(
            &run_dir.join(name),
            |root| layout_run(root, &panels),
            |root| layout_run(root, &panels),
        )?;
    }
    Ok(())
}

/// Draws `runs` side by side into `out` (`.png` or `.svg`).
pub fn compare(runs: &[Run], options: &Compare, out: &Path) -> Result<(), PlotError> {
    let mut series = Vec::new();
    let mut marks = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let x = match options.x {
            XAxis::Step => run.column("step"),
            XAxis::Seconds => run.column("elapsed_s"),
            XAxis::Tokens => {
                let per_step = run.tokens_per_step.ok_or_else(|| PlotError::NoTokens {
                    run: run.name.clone(),
                })?;
                run.column("step")
                    .map(|s| s.into_iter().map(|s| s * per_step).collect())
            }
        }
        .ok_or_else(|| PlotError::NoMetric {
            run: run.name.clone(),
            metric: "step".into(),
            available: run.metrics().join(", "),
        })?;
        if options.metric == "val_loss_full" {
            let value = run.val_loss_full.ok_or_else(|| PlotError::NoMetric {
                run: run.name.clone(),
                metric: "val_loss_full (written to summary.json when the run ends)".into(),
                available: run.metrics()[..run.metrics().len() - 1].join(", "),
            })?;
            marks.push((
                run.label(),
                color,
                (x.last().copied().unwrap_or(0.0), value),
            ));
            continue;
        }
        let y = run
            .column(&options.metric)
            .filter(|_| options.metric != "step")
            .ok_or_else(|| PlotError::NoMetric {
                run: run.name.clone(),
                metric: options.metric.clone(),
                available: run.metrics().join(", "),
            })?;
        series.push((run.label(), color, points(&x, &y)));
    }
    let panel = Panel {
        title: format!("{} by {}", options.metric, options.x.label()),
        x_label: options.x.label(),
        y_label: &options.metric,
        series,
        marks,
        log_y: options.log_y,
        x_format: match options.x {
            XAxis::Seconds => decimal,
            XAxis::Step | XAxis::Tokens => whole,
        },
        y_format: if options.metric == "lr" {
            scientific
        } else {
            decimal
        },
    };
    draw_to(
        out,
        |root| layout_single(root, &panel),
        |root| layout_single(root, &panel),
    )
}

fn layout_single<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    panel.draw(root)
}

/// A run's train and val loss by step as text, `width` × `height` characters of plot (train
/// `.`, val `o`, both `*`) with its scale, for a terminal: what `tinygpt train --live` and
/// `tinygpt watch` redraw as the run goes.
pub fn text_chart(run: &Run, width: usize, height: usize) -> String {
    let (width, height) = (width.max(10), height.max(4));
    let steps = run.column("step").unwrap_or_default();
    let train = run.column("train_loss").unwrap_or_default();
    let val = run.column("val_loss").unwrap_or_default();
    let (x0, x1) = (
        steps.first().copied().unwrap_or(0.0),
        steps.last().copied().unwrap_or(1.0).max(1.0),
    );
    let (lo, hi) = padded(train.iter().chain(&val).copied());
    let mut grid = vec![vec![' '; width]; height];
    let mut put = |step: f64, loss: f64, mark: char| {
        if !loss.is_finite() {
            return;
        }
        let x = if x1 > x0 {
            ((step - x0) / (x1 - x0) * (width - 1) as f64).round() as usize
        } else {
            0
        };
        let y = ((hi - loss) / (hi - lo) * (height - 1) as f64).round() as usize;
        let cell = &mut grid[y.min(height - 1)][x.min(width - 1)];
        *cell = match (*cell, mark) {
            (' ', m) => m,
            (c, m) if c == m => m,
            _ => '*',
        };
    };
    for (i, &step) in steps.iter().enumerate() {
        put(step, train[i], '.');
        put(step, val[i], 'o');
    }
    let last = steps.len().saturating_sub(1);
    let mut out = format!(
        "{}: step {} | train {:.4} | val {:.4}{}\n",
        run.name,
        steps.get(last).copied().unwrap_or(0.0),
        train.get(last).copied().unwrap_or(f64::NAN),
        val.get(last).copied().unwrap_or(f64::NAN),
        run.val_loss_full
            .map_or(String::new(), |v| format!(" | whole val split {v:.4}"))
    );
    for (row, cells) in grid.iter().enumerate() {
        let label = match row {
            0 => format!("{hi:>7.3}"),
            r if r == height - 1 => format!("{lo:>7.3}"),
            _ => " ".repeat(7),
        };
        out.push_str(&format!("{label} |{}\n", cells.iter().collect::<String>()));
    }
    out.push_str(&format!("{} +{}\n", " ".repeat(7), "-".repeat(width)));
    let right = format!("{x1:.0}");
    out.push_str(&format!(
        "{}  {x0:<w$}{right}   step (. train, o val)\n",
        " ".repeat(7),
        w = width.saturating_sub(right.len())
    ));
    out
}

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

    fn write_run(dir: &Path, rows: &[(usize, f64, f64)], summary: bool) {
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

    fn curve(n: usize, offset: f64) -> Vec<(usize, f64, f64)> {
        (0..n)
            .map(|i| {
                let loss = offset + 4.0 / (1.0 + i as f64);
                (i * 100, loss, loss + 0.1)
            })
            .collect()
    }

    /// Pixels that are not white.
    fn inked(path: &Path) -> (u32, u32, usize) {
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
    fn png_decoder(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let image = image::load_from_memory(bytes).unwrap().to_rgb8();
        (image.width(), image.height(), image.into_raw())
    }

    #[test]
    fn a_run_chart_is_written_as_png_and_svg_with_its_curves() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("transformer");
        write_run(&run, &curve(11, 2.0), true);
        write_run_charts(&run).unwrap();
        let (w, h, inked) = inked(&run.join(LOSS_PNG));
        assert_eq!((w, h), SIZE);
        assert!(inked > 10_000, "{inked} inked pixels");
        let svg = std::fs::read_to_string(run.join(LOSS_SVG)).unwrap();
        for text in [
            "transformer: 42,369 parameters",
            "val loss (whole split)",
            "learning rate",
        ] {
            assert!(svg.contains(text), "{text} not in the SVG");
        }
        // The train curve's colour is drawn where the curve must be: its first point is the
        // highest loss, at the top left of the step panel.
        let image = image::open(run.join(LOSS_PNG)).unwrap().to_rgb8();
        let blue = image
            .enumerate_pixels()
            .filter(|(x, y, p)| *x < SIZE.0 / 4 && *y < SIZE.1 / 3 && p.0 == [31, 119, 180])
            .count();
        assert!(blue > 20, "{blue} pixels of the train curve near its start");
    }

    #[test]
    fn runs_compare_by_step_seconds_and_tokens_on_any_metric() {
        let dir = tempfile::tempdir().unwrap();
        write_run(&dir.path().join("a"), &curve(11, 2.0), true);
        write_run(&dir.path().join("b"), &curve(6, 1.5), false);
        let mut runs: Vec<Run> = ["a", "b"]
            .iter()
            .map(|n| Run::read(&dir.path().join(n)).unwrap())
            .collect();
        let out = dir.path().join("compare.png");
        for (x, metric, log_y) in [
            (XAxis::Step, "val_loss", false),
            (XAxis::Seconds, "train_loss", true),
            (XAxis::Step, "tokens_per_sec", false),
        ] {
            let options = Compare {
                x,
                metric: metric.into(),
                log_y,
            };
            compare(&runs, &options, &out).unwrap();
            assert!(inked(&out).2 > 5_000);
        }
        let svg = dir.path().join("compare.svg");
        compare(&runs, &Compare::default(), &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        // Each label is a <text> element of its own line.
        assert!(
            text.contains("\na (42,369 params)\n") && text.contains("\nb\n"),
            "the legend names both runs"
        );

        // Tokens need the runs' tokens per step.
        let tokens = Compare {
            x: XAxis::Tokens,
            ..Compare::default()
        };
        assert!(matches!(
            compare(&runs, &tokens, &out),
            Err(PlotError::NoTokens { .. })
        ));
        for run in &mut runs {
            run.tokens_per_step = Some(128.0);
        }
        compare(&runs, &tokens, &out).unwrap();

        // Errors name what is missing.
        let unknown = Compare {
            metric: "perplexity".into(),
            ..Compare::default()
        };
        let message = compare(&runs, &unknown, &out).unwrap_err().to_string();
        assert!(
            message.contains("perplexity") && message.contains("val_loss"),
            "{message}"
        );
        let full = Compare {
            metric: "val_loss_full".into(),
            ..Compare::default()
        };
        let message = compare(&runs, &full, &out).unwrap_err().to_string();
        assert!(
            message.contains("b") && message.contains("summary.json"),
            "{message}"
        );
        let message = compare(&runs, &Compare::default(), &dir.path().join("c.jpg"))
            .unwrap_err()
            .to_string();
        assert!(message.contains(".png"), "{message}");
    }

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

    #[test]
    fn the_text_chart_puts_each_loss_where_it_belongs() {
        let dir = tempfile::tempdir().unwrap();
        write_run(
            dir.path(),
            &[(0, 4.0, 4.0), (50, 3.0, 3.5), (100, 2.0, 2.5)],
            true,
        );
        let run = Run::read(dir.path()).unwrap();
        let chart = text_chart(&run, 21, 9);
        let lines: Vec<&str> = chart.lines().collect();
        assert!(lines[0].contains("step 100") && lines[0].contains("train 2.0000"));
        assert!(lines[0].contains("whole val split 2.0500"), "{}", lines[0]);
        // Rows 1..=9 are the plot; column 0 of the plot is step 0, the last is step 100.
        let plot: Vec<Vec<char>> = lines[1..10]
            .iter()
            .map(|l| l.split_once('|').unwrap().1.chars().collect())
            .collect();
        assert_eq!(
            plot[0][0], '*',
            "step 0: train and val both at the top\n{chart}"
        );
        let bottom = plot.len() - 1;
        assert_eq!(
            plot[bottom][20], '.',
            "step 100's train loss at the bottom right\n{chart}"
        );
        assert_eq!(plot.iter().filter(|r| r[20] == 'o').count(), 1);
        assert!(lines[11].contains("100"));
    }

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
