//! `sweep.svg`: two panels over server threads, one line per socket
//! mode/io/GRO combination (legend `reuseport/epoll/GRO off`): max clean rate (k packets/s) on top, server CPU time per
//! echoed packet at the common rate below. Text is plain SVG `<text>` (no
//! font files are needed or read).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::output::Row;

/// One line: series name → (threads, value) points, sorted by threads.
type Series = BTreeMap<String, Vec<(u32, f64)>>;

fn collect(rows: &[Row], value: impl Fn(&Row) -> Option<f64>) -> Series {
    let mut s = Series::new();
    for r in rows {
        let points = s.entry(r.series()).or_default();
        if let Some(v) = value(r).filter(|v| v.is_finite()) {
            points.push((u32::from(r.threads), v));
        }
    }
    for points in s.values_mut() {
        points.sort_by_key(|p| p.0);
    }
    s
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    series: &Series,
    names: &[String],
    max_threads: u32,
) -> Result<(), String> {
    let ymax = series
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(0.0f64, f64::max);
    // Headroom above the highest point for the legend box.
    let ymax = if ymax > 0.0 { ymax * 1.3 } else { 1.0 };
    let decimals = if ymax >= 50.0 { 0 } else { 1 };
    let y_fmt = move |v: &f64| format!("{v:.decimals$}");
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0u32..max_threads + 1, 0f64..ymax)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("server threads")
        .y_desc(y_desc)
        .x_labels((max_threads as usize + 2).min(17))
        .y_labels(8)
        .y_label_formatter(&y_fmt)
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, name) in names.iter().enumerate() {
        let Some(points) = series.get(name) else {
            continue;
        };
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Draws the chart for `rows` into `path`.
pub fn write_svg(
    path: &Path,
    rows: &[Row],
    max_loss_pct: f64,
    common_rate: u64,
) -> Result<(), String> {
    let err = |e: String| format!("cannot draw {}: {e}", path.display());
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        if !names.contains(&r.series()) {
            names.push(r.series());
        }
    }
    let max_threads = rows.iter().map(|r| u32::from(r.threads)).max().unwrap_or(1);
    let rates = collect(rows, |r| r.max_clean_rate.map(|x| x / 1000.0));
    let cpu = collect(rows, |r| r.cpu_ns_per_pkt);
    let root = SVGBackend::new(path, (960, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root
        .titled(
            "UDP echo server: throughput and CPU cost by thread count",
            ("sans-serif", 24),
        )
        .map_err(|e| err(e.to_string()))?;
    let (top, bottom) = root.split_vertically(490);
    let limited = rows.iter().filter(|r| r.generator_limited).count();
    let rate_caption = if limited > 0 {
        format!(
            "Max clean rate (loss <= {max_loss_pct}%): {limited} of {} points generator-limited (a lower bound)",
            rows.len()
        )
    } else {
        format!("Max clean rate (loss <= {max_loss_pct}%)")
    };
    panel(
        &top,
        &rate_caption,
        "max clean rate (k packets/s)",
        &rates,
        &names,
        max_threads,
    )
    .map_err(err)?;
    panel(
        &bottom,
        &format!("Server CPU time per echoed packet at {common_rate} packets/s"),
        "CPU ns / packet",
        &cpu,
        &names,
        max_threads,
    )
    .map_err(err)?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_axes_legend_and_lines() {
        let dir = std::env::temp_dir().join(format!("sweep-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.svg");
        let mut rows = Vec::new();
        for (mode, gro, k) in [("shared", "on", 1.0), ("reuseport", "off", 1.8)] {
            for t in [1u16, 2, 4, 8] {
                rows.push(Row {
                    threads: t,
                    mode: mode.into(),
                    io: "blocking".into(),
                    gro: gro.into(),
                    max_clean_rate: Some(50_000.0 * k * f64::from(t).sqrt()),
                    cpu_ns_per_pkt: (t != 4).then_some(2_000.0 / k),
                    ..Row::default()
                });
            }
        }
        write_svg(&path, &rows, 0.1, 50_000).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in [
            "server threads",
            "max clean rate (k packets/s)",
            "CPU ns / packet",
            "shared/blocking/GRO on",
            "reuseport/blocking/GRO off",
        ] {
            assert!(svg.contains(text), "missing {text:?}");
        }
        assert!(svg.contains("<polyline"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn svg_with_no_data_still_draws() {
        let dir = std::env::temp_dir().join(format!("sweep-chart-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.svg");
        write_svg(&path, &[], 0.1, 50_000).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("<svg"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
