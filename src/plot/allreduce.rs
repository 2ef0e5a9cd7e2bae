//! The figure of `bench allreduce --json` output: bus bandwidth against
//! message size, one colour per run (communicator, ranks, wire), in-place
//! solid with filled markers, out-of-place dashed with hollow ones. A file
//! may hold several runs, one object each (`... --json >> runs.json`).

use serde_json::Value;

use super::{Figure, Panel, Record, Scale, Series, color};

pub fn figure(records: &[Record], name: &str, title: Option<&str>) -> Result<Figure, String> {
    let mut series = vec![];
    let mut what = None;
    for (i, r) in records.iter().enumerate() {
        let rows = match r.fields.get("rows") {
            Some(Value::Array(rows)) => rows,
            _ => return Err(format!("line {}: no \"rows\" array", r.line)),
        };
        let text = |k: &str| r.fields.get(k).and_then(Value::as_str).unwrap_or("?");
        let mut label = format!(
            "{} ({} ranks, {})",
            text("comm"),
            fmt_ranks(r),
            text("wire")
        );
        let seen = series
            .iter()
            .filter(|s: &&Series| s.name.starts_with(&label))
            .count()
            / 2;
        if seen > 0 {
            label += &format!(" #{}", seen + 1);
        }
        let (mut in_place, mut out_of_place) = (vec![], vec![]);
        for (j, row) in rows.iter().enumerate() {
            let size = row
                .get("size")
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("line {}: row {} has no numeric \"size\"", r.line, j + 1))?;
            let busbw = |k: &str| row.get(k)?.get("busbw")?.as_f64();
            if let Some(b) = busbw("in_place") {
                in_place.push((size, b));
            }
            if let Some(b) = busbw("out_of_place") {
                out_of_place.push((size, b));
            }
            if what.is_none() {
                let t = |k: &str| row.get(k).and_then(Value::as_str).map(str::to_string);
                what = t("type").zip(t("redop"));
            }
        }
        for (points, place, dashed) in [
            (in_place, "in-place", false),
            (out_of_place, "out-of-place", true),
        ] {
            series.push(Series {
                name: format!("{label} {place}"),
                color: color(i),
                dashed,
                points,
            });
        }
    }
    series.retain(|s| !s.points.is_empty());
    let title = match (title, what) {
        (Some(t), _) => t.to_string(),
        (None, Some((ty, op))) => format!("all-reduce bus bandwidth: {name} ({ty} {op})"),
        (None, None) => format!("all-reduce bus bandwidth: {name}"),
    };
    Ok(Figure {
        title,
        wide_first: false,
        panels: vec![Panel {
            title: "busbw against message size".into(),
            x_label: "message size (bytes)".into(),
            y_label: "busbw (GB/s)".into(),
            x_scale: Scale::Log2Bytes,
            y_scale: Scale::Linear,
            x_range: None,
            series,
        }],
    })
}

fn fmt_ranks(r: &Record) -> String {
    r.fields
        .get("ranks")
        .and_then(Value::as_u64)
        .map_or("?".into(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::parse_records;
    use super::*;

    fn run(comm: &str, ranks: u32) -> String {
        format!(
            r#"{{"bench":"allreduce","comm":"{comm}","ranks":{ranks},"wire":"f32","rows":[{{"size":1024,"type":"float","redop":"sum","in_place":{{"busbw":1.5}},"out_of_place":{{"busbw":1.0}}}},{{"size":4096,"in_place":{{"busbw":2.5}},"out_of_place":{{"busbw":null}}}}]}}"#
        )
    }

    #[test]
    fn a_solid_and_a_dashed_line_per_run() {
        let text = [run("ring", 2), run("mpi", 2), run("ring", 2)].join("\n");
        let fig = figure(&parse_records(&text).unwrap(), "ar", None).unwrap();
        assert_eq!(fig.title, "all-reduce bus bandwidth: ar (float sum)");
        let p = &fig.panels[0];
        assert_eq!(p.x_scale, Scale::Log2Bytes);
        let names: Vec<&str> = p.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ring (2 ranks, f32) in-place",
                "ring (2 ranks, f32) out-of-place",
                "mpi (2 ranks, f32) in-place",
                "mpi (2 ranks, f32) out-of-place",
                "ring (2 ranks, f32) #2 in-place",
                "ring (2 ranks, f32) #2 out-of-place",
            ]
        );
        assert_eq!(p.series[0].points, [(1024.0, 1.5), (4096.0, 2.5)]);
        assert_eq!(p.series[1].points, [(1024.0, 1.0)]);
        assert!(!p.series[0].dashed && p.series[1].dashed);
        assert_eq!(p.series[0].color, p.series[1].color);
        assert_ne!(p.series[0].color, p.series[2].color);
    }

    #[test]
    fn rows_must_be_there() {
        let e = figure(
            &parse_records("{\"bench\":\"allreduce\"}").unwrap(),
            "x",
            None,
        )
        .unwrap_err();
        assert_eq!(e, "line 1: no \"rows\" array");
        let e = figure(
            &parse_records("{\"bench\":\"allreduce\",\"rows\":[{\"count\":1}]}").unwrap(),
            "x",
            None,
        )
        .unwrap_err();
        assert_eq!(e, "line 1: row 1 has no numeric \"size\"");
    }
}
