//! The column mapping: `tasks.toml`'s tasks plus its optional `inputs`
//! and per-task `columns`, resolved against a header's names.

use std::path::Path;

use crate::data::dir::tasks_from_table;
use crate::error::{Error, Result};
use crate::tasks::TaskSpec;

/// The column mapping of `tasks.toml`.
pub(super) struct Mapping {
    /// Input column names or `*` patterns; None: every column not used by a task.
    pub(super) inputs: Option<Vec<String>>,
    /// Per task, its label column names (label_dim of them).
    pub(super) task_columns: Vec<Vec<String>>,
}

/// Reads `tasks.toml`: the tasks as in the directory format, plus the
/// optional top-level `inputs` and per-task `columns`.
pub(super) fn read_tasks(path: &Path) -> Result<(Vec<TaskSpec>, Mapping)> {
    let bad = |msg: String| Error::data(path, msg);
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut table: toml::Table = text.parse().map_err(|e| bad(format!("{e}")))?;
    let inputs = match table.remove("inputs") {
        None => None,
        Some(v) => Some(string_list(&v).ok_or_else(|| {
            bad("inputs: expected a list of column names or patterns, e.g. [\"x*\"]".into())
        })?),
    };
    // Take each task's `columns` out before the shared checks see it.
    let mut given: Vec<Option<Vec<String>>> = vec![];
    if let Some(toml::Value::Array(list)) = table.get_mut("task") {
        for (i, t) in list.iter_mut().enumerate() {
            let Some(t) = t.as_table_mut() else { continue };
            given.push(match t.remove("columns") {
                None => None,
                Some(v) => Some(string_list(&v).ok_or_else(|| {
                    bad(format!(
                        "task {}: columns: expected a column name or a list of them",
                        i + 1
                    ))
                })?),
            });
        }
    }
    let tasks = tasks_from_table(path, table)?;
    let mut task_columns = vec![];
    for (t, cols) in tasks.iter().zip(given) {
        let d = t.kind.label_dim();
        let cols = cols.unwrap_or_else(|| match d {
            1 => vec![t.name.clone()],
            _ => (0..d).map(|j| format!("{}_{j}", t.name)).collect(),
        });
        if cols.len() != d {
            return Err(bad(format!(
                "task '{}' ({} with {d} label column(s)) lists {} column(s)",
                t.name,
                t.kind.name(),
                cols.len()
            )));
        }
        task_columns.push(cols);
    }
    Ok((
        tasks,
        Mapping {
            inputs,
            task_columns,
        },
    ))
}

/// A TOML string, or a non-empty list of strings.
fn string_list(v: &toml::Value) -> Option<Vec<String>> {
    match v {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| x.as_str().map(String::from))
            .collect::<Option<Vec<_>>>(),
        _ => None,
    }
}

/// The header names, shortened for messages.
fn header_list(names: &[String]) -> String {
    const SHOW: usize = 12;
    let mut s = names
        .iter()
        .take(SHOW)
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOW {
        s += &format!(", ... ({} columns)", names.len());
    }
    s
}

/// The field index of column `name`; it must appear exactly once.
pub(super) fn find_one(path: &Path, names: &[String], name: &str, what: &str) -> Result<usize> {
    let mut hits = names.iter().enumerate().filter(|(_, n)| *n == name);
    match (hits.next(), hits.next()) {
        (Some((i, _)), None) => Ok(i),
        (Some(_), Some(_)) => Err(Error::data(
            path,
            format!("column '{name}' ({what}) appears more than once in the header"),
        )),
        (None, _) => Err(Error::data(
            path,
            format!(
                "no column '{name}' ({what}) in the header; it has {}",
                header_list(names)
            ),
        )),
    }
}

/// Field indices of the label columns, in task-column order.
pub(super) fn find_columns(
    path: &Path,
    names: &[String],
    label_names: &[String],
    tasks: &[TaskSpec],
    mapping: &Mapping,
) -> Result<Vec<usize>> {
    let mut out = vec![];
    let owners = tasks.iter().zip(&mapping.task_columns);
    for (t, cols) in owners {
        for c in cols {
            out.push(find_one(path, names, c, &format!("task '{}'", t.name))?);
        }
    }
    debug_assert_eq!(out.len(), label_names.len());
    Ok(out)
}

/// Whether `name` matches a pattern where `*` stands for any text.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    true
}

/// The input column names, in the order of the train header: those that
/// `inputs` names or matches, or every column no task uses.
pub(super) fn input_columns(
    path: &Path,
    names: &[String],
    label_fields: &[usize],
    mapping: &Mapping,
) -> Result<Vec<String>> {
    let chosen: Vec<String> = match &mapping.inputs {
        None => names
            .iter()
            .enumerate()
            .filter(|(i, _)| !label_fields.contains(i))
            .map(|(_, n)| n.clone())
            .collect(),
        Some(patterns) => {
            for p in patterns {
                if !names.iter().any(|n| glob(p, n)) {
                    return Err(Error::data(
                        path,
                        format!(
                            "inputs: '{p}' (tasks.toml) matches no column; the header has {}",
                            header_list(names)
                        ),
                    ));
                }
            }
            names
                .iter()
                .filter(|n| patterns.iter().any(|p| glob(p, n)))
                .cloned()
                .collect()
        }
    };
    if chosen.is_empty() {
        return Err(Error::data(
            path,
            "no input columns: every column is a task's label",
        ));
    }
    Ok(chosen)
}

/// No column may be both an input and a label, or the label of two tasks.
pub(super) fn check_distinct(
    path: &Path,
    names: &[String],
    inputs: &[usize],
    labels: &[usize],
) -> Result<()> {
    let all: Vec<usize> = labels.iter().chain(inputs).copied().collect();
    for (k, f) in all.iter().enumerate() {
        if all[..k].contains(f) {
            return Err(Error::data(
                path,
                format!(
                    "column '{}' is used twice (as a label and an input, or by two tasks)",
                    names[*f]
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        assert!(glob("x*", "x1") && glob("*_in", "a_in") && glob("a*b*c", "aXbYc"));
        assert!(!glob("x*", "y1") && !glob("a*b*c", "acb") && !glob("ab*ba", "aba"));
    }
}
