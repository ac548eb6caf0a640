//! Loss curves: a run's own chart (loss by step and by time, the learning rate underneath) and
//! charts comparing runs.

use crate::{draw_to, group_digits, PlotError, Run, COLORS, LOSS_PNG, LOSS_SVG, SIZE};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

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

/// The range of `values` with a margin, never empty.
pub(crate) fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

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
}
