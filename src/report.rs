//! `ember report`: a run's `metrics.jsonl` drawn as one SVG picture (loss, bits per byte,
//! learning rate, throughput, memory against step), or several runs overlaid with the config keys they differ
//! in. Also written at the end of every run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::error::{Error, Result, io};

/// One run's figures, as logged.
#[derive(Debug, Clone, Default)]
pub struct RunSeries {
    /// The run folder's name.
    pub name: String,
    /// The run's resolved config, flattened to `section.key` → value.
    pub config: BTreeMap<String, String>,
    /// `(step, value)` per logged field: `loss`, `val_loss`, `train_loss`, `lr`,
    /// `tokens_per_sec`, `rss_bytes`, `live_bytes`... (a field a line lacks is simply absent).
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
}

impl RunSeries {
    pub fn get(&self, field: &str) -> &[(f64, f64)] {
        self.series.get(field).map_or(&[], Vec::as_slice)
    }
}

/// Reads `run/metrics.jsonl` (and `run/config.toml` when there is one). A line that is not a
/// JSON object with a numeric `step` is an error naming its line number.
pub fn load_run(run: &Path) -> Result<RunSeries> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(io(&path, "cannot read"))?;
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}:{}", path.display(), i + 1);
        let bad = |why: String| Error::Metrics(format!("{}: {why}", at()));
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let step = object
            .get("step")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| bad("no numeric `step`".into()))?;
        for (key, value) in object {
            if let (Some(v), true) = (value.as_f64(), key != "step") {
                series.entry(key.clone()).or_default().push((step, v));
            }
        }
    }
    let config = std::fs::read_to_string(run.join("config.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .map(|table| flatten(&table))
        .unwrap_or_default();
    let name = run.file_name().map_or_else(
        || run.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(RunSeries {
        name,
        config,
        series,
    })
}

fn flatten(table: &toml::Table) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (section, fields) in table {
        match fields.as_table() {
            Some(fields) => {
                for (key, value) in fields {
                    out.insert(format!("{section}.{key}"), value.to_string());
                }
            }
            None => {
                out.insert(section.clone(), fields.to_string());
            }
        }
    }
    out
}

/// The config keys whose values differ between runs (run names and output folders aside), as
/// `key=value` per run.
pub fn differing_keys(runs: &[RunSeries]) -> Vec<Vec<String>> {
    let keys: Vec<&String> = runs
        .iter()
        .flat_map(|r| r.config.keys())
        .filter(|k| !matches!(k.as_str(), "run.name" | "run.out"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| {
            let first = runs[0].config.get(*k);
            runs.iter().any(|r| r.config.get(*k) != first)
        })
        .collect();
    runs.iter()
        .map(|r| {
            keys.iter()
                .map(|k| format!("{k}={}", r.config.get(*k).map_or("-", String::as_str)))
                .collect()
        })
        .collect()
}

/// How to draw.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportOptions {
    /// Loss on a logarithmic axis.
    pub log_loss: bool,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// One panel: which fields, on what axis.
struct Panel {
    title: &'static str,
    y_label: &'static str,
    lines: &'static [Line],
}

/// One series of a panel, drawn as `value * scale`.
struct Line {
    field: &'static str,
    label: &'static str,
    scale: f64,
    /// Sparse series (evaluations) get a marker at each point.
    markers: bool,
}

const fn line(field: &'static str, label: &'static str, scale: f64, markers: bool) -> Line {
    Line {
        field,
        label,
        scale,
        markers,
    }
}

const MIB: f64 = 1.0 / (1024.0 * 1024.0);

const PANELS: [Panel; 5] = [
    Panel {
        title: "loss",
        y_label: "cross-entropy (nats)",
        lines: &[
            line("loss", "train batch", 1.0, false),
            line("val_loss", "val (eval)", 1.0, true),
            line("train_loss", "train (eval)", 1.0, true),
        ],
    },
    // Nats per token depend on the tokenizer; bits per byte of text compare runs of any two.
    Panel {
        title: "bits per byte (val)",
        y_label: "bits per UTF-8 byte",
        lines: &[line("val_bpb", "val (eval)", 1.0, true)],
    },
    Panel {
        title: "learning rate",
        y_label: "lr",
        lines: &[line("lr", "lr", 1.0, false)],
    },
    Panel {
        title: "throughput",
        y_label: "tokens/s",
        lines: &[line("tokens_per_sec", "tokens/s", 1.0, false)],
    },
    Panel {
        title: "memory",
        y_label: "MiB",
        lines: &[
            line("rss_bytes", "RSS", MIB, false),
            line("live_bytes", "live heap", MIB, false),
        ],
    },
];

/// Draws `runs` into an SVG file at `out`: five panels against step. One run: a colour per
/// series, with a legend in each panel. Several: a colour per run, named in a legend under the
/// title with the config keys in which the runs differ; evaluations are the lines with dots.
pub fn write_svg(runs: &[RunSeries], out: &Path, options: ReportOptions) -> Result<()> {
    let draw = |e: &dyn std::fmt::Display| Error::Draw {
        path: out.to_path_buf(),
        why: e.to_string(),
    };
    if runs.is_empty() {
        return Err(draw(&"no run to draw"));
    }
    let legend_height = if runs.len() == 1 {
        0
    } else {
        16 + 20 * runs.len() as u32
    };
    let root = SVGBackend::new(out, (1400, 900 + legend_height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let title = match runs {
        [one] => format!("Ember run {}", one.name),
        _ => format!("Ember: {} runs (dots: evaluations)", runs.len()),
    };
    let root = root
        .titled(&title, ("sans-serif", 24))
        .map_err(|e| draw(&e))?;
    let (legend, panels) = root.split_vertically(legend_height);
    if runs.len() > 1 {
        for (r, (run, keys)) in runs.iter().zip(differing_keys(runs)).enumerate() {
            let color = COLORS[r % COLORS.len()];
            let y = 8 + 20 * r as i32;
            let text = match keys.as_slice() {
                [] => run.name.clone(),
                keys => format!("{}: {}", run.name, keys.join(", ")),
            };
            legend
                .draw(&Rectangle::new([(60, y + 4), (84, y + 8)], color.filled()))
                .and_then(|()| legend.draw(&Text::new(text, (92, y), ("sans-serif", 15))))
                .map_err(|e| draw(&e))?;
        }
    }
    for (panel, area) in PANELS.iter().zip(panels.split_evenly((2, 3))) {
        draw_panel(&area, panel, runs, options).map_err(|e| draw(&e))?;
    }
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    runs: &[RunSeries],
    options: ReportOptions,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    // A logarithmic loss axis is drawn as ln(loss) on a linear one, labelled with the loss.
    let log = options.log_loss && panel.title == "loss";
    let points = |run: &RunSeries, line: &Line| -> Vec<(f64, f64)> {
        run.get(line.field)
            .iter()
            .map(|&(x, y)| (x, y * line.scale))
            .map(|(x, y)| (x, if log { y.ln() } else { y }))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let all: Vec<(f64, f64)> = runs
        .iter()
        .flat_map(|r| panel.lines.iter().flat_map(move |l| points(r, l)))
        .collect();
    let (x_max, y_min, y_max) = all.iter().fold(
        (1.0f64, f64::INFINITY, f64::NEG_INFINITY),
        |(x, lo, hi), &(px, py)| (x.max(px), lo.min(py), hi.max(py)),
    );
    let (y_min, y_max) = if all.is_empty() {
        (0.0, 1.0)
    } else {
        (y_min, y_max)
    };
    let pad = ((y_max - y_min) * 0.05).max(1e-9);
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, y_min - pad..y_max + pad)?;
    let y_desc = if log {
        format!("{} (log scale)", panel.y_label)
    } else {
        panel.y_label.to_string()
    };
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| number(if log { y.exp() } else { *y }))
        .label_style(("sans-serif", 13))
        .draw()?;
    for (r, run) in runs.iter().enumerate() {
        for (l, line) in panel.lines.iter().enumerate() {
            let data = points(run, line);
            if data.is_empty() {
                continue;
            }
            let (color, alpha) = if runs.len() == 1 {
                (COLORS[l % COLORS.len()], 1.0)
            } else {
                (COLORS[r % COLORS.len()], if l == 0 { 1.0 } else { 0.55 })
            };
            let style = ShapeStyle::from(color.mix(alpha)).stroke_width(2);
            let drawn = chart.draw_series(LineSeries::new(data.clone(), style))?;
            if runs.len() == 1 {
                drawn
                    .label(line.label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            }
            if line.markers {
                chart.draw_series(data.iter().map(|&p| Circle::new(p, 3, style.filled())))?;
            }
        }
    }
    if runs.len() > 1 && panel.lines.len() > 1 {
        // Several runs share the colours: say which style is which series.
        for (l, line) in panel.lines.iter().enumerate() {
            let style =
                ShapeStyle::from(BLACK.mix(if l == 0 { 1.0 } else { 0.55 })).stroke_width(2);
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label(line.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    if runs.len() == 1 || panel.lines.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

/// An axis label: whole numbers from 100 up, three significant digits below.
fn number(v: f64) -> String {
    if v.abs() >= 100.0 || v == 0.0 {
        return format!("{v:.0}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The default picture for `runs`: `RUN/report.svg` for one run, `ember-report.svg` here for
/// several.
pub fn default_out(runs: &[PathBuf]) -> PathBuf {
    match runs {
        [one] => one.join("report.svg"),
        _ => PathBuf::from("ember-report.svg"),
    }
}
