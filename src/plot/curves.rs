//! The figure of named curves, one record per curve (what
//! benches/local_sgd.sh writes: validation metrics against training time,
//! one line per setting):
//!
//! ```text
//! {"curve": "local-H16", "x_label": "training wall time (s)",
//!  "points": {"shape accuracy": [[x, y], ...], "flag auc": [...]}}
//! ```
//!
//! One panel per key of `points` (in order of first appearance), one line
//! per record in each.

use serde_json::Value;

use super::{Figure, Panel, Record, Scale, Series, color};

pub fn figure(records: &[Record], name: &str, title: Option<&str>) -> Result<Figure, String> {
    let mut panels: Vec<Panel> = vec![];
    let mut x_label = String::from("x");
    for (i, r) in records.iter().enumerate() {
        let curve = r
            .fields
            .get("curve")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("line {}: \"curve\" is not a string", r.line))?;
        if let Some(x) = r.fields.get("x_label").and_then(Value::as_str) {
            x_label = x.to_string();
        }
        let points = match r.fields.get("points") {
            Some(Value::Object(p)) => p,
            _ => return Err(format!("line {}: no \"points\" object", r.line)),
        };
        for (key, pts) in points {
            let pts = pts
                .as_array()
                .ok_or_else(|| format!("line {}: points of {key} are not an array", r.line))?;
            let mut xy = vec![];
            for p in pts {
                let pair = p.as_array().filter(|a| a.len() == 2);
                let num = |j: usize| pair.and_then(|a| a[j].as_f64());
                match (num(0), num(1)) {
                    (Some(x), Some(y)) => xy.push((x, y)),
                    _ => return Err(format!("line {}: a point of {key} is not [x, y]", r.line)),
                }
            }
            let at = match panels.iter().position(|p| &p.title == key) {
                Some(j) => j,
                None => {
                    panels.push(Panel {
                        title: key.clone(),
                        x_label: String::new(),
                        y_label: key.clone(),
                        x_scale: Scale::Linear,
                        y_scale: Scale::Linear,
                        x_range: None,
                        series: vec![],
                    });
                    panels.len() - 1
                }
            };
            panels[at].series.push(Series {
                name: curve.to_string(),
                color: color(i),
                dashed: i >= 10,
                points: xy,
            });
        }
    }
    for p in &mut panels {
        p.x_label = x_label.clone();
    }
    Ok(Figure {
        title: title.map_or_else(|| format!("curves: {name}"), str::to_string),
        wide_first: false,
        panels,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse_records;
    use super::*;

    #[test]
    fn a_panel_per_key_and_a_line_per_record() {
        let r = parse_records(
            "{\"curve\":\"a\",\"x_label\":\"s\",\"points\":{\"acc\":[[1,0.5],[2,0.6]],\"auc\":[[1,0.7]]}}\n\
             {\"curve\":\"b\",\"points\":{\"acc\":[[1,0.4]]}}\n",
        )
        .unwrap();
        let f = figure(&r, "x", None).unwrap();
        assert_eq!(f.panels.len(), 2);
        assert_eq!(f.panels[0].series.len(), 2);
        assert_eq!(f.panels[0].x_label, "s");
        let bad = parse_records("{\"curve\":\"a\",\"points\":{\"acc\":[[1]]}}\n").unwrap();
        assert!(figure(&bad, "x", None).unwrap_err().contains("not [x, y]"));
    }
}
