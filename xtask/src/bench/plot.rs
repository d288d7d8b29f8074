//! The plot in docs/benchmarks.svg: cost per connection against the number of rules, one line
//! per mechanism, log x axis (plotters, SVG).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use super::datapath::{DatapathResult, Mechanism, SCALES};

/// Draws the plot from this run.
#[expect(clippy::cast_precision_loss, reason = "rule counts plot as floats")]
pub(crate) fn draw(result: &DatapathResult, path: &Path) -> anyhow::Result<()> {
    let series: Vec<(Mechanism, Vec<(f64, f64)>)> = [
        Mechanism::Direct,
        Mechanism::HookRedirect,
        Mechanism::NftMap,
        Mechanism::IptablesNft,
        Mechanism::IptablesLegacy,
        Mechanism::Sidecar,
    ]
    .into_iter()
    .map(|mechanism| {
        let flat = matches!(mechanism, Mechanism::Direct | Mechanism::Sidecar);
        let points = SCALES
            .iter()
            .filter_map(|scale| {
                let measured = if flat { 1 } else { *scale };
                result
                    .micros(mechanism, measured)
                    .map(|us| (*scale as f64, us))
            })
            .collect();
        (mechanism, points)
    })
    .collect();
    let max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, us)| *us))
        .fold(1.0_f64, f64::max);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Cost per connection against the number of rules",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (0.8_f64..2_000_000.0_f64).log_scale(),
            (1.0_f64..max * 1.5).log_scale(),
        )
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("routes, rules or elements")
        .y_desc("µs per connection (log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (index, (mechanism, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(mechanism.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
