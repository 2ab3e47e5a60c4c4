//! PNG charts (plotters, bitmap backend). Text uses a TrueType font from an installed
//! Debian package (fonts-liberation or fonts-dejavu-core), loaded at run time through
//! plotters' `ab_glyph` feature; without one, no charts are drawn.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Results, fmt_num};
use crate::{Res, err};

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
];

/// Registers a sans-serif font once; returns whether one was found.
pub fn init_font() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        for path in FONT_CANDIDATES {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(214, 39, 40),   // sente-rs: red
    RGBColor(127, 127, 127), // raw-ws: grey
    RGBColor(31, 119, 180),  // socketioxide: blue
    RGBColor(44, 160, 44),   // socketio-node: green
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];

fn color_of(series: &str, index: usize) -> RGBColor {
    match series {
        "sente-rs" => PALETTE[0],
        "raw-ws" => PALETTE[1],
        "socketioxide" => PALETTE[2],
        "socketio-node" => PALETTE[3],
        _ => PALETTE[4 + index % 2],
    }
}

/// One panel of grouped bars: `groups` along x, one bar per series in each group.
pub struct Panel {
    /// Panel title.
    pub title: String,
    /// Y axis label.
    pub y_label: String,
    /// Group names along x.
    pub groups: Vec<String>,
    /// (series name, one value per group); NaN draws no bar.
    pub series: Vec<(String, Vec<f64>)>,
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Res<()>
where
    DB::ErrorType: 'static,
{
    let p = panel;
    let groups = p.groups.len().max(1);
    let max = p
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let top = if max > 0.0 { max * 1.9 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..groups as f64, 0f64..top)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_max_light_lines(0)
        .x_labels(0)
        .y_desc(p.y_label.as_str())
        .y_label_formatter(&|v| fmt_num(*v))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let width = 0.8 / p.series.len().max(1) as f64;
    for (si, (name, values)) in p.series.iter().enumerate() {
        let color = color_of(name, si);
        let bars = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(g, v)| {
                let x0 = g as f64 + 0.1 + si as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.92, *v)], color.filled())
            });
        chart
            .draw_series(bars)
            .map_err(|e| err(e.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        let labels = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(g, v)| {
                let x = g as f64 + 0.1 + (si as f64 + 0.46) * width;
                let style = ("sans-serif", 11)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom));
                Text::new(fmt_num(*v), (x, *v), style)
            });
        chart.draw_series(labels).map_err(|e| err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    // Group names centred under each group.
    for (g, name) in p.groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
        let style = ("sans-serif", 13)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        area.draw_text(
            name,
            &style,
            (
                px - area.get_base_pixel().0,
                py - area.get_base_pixel().1 + 6,
            ),
        )
        .map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

/// Draws `panels` stacked vertically into one PNG.
pub fn draw_png(path: &Path, panels: &[Panel]) -> Res<()> {
    if panels.is_empty() {
        return Ok(());
    }
    let h = 280 * panels.len() as u32;
    let root = BitMapBackend::new(path, (860, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let areas = root.split_evenly((panels.len(), 1));
    for (a, p) in areas.iter().zip(panels) {
        draw_panel(a, p)?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

fn panel_for(
    r: &Results,
    case_prefix: &str,
    metrics: &[(&str, &str)],
    title: &str,
    y: &str,
) -> Vec<Panel> {
    let mut out = Vec::new();
    for c in r.cases.iter().filter(|c| c.name.starts_with(case_prefix)) {
        let rows: Vec<_> = r.summary.iter().filter(|s| s.case == c.name).collect();
        if rows.is_empty() {
            continue;
        }
        let series = rows
            .iter()
            .map(|s| {
                let v = metrics
                    .iter()
                    .map(|(m, _)| s.medians.get(*m).copied().unwrap_or(f64::NAN))
                    .collect();
                (s.target.clone(), v)
            })
            .collect();
        out.push(Panel {
            title: format!("{title}: {}", c.name),
            y_label: y.to_owned(),
            groups: metrics.iter().map(|(_, l)| (*l).to_owned()).collect(),
            series,
        });
    }
    out
}

fn single_metric_panel(
    r: &Results,
    prefix: &str,
    metric: &str,
    title: &str,
    y: &str,
) -> Option<Panel> {
    let cases: Vec<_> = r
        .cases
        .iter()
        .filter(|c| c.name.starts_with(prefix))
        .collect();
    if cases.is_empty() {
        return None;
    }
    let series = r
        .targets
        .iter()
        .map(|t| {
            let v = cases
                .iter()
                .map(|c| {
                    r.summary
                        .iter()
                        .find(|s| &s.target == t && s.case == c.name)
                        .and_then(|s| s.medians.get(metric).copied())
                        .unwrap_or(f64::NAN)
                })
                .collect();
            (t.clone(), v)
        })
        .collect();
    Some(Panel {
        title: title.to_owned(),
        y_label: y.to_owned(),
        groups: cases.iter().map(|c| c.name.clone()).collect(),
        series,
    })
}

/// Writes `<stem>-latency.png`, `<stem>-throughput.png`, `<stem>-memory.png` and
/// `<stem>-storm.png` next to each other; returns the files written.
pub fn write_all(r: &Results, dir: &Path, stem: &str) -> Res<Vec<PathBuf>> {
    if !init_font() {
        return Err(err(
            "no TrueType font found (install fonts-liberation); charts skipped",
        ));
    }
    let mut written = Vec::new();
    let latency = panel_for(
        r,
        "rr-",
        &[("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")],
        "request/reply latency",
        "ms",
    );
    let fanout_latency = panel_for(
        r,
        "fanout-",
        &[("p50_ms", "p50"), ("p99_ms", "p99")],
        "delivery latency",
        "ms",
    );
    let mut throughput = Vec::new();
    throughput.extend(single_metric_panel(
        r,
        "rr-",
        "req_per_s",
        "request/reply throughput",
        "req/s",
    ));
    throughput.extend(single_metric_panel(
        r,
        "fanout-",
        "delivered_per_s",
        "fan-out delivered events",
        "events/s",
    ));
    let memory: Vec<Panel> = single_metric_panel(
        r,
        "idle-",
        "kib_per_conn",
        "server memory per idle connection",
        "KiB/conn",
    )
    .into_iter()
    .collect();
    let mut storm = Vec::new();
    storm.extend(single_metric_panel(
        r,
        "storm-",
        "t100_s",
        "reconnect storm: all clients back",
        "s",
    ));
    storm.extend(single_metric_panel(
        r,
        "storm-",
        "server_cpu_pct",
        "reconnect storm: server CPU",
        "% of a core",
    ));
    for (name, panels) in [
        ("latency", latency),
        ("fanout-latency", fanout_latency),
        ("throughput", throughput),
        ("memory", memory),
        ("storm", storm),
    ] {
        if panels.is_empty() {
            continue;
        }
        let path = dir.join(format!("{stem}-{name}.png"));
        draw_png(&path, &panels)?;
        written.push(path);
    }
    Ok(written)
}
