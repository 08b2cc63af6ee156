//! SVG charts: a run's throughput over time and its latency percentile
//! curves, and several runs' curves on one chart (`compare`).
//!
//! Percentiles are drawn on a "nines" axis (x = −log10(1 − q)), so 90 %,
//! 99 %, 99.9 % and 99.99 % are evenly spaced, as in HdrHistogram plots.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use serde_json::Value;

/// Chart size in pixels.
const WIDTH: u32 = 1000;
/// Height of one panel.
const PANEL_HEIGHT: u32 = 420;
/// The largest x on the nines axis (99.999 %).
const NINES_MAX: f64 = 5.0;

/// One curve: a name and its points.
pub struct Curve {
    /// Legend text.
    pub name: String,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

/// A run's chart: publish and consume rate per second above, publish and
/// end-to-end latency percentiles below.
pub fn run_chart(doc: &Value, path: &Path) -> anyhow::Result<()> {
    let title = format!(
        "{} — {}",
        doc["workload"].as_str().unwrap_or("run"),
        doc["driver"].as_str().unwrap_or("")
    );
    let rates = ["publishRate", "consumeRate"]
        .iter()
        .map(|k| Curve {
            name: k.to_string(),
            points: series(&doc[*k]),
        })
        .collect::<Vec<_>>();
    let latencies = [
        ("publish", "aggregatedPublishLatencyQuantiles"),
        ("end-to-end", "aggregatedEndToEndLatencyQuantiles"),
    ]
    .iter()
    .map(|(name, k)| Curve {
        name: name.to_string(),
        points: quantile_curve(&doc[*k]),
    })
    .collect::<Vec<_>>();
    draw(path, &title, &rates, &latencies)
}

/// Several runs' latency curves (publish) and rates on one chart.
pub fn compare_chart(docs: &[(String, Value)], path: &Path) -> anyhow::Result<()> {
    let rates = docs
        .iter()
        .map(|(name, d)| Curve {
            name: format!("{name} publish"),
            points: series(&d["publishRate"]),
        })
        .collect::<Vec<_>>();
    let latencies = docs
        .iter()
        .map(|(name, d)| Curve {
            name: format!("{name} publish"),
            points: quantile_curve(&d["aggregatedPublishLatencyQuantiles"]),
        })
        .collect::<Vec<_>>();
    draw(path, "comparison", &rates, &latencies)
}

/// (second, value) points of a per-second series.
fn series(v: &Value) -> Vec<(f64, f64)> {
    v.as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, y)| ((i + 1) as f64, y.as_f64().unwrap_or(0.0)))
        .collect()
}

/// (nines, ms) points of a quantile map (`"99.9": ms`).
pub fn quantile_curve(v: &Value) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(q, ms)| Some((nines(q.parse::<f64>().ok()?), ms.as_f64()?)))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// A percentile on the nines axis.
pub fn nines(percent: f64) -> f64 {
    let rest = (100.0 - percent) / 100.0;
    if rest <= 0.0 {
        NINES_MAX
    } else {
        (-rest.log10()).clamp(0.0, NINES_MAX)
    }
}

fn nines_label(x: &f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-x));
    format!("{percent:.3}")
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
        + "%"
}

fn draw(path: &Path, title: &str, rates: &[Curve], latencies: &[Curve]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (WIDTH, PANEL_HEIGHT * 2)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(PANEL_HEIGHT - 20);
    panel(&top, "messages per second", "second", rates, None)?;
    panel(
        &bottom,
        "latency (ms)",
        "percentile",
        latencies,
        Some(nines_label),
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// A y-axis value: whole numbers from 10 up (rates), else two decimals
/// (milliseconds).
fn y_label(v: &f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    y_desc: &str,
    x_desc: &str,
    curves: &[Curve],
    x_labels: Option<fn(&f64) -> String>,
) -> anyhow::Result<()> {
    let points = curves.iter().flat_map(|c| c.points.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points.map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1;
    let x_range = if x_labels.is_some() {
        0.0..NINES_MAX
    } else {
        0.0..x_max
    };
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        // Room for the last x label ("99.999%"), centred on the right edge.
        .margin_right(36)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, 0.0..y_max)
        .map_err(|e| anyhow!("{e}"))?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&y_label);
    if let Some(f) = x_labels.as_ref() {
        mesh.x_label_formatter(f).x_labels(6);
    }
    mesh.draw().map_err(|e| anyhow!("{e}"))?;
    for (i, curve) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                curve.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(curve.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_nines_axis_spaces_percentiles_evenly() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), NINES_MAX);
        assert_eq!(nines_label(&2.0), "99%");
        assert_eq!(nines_label(&3.0), "99.9%");
    }

    #[test]
    fn a_chart_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = json!({
            "workload": "w", "driver": "sluice",
            "publishRate": [10.0, 12.0], "consumeRate": [9.0, 13.0],
            "aggregatedPublishLatencyQuantiles": {"50": 1.0, "99": 3.0, "100": 9.0},
            "aggregatedEndToEndLatencyQuantiles": {"50": 2.0, "99": 5.0},
        });
        let path = dir.path().join("c.svg");
        run_chart(&doc, &path).expect("chart");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("publishRate") && svg.contains("end-to-end"));
        compare_chart(&[("a".into(), doc.clone()), ("b".into(), doc)], &path).expect("compare");
    }
}
