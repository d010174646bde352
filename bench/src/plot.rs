//! `latency.png`: the distribution (empirical CDF) of each latency series, A against B. Text
//! is drawn with ab_glyph from a TrueType file read at run time, so no fontconfig is needed.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::report::Results;
use crate::stats::Samples;

/// Debian's fonts-dejavu-core (scripts/install-deps.sh installs it).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Draws the six panels into `path`.
pub fn draw(results: &Results, path: &Path) -> Result<(), String> {
    let font = std::fs::read(FONT).map_err(|e| format!("cannot read font {FONT}: {e}"))?;
    // plotters keeps registered fonts for the life of the process.
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| format!("font {FONT} is not a TrueType font"))?;

    let s = &results.single;
    let b = &results.bursts;
    let panels: [(String, &Samples, Option<&Samples>); 6] = [
        (
            format!("single ADD (n = {})", s.cycles),
            &s.latency[0].add,
            Some(&s.latency[1].add),
        ),
        (
            format!("single CHECK (n = {})", s.cycles),
            &s.latency[0].check,
            Some(&s.latency[1].check),
        ),
        (
            format!("single DEL (n = {})", s.cycles),
            &s.latency[0].del,
            Some(&s.latency[1].del),
        ),
        (
            format!("burst of {}: ADD per process", b.size),
            &b.setups[0].add,
            Some(&b.setups[1].add),
        ),
        (
            format!("burst of {}: DEL per process", b.size),
            &b.setups[0].del,
            Some(&b.setups[1].del),
        ),
        (
            "bare veth delete (kernel only)".into(),
            &s.bare_delete,
            None,
        ),
    ];

    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let root = BitMapBackend::new(path, (1500, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let title = format!(
        "A = calico + calico-ipam (etcd), B = ptp + host-local: fraction of runs done within x ms ({} cores, Linux {})",
        results.machine.nproc, results.machine.kernel
    );
    let root = root
        .titled(&title, ("sans-serif", 20))
        .map_err(|e| fail(&e))?;
    for (area, (caption, a, b)) in root.split_evenly((2, 3)).iter().zip(panels) {
        let x_max = a.max().max(b.map_or(0.0, Samples::max)) * 1.05;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..x_max.max(0.1), 0.0..1.0)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("ms")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| fail(&e))?;
        // A panel without B shows the kernel alone, in black.
        let series = match b {
            Some(b) => vec![("A", a, BLUE), ("B", b, RED)],
            None => vec![("kernel", a, BLACK)],
        };
        for (legend, samples, color) in series {
            chart
                .draw_series(LineSeries::new(cdf(samples), color.stroke_width(2)))
                .map_err(|e| fail(&e))?
                .label(format!("{legend}: p50 {:.2} ms", samples.p50()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}

/// Steps of the empirical CDF: each sample raises the curve by 1/n.
fn cdf(samples: &Samples) -> Vec<(f64, f64)> {
    let n = samples.len() as f64;
    let mut points = vec![(0.0, 0.0)];
    for (i, v) in samples.sorted().iter().enumerate() {
        points.push((*v, i as f64 / n));
        points.push((*v, (i + 1) as f64 / n));
    }
    points
}
