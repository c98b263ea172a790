//! The bar chart of tapnet/kernel ratios: an SVG written by hand, and the
//! same SVG rasterised to PNG with resvg.

use std::fmt::Write as _;

use super::report::Report;

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
/// Rasterise the chart (our own SVG, so both files show the same thing) at
/// twice its size, with the system's fonts for the labels.
pub(super) fn svg_to_png(chart: &str) -> std::result::Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    // fontdb maps the generic "sans-serif" to Arial, which Linux rarely has.
    let installed = |name: &str| db.faces().any(|f| f.families.iter().any(|(n, _)| n == name));
    if let Some(family) = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "FreeSans"].into_iter().find(|f| installed(f))
    {
        db.set_sans_serif_family(family);
    }
    let tree = usvg::Tree::from_str(chart, &opt).map_err(|e| e.to_string())?;
    let scale = 2.0;
    let size = tree.size();
    let (w, h) = ((size.width() * scale).ceil() as u32, (size.height() * scale).ceil() as u32);
    let mut pixmap = tiny_skia::Pixmap::new(w.max(1), h.max(1)).ok_or("chart too large to rasterise")?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}

/// A horizontal bar chart of the tapnet/kernel ratios, one bar per row that
/// has a ratio, with a line at 1.0 (parity with the kernel).
pub fn svg(r: &Report) -> String {
    let bars: Vec<(String, f64, bool)> = r
        .scenarios
        .iter()
        .flat_map(|sc| {
            sc.rows.iter().filter_map(move |row| {
                row.ratio.map(|x| {
                    let lbl = format!(
                        "{} {} {}{}",
                        sc.scenario,
                        row.workload,
                        row.metric,
                        if row.lower_is_better { " (lower is better)" } else { "" }
                    );
                    (lbl, x, row.lower_is_better)
                })
            })
        })
        .collect();
    let alone: Vec<&str> =
        r.scenarios.iter().filter(|s| s.no_kernel_reference.is_some()).map(|s| s.scenario.as_str()).collect();
    let (left, width, row_h, top) = (330.0, 540.0, 28.0, 78.0);
    let max = bars.iter().map(|b| b.1).fold(1.0f64, f64::max).min(20.0) * 1.15;
    let x_of = |v: f64| left + v.min(max) / max * width;
    let height = top + row_h * bars.len().max(1) as f64 + 70.0;
    let total_w = left + width + 90.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" viewBox="0 0 {total_w} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(o, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let m = &r.machine;
    let _ = writeln!(
        o,
        r##"<text x="16" y="24" font-size="16" font-weight="bold">tapnet vs kernel datapath: ratio tapnet/kernel</text>"##
    );
    let _ = writeln!(
        o,
        r##"<text x="16" y="44" fill="#444">{} cores, kernel {}, tapnet {}, workers: {}, {} s per workload. Green: tapnet better than the kernel; grey: within 2 %; orange: worse.</text>"##,
        m.cores,
        xml_escape(&m.kernel),
        xml_escape(&m.tapnet_version),
        m.workers,
        r.settings.duration_s
    );
    // Grid at every 0.5 (or 1.0 when the scale is wide).
    let step = if max > 6.0 { 1.0 } else { 0.5 };
    let axis_y = top + row_h * bars.len().max(1) as f64;
    let mut g = 0.0;
    while g <= max + 1e-9 {
        let x = x_of(g);
        let _ =
            writeln!(o, r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{axis_y:.1}" stroke="#e0e0e0"/>"##, top - 8.0);
        let _ = writeln!(
            o,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#444">{g:.1}</text>"##,
            axis_y + 16.0
        );
        g += step;
    }
    for (i, (label, v, lower)) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        // Within 2 % of the kernel is "on par": this machine's noise is larger.
        let better = if *lower { *v < 0.98 } else { *v > 1.02 };
        let worse = if *lower { *v > 1.02 } else { *v < 0.98 };
        let color = if better {
            "#4caf50"
        } else if worse {
            "#ff9800"
        } else {
            "#9e9e9e"
        };
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left - 8.0,
            y + row_h / 2.0 + 4.0,
            xml_escape(label)
        );
        let _ = writeln!(
            o,
            r##"<rect x="{left:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"##,
            y + 4.0,
            (x_of(*v) - left).max(1.0),
            row_h - 8.0
        );
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}">{v:.2}{}</text>"##,
            x_of(*v) + 4.0,
            y + row_h / 2.0 + 4.0,
            if *v > max { " (clipped)" } else { "" }
        );
    }
    if bars.is_empty() {
        let _ = writeln!(o, r##"<text x="{left}" y="{:.1}" fill="#444">no ratios measured</text>"##, top + 18.0);
    }
    let one = x_of(1.0);
    let _ = writeln!(
        o,
        r##"<line x1="{one:.1}" y1="{:.1}" x2="{one:.1}" y2="{axis_y:.1}" stroke="#d32f2f" stroke-width="2" stroke-dasharray="6,3"/>"##,
        top - 12.0
    );
    let _ = writeln!(o, r##"<text x="{:.1}" y="{:.1}" fill="#d32f2f">kernel = 1.0</text>"##, one + 4.0, top - 14.0);
    let _ = writeln!(
        o,
        r##"<text x="{left}" y="{:.1}" text-anchor="start" fill="#444">tapnet / kernel (for latency and CPU per Gbit, lower is better)</text>"##,
        axis_y + 36.0
    );
    if !alone.is_empty() {
        let _ = writeln!(
            o,
            r##"<text x="16" y="{:.1}" fill="#888">no kernel reference, so no ratio: {} (see the table)</text>"##,
            axis_y + 56.0,
            alone.join(", ")
        );
    }
    o.push_str("</svg>\n");
    o
}
