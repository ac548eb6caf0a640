//! A run's curves as text, for a terminal.

use crate::curves::padded;
use crate::Run;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

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
}
