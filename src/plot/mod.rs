//! `ringtrain plot`: a PNG of the training curves in a `--metrics-out` file
//! or of the bus bandwidth in `bench allreduce --json` output. Which one is
//! decided by the records themselves. Needs no MPI.
//!
//! Reading (this file) → a [`Figure`] of panels and series
//! ([`metrics`], [`allreduce`]) → pixels and PNG bytes ([`draw`]).

pub mod allreduce;
pub mod curves;
pub mod draw;
pub mod metrics;

use std::path::Path;

use plotters::style::RGBColor;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One JSON object of the input and the line it starts on (1-based).
#[derive(Debug, Clone)]
pub struct Record {
    pub line: usize,
    pub fields: Map<String, Value>,
}

impl Record {
    /// A number field (`null` and absence are `None`).
    pub fn num(&self, key: &str) -> Option<f64> {
        self.fields.get(key).and_then(Value::as_f64)
    }
}

/// What an input file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `train --metrics-out`: `"type": "train"` and `"type": "eval"` lines.
    Metrics,
    /// `bench allreduce --json`: one object per run (`"bench": "allreduce"`).
    Allreduce,
    /// Named curves, one object each (`"curve": NAME`, benches/local_sgd.sh).
    Curves,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Metrics => "training metrics",
            Kind::Allreduce => "all-reduce bandwidth",
            Kind::Curves => "curves",
        }
    }
}

/// How values map onto an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Powers of ten (values must be positive).
    Log10,
    /// Byte sizes on a log2 axis, ticks at powers of two ("1M", "64M").
    Log2Bytes,
}

/// One curve: a name for the legend, a colour, and (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    /// Dashed line and hollow markers (the solid twin has filled ones).
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

/// One chart: its own axes and legend.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    /// The x range to show (data units) when it is wider than the points'
    /// (evaluations drawn against the whole run's steps).
    pub x_range: Option<(f64, f64)>,
    pub series: Vec<Series>,
}

impl Panel {
    pub fn has_points(&self) -> bool {
        self.series.iter().any(|s| !s.points.is_empty())
    }
}

/// A title over panels laid out in a grid, and one legend for all of them
/// under the panels (a series is known by its name and colour everywhere).
#[derive(Debug, Clone)]
pub struct Figure {
    pub title: String,
    /// The first panel spans the whole width above the others.
    pub wide_first: bool,
    pub panels: Vec<Panel>,
}

/// Line colours (Tableau 10), by series index.
pub fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Log10 when every value is positive and they span at least a factor of
/// ten (losses falling over a run); linear otherwise.
pub fn auto_scale<'a>(series: impl IntoIterator<Item = &'a Series>) -> Scale {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for s in series {
        for &(_, y) in &s.points {
            lo = lo.min(y);
            hi = hi.max(y);
        }
    }
    if lo > 0.0 && hi.is_finite() && hi / lo >= 10.0 {
        Scale::Log10
    } else {
        Scale::Linear
    }
}

/// The records of a file: JSON Lines (one object per line, blank lines
/// skipped), or one or more objects spread over lines (`jq .` output).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_records(&text).map_err(|msg| Error::data(path, msg))
}

/// [`read_records`] on text; the error names the line.
pub fn parse_records(text: &str) -> std::result::Result<Vec<Record>, String> {
    if text.trim().is_empty() {
        return Err("empty file: nothing to plot".into());
    }
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(t) {
            Ok(Value::Object(fields)) => out.push(Record {
                line: i + 1,
                fields,
            }),
            Ok(_) => return Err(format!("line {}: expected a JSON object", i + 1)),
            Err(e) => {
                if out.is_empty() {
                    if let Some(records) = parse_multiline(text) {
                        return Ok(records);
                    }
                }
                return Err(format!(
                    "line {}: malformed JSON: {}",
                    i + 1,
                    without_position(&e)
                ));
            }
        }
    }
    Ok(out)
}

/// Objects spanning several lines, back to back; `None` unless all parse.
fn parse_multiline(text: &str) -> Option<Vec<Record>> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut out = vec![];
    let mut start = 0;
    while let Some(v) = stream.next() {
        let Ok(Value::Object(fields)) = v else {
            return None;
        };
        let skipped = text[start..].len() - text[start..].trim_start().len();
        let line = 1 + text[..start + skipped].matches('\n').count();
        out.push(Record { line, fields });
        start = stream.byte_offset();
    }
    Some(out)
}

/// serde_json's message without its " at line 1 column N" (the line is
/// ours to say), keeping the column.
fn without_position(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &msg[..i], e.column()),
        None => msg,
    }
}

/// The kind of one record, or why it is none.
fn kind_of(r: &Record) -> std::result::Result<Kind, String> {
    if let Some(t) = r.fields.get("type") {
        return match t.as_str() {
            Some("train" | "eval" | "tasks" | "partition" | "run") => Ok(Kind::Metrics),
            _ => Err(format!(
                "line {}: unknown record type {t} (a metrics file has \"run\", \"train\", \"eval\", \"tasks\" and \"partition\" records)",
                r.line
            )),
        };
    }
    if r.fields.contains_key("curve") {
        return Ok(Kind::Curves);
    }
    if let Some(b) = r.fields.get("bench") {
        return match b.as_str() {
            Some("allreduce") => Ok(Kind::Allreduce),
            _ => Err(format!(
                "line {}: output of bench {b}: only `bench allreduce --json` can be plotted",
                r.line
            )),
        };
    }
    Err(format!(
        "line {}: unknown record: neither a --metrics-out record (\"type\": \"train\"/\"eval\") nor `bench allreduce --json` output (\"bench\": \"allreduce\")",
        r.line
    ))
}

/// The kind all records share (the first decides; any other is an error).
pub fn detect(records: &[Record]) -> std::result::Result<Kind, String> {
    let first = records.first().ok_or("no records: nothing to plot")?;
    let kind = kind_of(first)?;
    for r in &records[1..] {
        let k = kind_of(r)?;
        if k != kind {
            return Err(format!(
                "line {}: a record of {} in a file of {} (line {})",
                r.line,
                k.name(),
                kind.name(),
                first.line
            ));
        }
    }
    Ok(kind)
}

/// The figure for a file's records; `name` (the file's stem) goes in the
/// title unless `title` replaces it.
pub fn figure(
    records: &[Record],
    name: &str,
    title: Option<&str>,
) -> std::result::Result<(Kind, Figure), String> {
    let kind = detect(records)?;
    let fig = match kind {
        Kind::Metrics => metrics::figure(records, name, title)?,
        Kind::Allreduce => allreduce::figure(records, name, title)?,
        Kind::Curves => curves::figure(records, name, title)?,
    };
    if !fig.panels.iter().any(Panel::has_points) {
        return Err(format!(
            "no values to plot in these {} records",
            kind.name()
        ));
    }
    Ok((kind, fig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_with_blank_lines() {
        let r = parse_records("{\"type\":\"train\"}\n\n  {\"a\":1}\n").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].line, r[1].line), (1, 3));
    }

    #[test]
    fn malformed_line_is_named() {
        let e = parse_records("{\"type\":\"train\"}\n{\"type\":\"train\"}\n{\"type\": tr\n")
            .unwrap_err();
        assert!(e.starts_with("line 3: malformed JSON"), "{e}");
        assert!(!e.contains("at line 1"), "{e}");
        let e = parse_records("[1, 2]\n").unwrap_err();
        assert_eq!(e, "line 1: expected a JSON object");
        assert!(parse_records(" \n\n").unwrap_err().contains("empty"));
    }

    #[test]
    fn pretty_printed_objects() {
        let r = parse_records("{\n  \"bench\": \"allreduce\"\n}\n\n{\n \"bench\": 1\n}\n").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].line, r[1].line), (1, 5));
    }

    #[test]
    fn kinds_are_detected_and_never_mixed() {
        let rec = |s: &str| parse_records(s).unwrap();
        assert_eq!(detect(&rec("{\"type\":\"eval\"}")), Ok(Kind::Metrics));
        assert_eq!(
            detect(&rec("{\"bench\":\"allreduce\"}")),
            Ok(Kind::Allreduce)
        );
        let e = detect(&rec("{\"type\":\"train\"}\n{\"type\":\"header\"}")).unwrap_err();
        assert!(
            e.starts_with("line 2: unknown record type \"header\""),
            "{e}"
        );
        let e = detect(&rec("{\"type\":\"train\"}\n{\"bench\":\"allreduce\"}")).unwrap_err();
        assert!(e.starts_with("line 2: a record of all-reduce"), "{e}");
        let e = detect(&rec("{\"bench\":\"train\"}")).unwrap_err();
        assert!(e.contains("only `bench allreduce --json`"), "{e}");
        assert!(
            detect(&rec("{\"x\":1}"))
                .unwrap_err()
                .contains("unknown record")
        );
    }

    #[test]
    fn log_scale_only_for_positive_values_over_a_decade() {
        let s = |pts: Vec<(f64, f64)>| Series {
            name: "a".into(),
            color: color(0),
            dashed: false,
            points: pts,
        };
        assert_eq!(auto_scale(&[s(vec![(1.0, 2.0), (2.0, 0.1)])]), Scale::Log10);
        assert_eq!(
            auto_scale(&[s(vec![(1.0, 2.0), (2.0, 0.5)])]),
            Scale::Linear
        );
        assert_eq!(
            auto_scale(&[s(vec![(1.0, 2.0), (2.0, 0.0)])]),
            Scale::Linear
        );
        assert_eq!(auto_scale(&[s(vec![])]), Scale::Linear);
    }
}
