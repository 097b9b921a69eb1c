//! `--plot`: an SVG of open database connections, leased and idle pool connections and
//! waiters over virtual time, with fault windows shaded (plotters, SVG backend).

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;
use crate::world::{RunResult, TIMELINE_BUCKETS};

/// Series names, in `Timeline` bucket order.
const SERIES: [(&str, RGBColor); 5] = [
    ("open at the database", RGBColor(31, 119, 180)),
    ("leased", RGBColor(44, 160, 44)),
    ("idle", RGBColor(255, 127, 14)),
    ("waiters", RGBColor(214, 39, 40)),
    ("opening", RGBColor(148, 103, 189)),
];

/// One panel per run of the report.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), String> {
    let panels = report.runs.len().max(1);
    let height = 320 * panels as u32;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((panels, 1));
    for (area, run) in areas.iter().zip(&report.runs) {
        draw_run(area, report, run).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

fn draw_run<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
    run: &RunResult,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let Some(tl) = &run.timeline else {
        return Ok(());
    };
    let end_s = tl.end as f64 / 1e9;
    let data = tl.filled();
    let ymax = data
        .iter()
        .flat_map(|v| v.iter().copied())
        .max()
        .unwrap_or(1)
        .max(run.max_connections.min(10))
        .max(1) as f64
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} (seed {}): {}", report.scenario, report.seed, run.label),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0f64..end_s, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("virtual time (s)")
        .y_desc("count")
        .draw()?;
    for f in &run.faults {
        let (a, b) = (
            f.start.as_secs_f64(),
            f.end
                .as_secs_f64()
                .max(f.start.as_secs_f64() + end_s / 200.0),
        );
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(a, 0.0), (b, ymax)],
                RGBColor(200, 200, 200).mix(0.4).filled(),
            )))?
            .label(format!("fault: {}", f.kind.name()))
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 15, y + 5)],
                    RGBColor(200, 200, 200).filled(),
                )
            });
    }
    let step = end_s / TIMELINE_BUCKETS as f64;
    for (i, (name, color)) in SERIES.iter().enumerate() {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                data.iter()
                    .enumerate()
                    .map(|(k, v)| (k as f64 * step, v[i] as f64)),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 15, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}
