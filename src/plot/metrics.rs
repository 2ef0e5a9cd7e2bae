//! The figure of a `--metrics-out` file: training losses per step (total
//! and per task), then one panel per kind of validation value the eval
//! records hold (loss, accuracy, AUC, RMSE, R²), one line per task; with
//! moving task weights their λ_t, and with task diagnostics ("tasks"
//! records) the gradient cosine of each pair of tasks.

use plotters::style::BLACK;
use serde_json::Value;

use super::{Figure, Panel, Record, Scale, Series, auto_scale, color};

/// The validation values an eval record may hold per task, in panel order:
/// (key, panel title, y label).
const EVAL_VALUES: [(&str, &str, &str); 5] = [
    ("loss", "validation loss", "loss"),
    ("accuracy", "validation accuracy", "accuracy"),
    ("auc", "validation AUC", "AUC"),
    ("rmse", "validation RMSE", "RMSE"),
    ("r2", "validation R²", "R²"),
];

/// Task names in order of first appearance, and their series per value.
struct TaskSeries {
    names: Vec<String>,
    /// `points[task][value]`; value 0 is the training loss, then
    /// `EVAL_VALUES` in order.
    points: Vec<Vec<Vec<(f64, f64)>>>,
}

impl TaskSeries {
    fn task(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.points.push(vec![vec![]; 1 + EVAL_VALUES.len()]);
                self.names.len() - 1
            }
        }
    }

    fn series(&self, value: usize) -> Vec<Series> {
        self.names
            .iter()
            .zip(&self.points)
            .enumerate()
            .filter(|(_, (_, p))| !p[value].is_empty())
            .map(|(i, (n, p))| Series {
                name: n.clone(),
                color: color(i),
                dashed: false,
                points: p[value].clone(),
            })
            .collect()
    }
}

fn step(r: &Record) -> Result<f64, String> {
    r.num("step")
        .ok_or_else(|| format!("line {}: record without a numeric \"step\"", r.line))
}

/// A record's object field (absent is empty).
fn object<'a>(
    r: &'a Record,
    key: &str,
) -> Result<Option<&'a serde_json::Map<String, Value>>, String> {
    match r.fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(format!("line {}: \"{key}\" is not an object", r.line)),
    }
}

pub fn figure(records: &[Record], name: &str, title: Option<&str>) -> Result<Figure, String> {
    let mut total = vec![];
    let mut tasks = TaskSeries {
        names: vec![],
        points: vec![],
    };
    let mut lambdas = Pairs::default();
    let mut cosines = Pairs::default();
    for r in records {
        let x = step(r)?;
        match r.fields.get("type").and_then(Value::as_str) {
            // `--balance`'s partitions and the run's set-up: not drawn.
            Some("partition" | "run") => {}
            Some("tasks") => {
                for (pair, c) in object(r, "cosines")?.into_iter().flatten() {
                    cosines.push(pair, x, c.as_f64());
                }
            }
            Some("train") => {
                for (task, l) in object(r, "task_weights")?.into_iter().flatten() {
                    lambdas.push(task, x, l.as_f64());
                }
                if let Some(l) = r.num("loss") {
                    total.push((x, l));
                }
                for (task, l) in object(r, "losses")?.into_iter().flatten() {
                    let t = tasks.task(task);
                    if let Some(l) = l.as_f64() {
                        tasks.points[t][0].push((x, l));
                    }
                }
            }
            _ => {
                for (task, m) in object(r, "tasks")?.into_iter().flatten() {
                    let t = tasks.task(task);
                    let Value::Object(m) = m else {
                        return Err(format!(
                            "line {}: task {task:?} holds no object of metrics",
                            r.line
                        ));
                    };
                    for (v, (key, ..)) in EVAL_VALUES.iter().enumerate() {
                        if let Some(y) = m.get(*key).and_then(Value::as_f64) {
                            tasks.points[t][1 + v].push((x, y));
                        }
                    }
                }
            }
        }
    }

    let mut panels = vec![];
    let mut train = vec![];
    if !total.is_empty() {
        train.push(Series {
            name: "total".into(),
            color: BLACK,
            dashed: false,
            points: total,
        });
    }
    train.extend(tasks.series(0));
    panels.push(panel("training loss", "loss", train, true));
    for (v, &(_, title, y)) in EVAL_VALUES.iter().enumerate() {
        // Losses and errors may fall over decades; scores stay linear.
        let may_log = matches!(v, 0 | 3);
        panels.push(panel(title, y, tasks.series(1 + v), may_log));
    }
    // λ_t only when they move (a static run has flat lines at its λ).
    if lambdas.moves() {
        let series = lambdas.series(|name| tasks.names.iter().position(|n| n == name));
        panels.push(panel("task weights λ", "λ", series, false));
    }
    let series = cosines.series(|_| None);
    panels.push(panel(
        "gradient cosine, last shared layer",
        "cosine",
        series,
        false,
    ));
    panels.retain(Panel::has_points);
    // Every panel over the same steps, from 0 to the last one recorded:
    // evaluations line up under the training curve, and a single one sits
    // at its step, not alone in the middle of a made-up range.
    let last = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0)))
        .fold(0.0, f64::max);
    for p in &mut panels {
        p.x_range = Some((0.0, last.max(1.0)));
    }
    Ok(Figure {
        title: title.map_or_else(|| format!("training: {name}"), str::to_string),
        wide_first: true,
        panels,
    })
}

/// Named series collected in order of first appearance (task weights per
/// task, cosines per pair "a|b").
#[derive(Default)]
struct Pairs {
    names: Vec<String>,
    points: Vec<Vec<(f64, f64)>>,
}

impl Pairs {
    fn push(&mut self, name: &str, x: f64, y: Option<f64>) {
        let i = match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.points.push(vec![]);
                self.names.len() - 1
            }
        };
        // A cosine is null when a task had no gradient: a gap, no point.
        if let Some(y) = y {
            self.points[i].push((x, y));
        }
    }

    fn moves(&self) -> bool {
        self.points.iter().any(|p| {
            p.first()
                .is_some_and(|&(_, y0)| p.iter().any(|&(_, y)| y != y0))
        })
    }

    /// One series per name; `task_color` keeps a task's colour of the
    /// other panels (None: colours after the tasks').
    fn series(&self, task_color: impl Fn(&str) -> Option<usize>) -> Vec<Series> {
        self.names
            .iter()
            .zip(&self.points)
            .enumerate()
            .map(|(i, (n, p))| Series {
                name: n.replace('|', " · "),
                color: color(task_color(n).unwrap_or(i + 5)),
                dashed: false,
                points: p.clone(),
            })
            .collect()
    }
}

fn panel(title: &str, y: &str, series: Vec<Series>, may_log: bool) -> Panel {
    let y_scale = if may_log {
        auto_scale(&series)
    } else {
        Scale::Linear
    };
    let y_label = match y_scale {
        Scale::Log10 => format!("{y} (log scale)"),
        _ => y.to_string(),
    };
    Panel {
        title: title.to_string(),
        x_label: "step".into(),
        y_label,
        x_scale: Scale::Linear,
        y_scale,
        x_range: None,
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_records;
    use super::*;

    const RUN: &str = r#"{"type":"train","step":1,"loss":3.0,"losses":{"a":2.0,"b":1.0},"lr":0.1}
{"type":"train","step":2,"loss":0.2,"losses":{"a":0.15,"b":0.05}}
{"type":"eval","step":2,"tasks":{"a":{"loss":0.1,"count":5,"accuracy":0.9,"baseline_accuracy":0.5},"b":{"loss":0.2,"count":5,"rmse":0.3,"r2":0.7}}}
"#;

    #[test]
    fn panels_per_value_and_a_line_per_task() {
        let fig = figure(&parse_records(RUN).unwrap(), "run1", None).unwrap();
        assert_eq!(fig.title, "training: run1");
        let titles: Vec<&str> = fig.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "training loss",
                "validation loss",
                "validation accuracy",
                "validation RMSE",
                "validation R²"
            ]
        );
        let train = &fig.panels[0];
        let names: Vec<&str> = train.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["total", "a", "b"]);
        assert_eq!(train.series[0].points, [(1.0, 3.0), (2.0, 0.2)]);
        // 3.0 down to 0.05: a log axis.
        assert_eq!(train.y_scale, Scale::Log10);
        assert_eq!(fig.panels[2].series.len(), 1);
        assert_eq!(fig.panels[2].series[0].points, [(2.0, 0.9)]);
        // Task b keeps its colour in every panel.
        assert_eq!(fig.panels[3].series[0].color, train.series[2].color);
    }

    #[test]
    fn moving_task_weights_and_cosines_get_panels_of_their_own() {
        let run = r#"{"type":"train","step":1,"loss":3.0,"losses":{"a":2.0,"b":1.0},"task_weights":{"a":1.0,"b":1.0}}
{"type":"tasks","step":1,"task_weights":{"a":1.0,"b":1.0},"grad_norms":{"a":0.5,"b":0.2},"cosines":{"a|b":-0.4}}
{"type":"train","step":2,"loss":2.0,"losses":{"a":1.0,"b":1.0},"task_weights":{"a":1.2,"b":0.8}}
{"type":"tasks","step":2,"task_weights":{"a":1.2,"b":0.8},"grad_norms":{"a":0.5,"b":0.0},"cosines":{"a|b":null}}
"#;
        let fig = figure(&parse_records(run).unwrap(), "r", None).unwrap();
        let titles: Vec<&str> = fig.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "training loss",
                "task weights λ",
                "gradient cosine, last shared layer"
            ]
        );
        let lambda = &fig.panels[1];
        assert_eq!(lambda.series[1].points, [(1.0, 1.0), (2.0, 0.8)]);
        // Task b keeps its colour; the null cosine is a gap.
        assert_eq!(lambda.series[1].color, fig.panels[0].series[2].color);
        assert_eq!(fig.panels[2].series[0].name, "a · b");
        assert_eq!(fig.panels[2].series[0].points, [(1.0, -0.4)]);
        // Records of `--balance` do not stop the plot.
        let with_partition = format!(
            "{run}{}\n",
            r#"{"type":"partition","step":2,"partition":[30,34]}"#
        );
        let again = figure(&parse_records(&with_partition).unwrap(), "r", None).unwrap();
        assert_eq!(again.panels.len(), fig.panels.len());
        // Static weights draw no λ panel.
        let flat = run.replace("1.2", "1.0").replace("0.8", "1.0");
        let fig = figure(&parse_records(&flat).unwrap(), "r", None).unwrap();
        assert!(fig.panels.iter().all(|p| p.title != "task weights λ"));
    }

    #[test]
    fn missing_step_or_bad_shapes_are_named() {
        let e = figure(
            &parse_records("{\"type\":\"train\",\"loss\":1}").unwrap(),
            "r",
            None,
        )
        .unwrap_err();
        assert_eq!(e, "line 1: record without a numeric \"step\"");
        let e = figure(
            &parse_records("{\"type\":\"eval\",\"step\":1,\"tasks\":[1]}").unwrap(),
            "r",
            Some("T"),
        )
        .unwrap_err();
        assert_eq!(e, "line 1: \"tasks\" is not an object");
    }
}
