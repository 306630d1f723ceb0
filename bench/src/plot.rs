//! The plot: small-request latency (p50 and p99) against concurrency, one
//! line per system, as SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::record::{Record, SYSTEMS};

const COLORS: [RGBColor; 8] = [
    RGBColor(0, 0, 0),
    RGBColor(31, 119, 180),
    RGBColor(23, 190, 207),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Writes the plot of the `small` records to `path`.
pub fn write(records: &[Record], path: &Path) -> anyhow::Result<()> {
    let small: Vec<&Record> = records.iter().filter(|r| r.scenario == "small").collect();
    let max_c = small
        .iter()
        .filter_map(|r| r.concurrency)
        .max()
        .unwrap_or(64) as f64;
    let lat = |r: &&Record, p99: bool| if p99 { r.p99_us } else { r.p50_us };
    let (mut lo, mut hi) = (f64::MAX, 0f64);
    for r in &small {
        for v in [r.p50_us, r.p99_us].into_iter().flatten() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if hi <= 0.0 {
        anyhow::bail!("no small-request records to plot");
    }
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    for (panel, p99) in panels.iter().zip([false, true]) {
        let title = if p99 {
            "p99 latency, MCP tools/call (µs, log)"
        } else {
            "p50 latency, MCP tools/call (µs, log)"
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (0.8f64..max_c * 1.25).log_scale(),
                (lo * 0.7..hi * 1.4).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("concurrent connections")
            .x_labels(8)
            .y_labels(10)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (system, color) in SYSTEMS.iter().zip(COLORS) {
            let mut pts: Vec<(f64, f64)> = small
                .iter()
                .filter(|r| r.system == *system)
                .filter_map(|r| Some((r.concurrency? as f64, lat(r, p99)?)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let style = color.stroke_width(2);
            chart
                .draw_series(LineSeries::new(pts.clone(), style))?
                .label(*system)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
