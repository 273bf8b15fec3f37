//! Plots of stored results, as PNG or SVG (by the output's extension): learning curves (loss and accuracy
//! per epoch: train, validation when held out, test) and, for a learning-rate sweep, final test accuracy against learning rate.
//!
//! Text is drawn with the DejaVu Sans font shipped in `src/fonts/` (its licence beside it), so plots look
//! the same on every machine, fonts installed or not.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::core::train::EpochMetrics;
use crate::error::{Error, Result};

const FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (1200, 500);

/// Matplotlib's "tab10": distinct on white, in print and for most colour-blind readers.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn color(i: usize) -> RGBAColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b).to_rgba()
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is ours and valid; if registration failed, text would be missing, not wrong.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One run's learning curve.
pub struct Curve {
    pub label: String,
    pub epochs: Vec<EpochMetrics>,
}

/// One run's final test accuracy at its learning rate.
pub struct LrPoint {
    pub learning_rate: f64,
    pub test_acc: f64,
    pub seed: i64,
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Usage(format!("cannot draw the plot: {e}"))
}

/// Draw with `draw` on a PNG or SVG file, chosen by `out`'s extension.
/// (The two closures are the same drawing code instantiated for each backend.)
fn render(
    out: &Path,
    draw: impl Fn(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
    draw_svg: impl Fn(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_lowercase);
    match ext.as_deref() {
        Some("png") => {
            let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
            {
                let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
                root.fill(&WHITE).map_err(plot_err)?;
                draw(&root)?;
                root.present().map_err(plot_err)?;
            }
            image::save_buffer(out, &buf, SIZE.0, SIZE.1, image::ExtendedColorType::Rgb8)
                .map_err(|e| Error::Usage(format!("cannot write {}: {e}", out.display())))
        }
        Some("svg") => {
            let root = SVGBackend::new(out, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            draw_svg(&root)?;
            root.present().map_err(plot_err)
        }
        _ => Err(Error::Usage(format!(
            "{}: the plot file must end in .png or .svg",
            out.display()
        ))),
    }
}

/// Loss (left) and accuracy (right) per epoch; test solid, train thin, one colour per run.
pub fn learning_curves(curves: &[Curve], title: &str, out: &Path) -> Result<()> {
    render(
        out,
        |root| draw_curves(root, curves, title),
        |root| draw_curves(root, curves, title),
    )
}

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    curves: &[Curve],
    title: &str,
) -> Result<()> {
    let root = root.titled(title, ("sans-serif", 22)).map_err(plot_err)?;
    // The legend has a column of its own, right of the two panels: it never covers a curve.
    let (plots, legend) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    draw_legend(&legend, curves)?;
    let panels = plots.split_evenly((1, 2));
    let max_epoch = curves
        .iter()
        .flat_map(|c| c.epochs.iter().map(|e| e.epoch))
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let finite = |v: f64| v.is_finite().then_some(v);
    let max_loss = curves
        .iter()
        .flat_map(|c| {
            c.epochs.iter().flat_map(|e| {
                [
                    finite(e.train_loss),
                    finite(e.test_loss),
                    e.val_loss.and_then(finite),
                ]
            })
        })
        .flatten()
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let min_acc = curves
        .iter()
        .flat_map(|c| {
            c.epochs
                .iter()
                .flat_map(|e| [Some(e.train_acc), Some(e.test_acc), e.val_acc])
        })
        .flatten()
        .fold(1.0f64, f64::min);
    let acc_lo = (min_acc - 0.02).clamp(0.0, 0.98);
    for (panel, (name, lo, hi)) in panels.iter().zip([
        ("loss (cross-entropy)", 0.0, max_loss),
        ("accuracy", acc_lo, 1.0),
    ]) {
        let mut chart = ChartBuilder::on(panel)
            .margin(15)
            .caption(name, ("sans-serif", 18))
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(1.0..max_epoch, lo..hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(name)
            .x_labels(max_epoch as usize)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        for (i, c) in curves.iter().enumerate() {
            let color = color(i);
            let loss = name.starts_with("loss");
            let pick = |e: &EpochMetrics, split: Split| match (loss, split) {
                (true, Split::Test) => Some(e.test_loss),
                (true, Split::Train) => Some(e.train_loss),
                (true, Split::Validation) => e.val_loss,
                (false, Split::Test) => Some(e.test_acc),
                (false, Split::Train) => Some(e.train_acc),
                (false, Split::Validation) => e.val_acc,
            };
            let series = |split: Split| {
                c.epochs.iter().filter_map(move |e| {
                    pick(e, split).and_then(finite).map(|v| (e.epoch as f64, v))
                })
            };
            chart
                .draw_series(LineSeries::new(series(Split::Test), color.stroke_width(3)))
                .map_err(plot_err)?;
            chart
                .draw_series(LineSeries::new(
                    series(Split::Train),
                    color.mix(0.6).stroke_width(1),
                ))
                .map_err(plot_err)?;
            if series(Split::Validation).next().is_some() {
                chart
                    .draw_series(DashedLineSeries::new(
                        series(Split::Validation),
                        6,
                        4,
                        color.stroke_width(2),
                    ))
                    .map_err(plot_err)?;
            }
            let series = |test: bool| series(if test { Split::Test } else { Split::Train });
            chart
                .draw_series(series(true).map(|p| Circle::new(p, 3, color.filled())))
                .map_err(plot_err)?;
        }
    }
    Ok(())
}

/// Which samples a curve is measured on.
#[derive(Debug, Clone, Copy)]
enum Split {
    Train,
    Validation,
    Test,
}

/// Width of the legend column of the learning-curve plot, in pixels.
const LEGEND_WIDTH: u32 = 260;
/// Legend lines that fit beside the panels; more runs are summed up in one line.
const LEGEND_LINES: usize = 22;

/// One line per run (its colour and label), then what thick and thin lines mean.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, curves: &[Curve]) -> Result<()> {
    let font = ("sans-serif", 13).into_font();
    let (x, mut y) = (8, 48);
    let shown = if curves.len() > LEGEND_LINES {
        LEGEND_LINES - 1
    } else {
        curves.len()
    };
    for (i, c) in curves.iter().take(shown).enumerate() {
        let color = color(i);
        area.draw(&PathElement::new(
            vec![(x, y), (x + 22, y)],
            color.stroke_width(3),
        ))
        .map_err(plot_err)?;
        let label: String = if c.label.chars().count() > 32 {
            format!("{}...", c.label.chars().take(30).collect::<String>())
        } else {
            c.label.clone()
        };
        area.draw(&Text::new(label, (x + 30, y - 7), font.clone()))
            .map_err(plot_err)?;
        y += 18;
    }
    if shown < curves.len() {
        area.draw(&Text::new(
            format!("... and {} more runs", curves.len() - shown),
            (x + 30, y - 7),
            font.clone(),
        ))
        .map_err(plot_err)?;
        y += 18;
    }
    let validation = curves
        .iter()
        .any(|c| c.epochs.iter().any(|e| e.val_acc.is_some()));
    let key: &[&str] = if validation {
        &["thick: test", "dashed: validation", "thin: train"]
    } else {
        &["thick: test", "thin: train"]
    };
    for (i, line) in key.iter().enumerate() {
        area.draw(&Text::new(
            *line,
            (x, y + 4 + 16 * i as i32),
            font.color(&BLACK.mix(0.7)),
        ))
        .map_err(plot_err)?;
    }
    Ok(())
}

/// A tick value in at most three significant digits, without float noise: 0.3, not
/// 0.30000000000000004; 1e-5 as 1e-5.
pub fn tick(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    if !(1e-4..1e5).contains(&x.abs()) {
        let s = format!("{x:.2e}");
        // 1.00e-5 -> 1e-5, 2.50e-5 -> 2.5e-5
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = m.trim_end_matches('0').trim_end_matches('.');
        return format!("{m}e{e}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Final test accuracy against learning rate (log axis): one point per run, the mean over seeds joined.
pub fn lr_sweep(points: &[LrPoint], title: &str, out: &Path) -> Result<()> {
    if points.is_empty() {
        return Err(Error::Usage("no completed runs to plot".into()));
    }
    let first = points[0].learning_rate;
    if points.iter().all(|p| p.learning_rate == first) {
        return Err(Error::Usage(format!(
            "the learning rate does not vary: all {} runs have {}; plot their learning curves instead \
             (runner plot without --lr)",
            points.len(),
            tick(first)
        )));
    }
    render(
        out,
        |root| draw_lr(root, points, title),
        |root| draw_lr(root, points, title),
    )
}

fn draw_lr<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[LrPoint],
    title: &str,
) -> Result<()> {
    let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(p.learning_rate), b.max(p.learning_rate))
    });
    let min_acc = points.iter().map(|p| p.test_acc).fold(1.0f64, f64::min);
    let mut chart = ChartBuilder::on(root)
        .margin(20)
        .caption(title, ("sans-serif", 22))
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(
            (lo / 1.5..hi * 1.5).log_scale(),
            (min_acc - 0.02).max(0.0)..1.0,
        )
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("learning rate (log scale)")
        .y_desc("final test accuracy")
        .x_label_formatter(&|x| tick(*x))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(plot_err)?;
    let mut seeds: Vec<i64> = points.iter().map(|p| p.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    for (i, seed) in seeds.iter().enumerate() {
        let color = color(i);
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| p.seed == *seed)
                    .map(|p| Circle::new((p.learning_rate, p.test_acc), 5, color.filled())),
            )
            .map_err(plot_err)?
            .label(format!("seed {seed}"))
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
    }
    let mut lrs: Vec<f64> = points.iter().map(|p| p.learning_rate).collect();
    lrs.sort_by(f64::total_cmp);
    lrs.dedup();
    let means: Vec<(f64, f64)> = lrs
        .iter()
        .map(|&lr| {
            let accs: Vec<f64> = points
                .iter()
                .filter(|p| p.learning_rate == lr)
                .map(|p| p.test_acc)
                .collect();
            (lr, accs.iter().sum::<f64>() / accs.len() as f64)
        })
        .collect();
    chart
        .draw_series(LineSeries::new(means, BLACK.stroke_width(2)))
        .map_err(plot_err)?
        .label("mean over seeds")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tick;

    #[test]
    fn ticks_have_no_float_noise() {
        assert_eq!(tick(0.30000000000000004), "0.3");
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(tick(0.01), "0.01");
        assert_eq!(tick(0.0123456), "0.0123");
        assert_eq!(tick(1.0), "1");
        assert_eq!(tick(2.5e-5), "2.5e-5");
        assert_eq!(tick(1e-5), "1e-5");
        assert_eq!(tick(300.0), "300");
    }
}
