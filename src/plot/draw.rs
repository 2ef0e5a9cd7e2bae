//! A [`Figure`] in pixels (plotters' bitmap backend) and as PNG bytes.
//!
//! Text uses a font embedded in the binary (Ubuntu Light, from the
//! `epaint_default_fonts` crate) through plotters' `ab_glyph` feature, so
//! drawing needs no fontconfig, FreeType or system fonts. Log axes are
//! drawn as linear axes over log10(v) or log2(v), labelled with v.

use std::sync::OnceLock;

use plotters::prelude::*;

use super::{Figure, Legend, Panel, Scale};

const FONT: &str = "sans-serif";

/// Registers the embedded font once, under the family plotters asks for.
fn register_font() -> Result<(), String> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        ["sans-serif", "serif", "monospace"].iter().all(|family| {
            plotters::style::register_font(
                family,
                FontStyle::Normal,
                epaint_default_fonts::UBUNTU_LIGHT,
            )
            .is_ok()
        })
    });
    ok.then_some(())
        .ok_or_else(|| "the embedded font could not be read".to_string())
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Scale {
    /// Where a value lies on the axis (`None`: not drawable there).
    fn to_axis(self, v: f64) -> Option<f64> {
        let a = match self {
            Scale::Linear => v,
            Scale::Log10 if v > 0.0 => v.log10(),
            Scale::Log2Bytes if v > 0.0 => v.log2(),
            _ => return None,
        };
        a.is_finite().then_some(a)
    }

    /// The tick label at axis position `a`.
    fn label(self, a: f64) -> String {
        match self {
            Scale::Linear => fmt_num(a),
            Scale::Log10 => fmt_num(10f64.powf(a)),
            Scale::Log2Bytes => {
                let k = a.round();
                if (a - k).abs() < 1e-6 && (0.0..63.0).contains(&k) {
                    human_bytes(1u64 << k as u32)
                } else {
                    String::new()
                }
            }
        }
    }
}

/// About three significant digits, no trailing zeros.
pub fn fmt_num(v: f64) -> String {
    let m = v.abs();
    if m == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&m) {
        return format!("{v:.1e}");
    }
    let decimals = (2 - m.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// 512, 1K, 64M, 2G (powers of 1024 as in nccl-tests' size flags).
pub fn human_bytes(b: u64) -> String {
    for (unit, shift) in [("G", 30), ("M", 20), ("K", 10)] {
        if b >= 1 << shift && b % (1 << shift) == 0 {
            return format!("{}{unit}", b >> shift);
        }
    }
    b.to_string()
}

/// The range of some axis values, with a margin; never empty.
fn range(values: impl Iterator<Item = f64>, scale: Scale) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= 1e-12 * lo.abs().max(1.0) {
        let pad = match scale {
            Scale::Linear if lo != 0.0 => lo.abs() * 0.1,
            _ => 1.0,
        };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.04;
    (lo - pad, hi + pad)
}

/// Markers on every point of series shorter than this.
const MARKERS_UP_TO: usize = 60;

/// The figure as PNG bytes, `width` × `height` pixels.
pub fn render_png(fig: &Figure, width: u32, height: u32) -> Result<Vec<u8>, String> {
    register_font()?;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let px = (width.min(height * 3 / 2) as f64 / 1200.0 * 1.5).clamp(0.6, 3.0);
        // ab_glyph draws glyphs above their nominal box: leave room on top.
        let body = root
            .margin((8.0 * px) as i32, 0, 0, 0)
            .titled(&fig.title, (FONT, 30.0 * px).into_font().color(&BLACK))
            .map_err(err)?;
        let (first, rest) = match fig.panels.split_first() {
            Some((f, r)) if fig.wide_first && !r.is_empty() => (Some(f), r),
            _ => (None, &fig.panels[..]),
        };
        let grid = match first {
            Some(f) => {
                let h = body.dim_in_pixel().1 as f64;
                let (top, below) = body.split_vertically((h * 0.4) as i32);
                draw_panel(f, &top, px)?;
                below
            }
            None => body,
        };
        let cols = match rest.len() {
            0 | 1 => 1,
            n if n >= 5 && first.is_some() => 3,
            _ => 2,
        };
        let areas = grid.split_evenly((rest.len().max(1).div_ceil(cols), cols));
        for (panel, area) in rest.iter().zip(&areas) {
            draw_panel(panel, area, px)?;
        }
        root.present().map_err(err)?;
    }
    encode_png(&rgb, width, height)
}

fn draw_panel<DB: DrawingBackend>(
    p: &Panel,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    px: f64,
) -> Result<(), String> {
    let points: Vec<Vec<(f64, f64)>> = p
        .series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter_map(|&(x, y)| Some((p.x_scale.to_axis(x)?, p.y_scale.to_axis(y)?)))
                .collect()
        })
        .collect();
    let all = || points.iter().flatten();
    let (x0, x1) = range(all().map(|q| q.0), p.x_scale);
    let (y0, y1) = range(all().map(|q| q.1), p.y_scale);
    let size = |v: f64| (v * px).round() as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 22.0 * px))
        .margin(size(10.0))
        .x_label_area_size(size(45.0))
        .y_label_area_size(size(70.0))
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    let xf = |a: &f64| p.x_scale.label(*a);
    let yf = |a: &f64| p.y_scale.label(*a);
    chart
        .configure_mesh()
        .x_desc(&p.x_label)
        .y_desc(&p.y_label)
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .x_labels(8)
        .y_labels(6)
        .label_style((FONT, 15.0 * px))
        .axis_desc_style((FONT, 17.0 * px))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()
        .map_err(err)?;
    let stroke = size(2.0).max(1) as u32;
    for (s, pts) in p.series.iter().zip(&points) {
        let style = s.color.stroke_width(stroke);
        let anno = if s.dashed {
            chart.draw_series(DashedLineSeries::new(
                pts.iter().copied(),
                size(9.0),
                size(6.0),
                style,
            ))
        } else {
            chart.draw_series(LineSeries::new(pts.iter().copied(), style))
        }
        .map_err(err)?;
        let legend_style = style;
        let dashed = s.dashed;
        let r = size(4.0);
        anno.label(s.name.as_str()).legend(move |(x, y)| {
            let w = size(22.0);
            let line = PathElement::new(vec![(x, y), (x + w, y)], legend_style);
            let dot = Circle::new((x + w / 2, y), r, marker(legend_style, dashed));
            EmptyElement::at((0, 0)) + line + dot
        });
        if pts.len() <= MARKERS_UP_TO {
            chart
                .draw_series(
                    pts.iter()
                        .map(|&q| Circle::new(q, r, marker(style, s.dashed))),
                )
                .map_err(err)?;
        }
    }
    if !p.series.is_empty() {
        let position = match p.legend {
            Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
            Legend::UpperRight => SeriesLabelPosition::UpperRight,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
        };
        chart
            .configure_series_labels()
            .position(position)
            .legend_area_size(size(34.0))
            .label_font((FONT, 15.0 * px))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Filled for solid lines, hollow for dashed ones.
fn marker(style: ShapeStyle, dashed: bool) -> ShapeStyle {
    if dashed { style } else { style.filled() }
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = vec![];
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(err)?;
    w.write_image_data(rgb).map_err(err)?;
    w.finish().map_err(err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Series, color};
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(fmt_num(0.5), "0.5");
        assert_eq!(fmt_num(0.123456), "0.123");
        assert_eq!(fmt_num(12.0), "12");
        assert_eq!(fmt_num(1234.6), "1235");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(2e-5), "2.0e-5");
        assert_eq!(human_bytes(512), "512");
        assert_eq!(human_bytes(1 << 20), "1M");
        assert_eq!(human_bytes(64 << 20), "64M");
        assert_eq!(human_bytes(3 << 10), "3K");
        assert_eq!(Scale::Log2Bytes.label(20.0), "1M");
        assert_eq!(Scale::Log2Bytes.label(20.5), "");
        assert_eq!(Scale::Log10.label(-1.0), "0.1");
    }

    #[test]
    fn renders_a_png_of_the_asked_size() {
        let fig = Figure {
            title: "t".into(),
            wide_first: false,
            panels: vec![Panel {
                title: "p".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                x_scale: Scale::Linear,
                y_scale: Scale::Log10,
                legend: Legend::UpperRight,
                series: vec![Series {
                    name: "a".into(),
                    color: color(3),
                    dashed: false,
                    points: vec![(1.0, 1.0), (2.0, 0.01)],
                }],
            }],
        };
        let bytes = render_png(&fig, 320, 240).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (320, 240));
        let c = color(3);
        assert!(buf.chunks(3).any(|p| p == [c.0, c.1, c.2]));
    }
}
