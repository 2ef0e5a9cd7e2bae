//! A [`Figure`] in pixels (plotters' bitmap backend) and as PNG bytes.
//!
//! Text uses a font embedded in the binary (Ubuntu Light, from the
//! `epaint_default_fonts` crate) through plotters' `ab_glyph` feature, so
//! drawing needs no fontconfig, FreeType or system fonts. Log axes are
//! drawn as linear axes over log10(v) or log2(v), labelled with v.

use std::sync::OnceLock;

use plotters::prelude::*;

use super::{Figure, Panel, Scale};

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

/// The legend's frame colour: drawn nowhere else (tests find the legend
/// box by it).
pub const LEGEND_BORDER: RGBColor = RGBColor(160, 160, 160);

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
            .titled(&fig.title, (FONT, 26.0 * px).into_font().color(&BLACK))
            .map_err(err)?;
        // One legend for the figure, under the panels: never over a point.
        let entries = legend_entries(fig);
        let legend_h = legend_height(&body, &entries, px)?;
        let (body, legend_area) = body.split_vertically(body.dim_in_pixel().1 as i32 - legend_h);
        draw_legend(&legend_area, &entries, px)?;
        let (first, rest) = match fig.panels.split_first() {
            Some((f, r)) if fig.wide_first && !r.is_empty() => (Some(f), r),
            _ => (None, &fig.panels[..]),
        };
        let grid = match first {
            Some(f) => {
                let h = body.dim_in_pixel().1 as f64;
                let (top, below) = body.split_vertically((h * 0.42) as i32);
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
        let rows = rest.len().max(1).div_ceil(cols);
        // Small panels get smaller text (down to what stays readable).
        let (gw, gh) = grid.dim_in_pixel();
        let fit = ((gh as f64 / rows as f64) / 230.0).min((gw as f64 / cols as f64) / 330.0);
        let small = (px * fit).clamp(px.min(0.7), px);
        let areas = grid.split_evenly((rows, cols));
        for (panel, area) in rest.iter().zip(&areas) {
            draw_panel(panel, area, if rest.len() > 1 { small } else { px })?;
        }
        root.present().map_err(err)?;
    }
    encode_png(&rgb, width, height)
}

/// Each series name once (the first colour and style it has), in order.
fn legend_entries(fig: &Figure) -> Vec<(String, RGBColor, bool)> {
    let mut out: Vec<(String, RGBColor, bool)> = vec![];
    for s in fig.panels.iter().flat_map(|p| &p.series) {
        if !out.iter().any(|e| e.0 == s.name) {
            out.push((s.name.clone(), s.color, s.dashed));
        }
    }
    out
}

/// Swatch width, gap after an entry, row height: in pixels at scale `px`.
fn legend_metrics(px: f64) -> (i32, i32, i32, f64) {
    let font = 15.0 * px;
    (
        (26.0 * px) as i32,
        (22.0 * px) as i32,
        (font * 1.5) as i32,
        font,
    )
}

/// The legend's rows: entries placed left to right, wrapped to the width.
fn legend_rows<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(String, RGBColor, bool)],
    px: f64,
) -> Result<Vec<Vec<(usize, i32)>>, String> {
    let (swatch, gap, _, font) = legend_metrics(px);
    let max_w = area.dim_in_pixel().0 as i32 - (40.0 * px) as i32;
    let mut rows: Vec<Vec<(usize, i32)>> = vec![vec![]];
    let mut x = 0;
    for (i, (name, ..)) in entries.iter().enumerate() {
        let (tw, _) = area
            .estimate_text_size(name, &(FONT, font).into_text_style(area))
            .map_err(err)?;
        let w = swatch + 6 + tw as i32;
        if x > 0 && x + w > max_w {
            rows.push(vec![]);
            x = 0;
        }
        rows.last_mut().expect("a row").push((i, w));
        x += w + gap;
    }
    Ok(rows)
}

fn legend_height<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(String, RGBColor, bool)],
    px: f64,
) -> Result<i32, String> {
    if entries.is_empty() {
        return Ok(0);
    }
    let (_, _, row_h, _) = legend_metrics(px);
    Ok(legend_rows(area, entries, px)?.len() as i32 * row_h + (22.0 * px) as i32)
}

/// The legend, centred in `area` in a framed box.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(String, RGBColor, bool)],
    px: f64,
) -> Result<(), String> {
    if entries.is_empty() {
        return Ok(());
    }
    let (swatch, gap, row_h, font) = legend_metrics(px);
    let rows = legend_rows(area, entries, px)?;
    let widest = rows
        .iter()
        .map(|r| r.iter().map(|e| e.1 + gap).sum::<i32>() - gap)
        .max()
        .unwrap_or(0);
    let (w, _) = area.dim_in_pixel();
    let pad = (8.0 * px) as i32;
    let left = (w as i32 - widest) / 2;
    let top = (4.0 * px) as i32;
    let bottom = top + rows.len() as i32 * row_h + pad;
    area.draw(&Rectangle::new(
        [(left - pad, top), (left + widest + pad, bottom)],
        LEGEND_BORDER.stroke_width(1),
    ))
    .map_err(err)?;
    let stroke = ((2.0 * px).round() as u32).max(1);
    let r = (4.0 * px).round() as i32;
    for (k, row) in rows.iter().enumerate() {
        let y = top + pad / 2 + k as i32 * row_h + row_h / 2;
        let mut x = left;
        for &(i, wi) in row {
            let (name, color, dashed) = &entries[i];
            let style = color.stroke_width(stroke);
            area.draw(&PathElement::new(vec![(x, y), (x + swatch, y)], style))
                .map_err(err)?;
            area.draw(&Circle::new((x + swatch / 2, y), r, marker(style, *dashed)))
                .map_err(err)?;
            let text =
                (FONT, font)
                    .into_font()
                    .color(&BLACK)
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Left,
                        plotters::style::text_anchor::VPos::Center,
                    ));
            area.draw(&Text::new(name.clone(), (x + swatch + 6, y), text))
                .map_err(err)?;
            x += wi + gap;
        }
    }
    Ok(())
}

/// Tick positions (axis units) and their labels for an axis over `lo..hi`
/// with room for about `room` labels: 1, 2, 5 × 10^k steps on linear axes
/// (labels with the decimals the step needs, so no two read alike), 1, 2,
/// 5 × 10^k values on log axes, every power of two on byte axes.
pub fn ticks(scale: Scale, lo: f64, hi: f64, room: usize) -> Vec<(f64, String)> {
    let room = room.max(2);
    match scale {
        Scale::Linear => {
            let raw = (hi - lo) / room as f64;
            if raw.is_nan() || raw <= 0.0 {
                return vec![];
            }
            // step = NICE[i] · 10^e, the smallest at least `raw`; then
            // smaller ones until there are two ticks.
            const NICE: [f64; 3] = [1.0, 2.0, 5.0];
            let mut e = raw.log10().floor() as i32;
            let mut i = NICE
                .iter()
                .position(|m| m * 10f64.powi(e) >= raw)
                .unwrap_or_else(|| {
                    e += 1;
                    0
                });
            let mut step = NICE[i] * 10f64.powi(e);
            while (hi / step).floor() - (lo / step).ceil() < 1.0 {
                if i == 0 {
                    (i, e) = (2, e - 1);
                } else {
                    i -= 1;
                }
                step = NICE[i] * 10f64.powi(e);
            }
            let decimals = (-(step.log10().floor()) as i32).max(0) as usize;
            let big = step >= 1e5;
            let (k0, k1) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
            (k0..=k1)
                .map(|k| {
                    let v = k as f64 * step;
                    let label = if big {
                        format!("{v:.1e}")
                    } else {
                        format!("{:.*}", decimals, if v == 0.0 { 0.0 } else { v })
                    };
                    (v, label)
                })
                .collect()
        }
        Scale::Log10 => {
            let values = |mults: &[f64]| -> Vec<f64> {
                let mut out = vec![];
                for k in (lo.floor() as i32 - 1)..=(hi.ceil() as i32) {
                    for m in mults {
                        let a = (m * 10f64.powi(k)).log10();
                        if a >= lo - 1e-9 && a <= hi + 1e-9 {
                            out.push(a);
                        }
                    }
                }
                out
            };
            let mut a = values(&[1.0, 2.0, 5.0]);
            if a.len() > room {
                a = values(&[1.0]);
            }
            if a.len() < 2 {
                a = values(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
            }
            while a.len() > room {
                a = a.into_iter().step_by(2).collect();
            }
            a.into_iter().map(|a| (a, fmt_num(10f64.powf(a)))).collect()
        }
        Scale::Log2Bytes => {
            let (k0, k1) = (lo.ceil() as i64, hi.floor() as i64);
            let n = (k1 - k0 + 1).max(0) as usize;
            let every = n.div_ceil(room).max(1);
            (k0..=k1)
                .step_by(every)
                .map(|k| (k as f64, scale.label(k as f64)))
                .collect()
        }
    }
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
    let shown = p
        .x_range
        .into_iter()
        .flat_map(|(a, b)| [a, b])
        .filter_map(|v| p.x_scale.to_axis(v));
    let (x0, x1) = range(all().map(|q| q.0).chain(shown), p.x_scale);
    let (y0, y1) = range(all().map(|q| q.1), p.y_scale);
    let size = |v: f64| (v * px).round() as i32;
    let label_font = (FONT, 14.0 * px);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 19.0 * px))
        .margin(size(8.0))
        .margin_right(size(18.0))
        .x_label_area_size(size(40.0))
        .y_label_area_size(size(62.0))
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .x_desc(&p.x_label)
        .y_desc(&p.y_label)
        .axis_desc_style((FONT, 15.0 * px))
        .draw()
        .map_err(err)?;
    // Ticks, grid lines and labels of our own (see `ticks`).
    let (pw, ph) = chart.plotting_area().dim_in_pixel();
    let char_w = 14.0 * px * 0.55;
    let x_room = |t: &[(f64, String)]| {
        let widest = t.iter().map(|(_, l)| l.chars().count()).max().unwrap_or(1);
        (pw as f64 / (char_w * (widest as f64 + 1.5))) as usize
    };
    let wanted = match p.x_scale {
        Scale::Log2Bytes => 64,
        _ => 8,
    };
    let mut xt = ticks(p.x_scale, x0, x1, wanted);
    let room = x_room(&xt);
    if xt.len() > room {
        xt = ticks(p.x_scale, x0, x1, room);
    }
    let yt = ticks(
        p.y_scale,
        y0,
        y1,
        ((ph as f64 / (14.0 * px * 2.2)) as usize).clamp(2, 7),
    );
    let grid = RGBColor(228, 228, 228);
    for (a, _) in &xt {
        chart
            .draw_series(LineSeries::new([(*a, y0), (*a, y1)], grid))
            .map_err(err)?;
    }
    for (a, _) in &yt {
        chart
            .draw_series(LineSeries::new([(x0, *a), (x1, *a)], grid))
            .map_err(err)?;
    }
    let base = area.get_base_pixel();
    let at = |x: f64, y: f64| {
        let (bx, by) = chart.backend_coord(&(x, y));
        (bx - base.0, by - base.1)
    };
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let tick = size(5.0);
    for (a, label) in &xt {
        let (x, y) = at(*a, y0);
        area.draw(&PathElement::new(vec![(x, y), (x, y + tick)], BLACK))
            .map_err(err)?;
        let style = label_font
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(label.clone(), (x, y + tick + size(2.0)), style))
            .map_err(err)?;
    }
    for (a, label) in &yt {
        let (x, y) = at(x0, *a);
        area.draw(&PathElement::new(vec![(x - tick, y), (x, y)], BLACK))
            .map_err(err)?;
        let style = label_font
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        area.draw(&Text::new(label.clone(), (x - tick - size(3.0), y), style))
            .map_err(err)?;
    }
    let stroke = size(2.0).max(1) as u32;
    for (s, pts) in p.series.iter().zip(&points) {
        let style = s.color.stroke_width(stroke);
        if s.dashed {
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
        if pts.len() <= MARKERS_UP_TO {
            let r = size(4.0);
            chart
                .draw_series(
                    pts.iter()
                        .map(|&q| Circle::new(q, r, marker(style, s.dashed))),
                )
                .map_err(err)?;
        }
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
    fn ticks_at_round_values_and_every_measured_size() {
        // busbw: 1K .. 64M, a label at every size.
        let (lo, hi) = (10.0 - 0.6, 26.0 + 0.6);
        let t: Vec<String> = ticks(Scale::Log2Bytes, lo, hi, 64)
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(t.len(), 17);
        assert_eq!((t[0].as_str(), t[16].as_str()), ("1K", "64M"));
        // Log axes: 1, 2, 5 × 10^k only.
        let t: Vec<String> = ticks(Scale::Log10, -1.5, 0.5, 8)
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(t, ["0.05", "0.1", "0.2", "0.5", "1", "2"]);
        // A narrow linear range: steps of 1, 2 or 5 × 10^k, no two labels
        // alike, at least two.
        for (lo, hi, room) in [
            (0.9615, 0.9655, 3),
            (0.0, 300.0, 8),
            (0.26, 0.30, 2),
            (5.0, 5.001, 2),
        ] {
            let t = ticks(Scale::Linear, lo, hi, room);
            let labels: std::collections::HashSet<&String> = t.iter().map(|t| &t.1).collect();
            assert!(t.len() >= 2, "{lo}..{hi}: {t:?}");
            assert_eq!(labels.len(), t.len(), "{lo}..{hi}: {t:?}");
        }
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
                x_range: None,
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
