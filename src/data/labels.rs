//! The label rules shared by every dataset format: which raw values mean
//! "missing", and which values a task accepts. Each format words its own
//! messages (they name rows, lines and columns differently); the rules
//! live only here.

use crate::tasks::TaskKind;

/// Whether a raw classify/binary label value means "missing" (-1 or NaN).
pub fn is_missing(v: f32) -> bool {
    v == -1.0 || v.is_nan()
}

/// Turns a missing classify/binary label (`values[0]`, raw) into NaN, the
/// one missing value of [`super::Dataset::fill`]; regress labels are left
/// as they are (NaN already means missing there).
pub fn mark_missing(kind: TaskKind, values: &mut [f32]) {
    if !matches!(kind, TaskKind::Regress { .. }) && is_missing(values[0]) {
        values[0] = f32::NAN;
    }
}

/// What is wrong with one task's raw label values in one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BadLabel {
    /// A classify label that is neither a whole number in 0..classes nor
    /// missing.
    OutOfRange { value: f32, classes: usize },
    /// A binary label that is neither 0, 1 nor missing.
    NotBinary { value: f32 },
    /// A regress label that is ±∞; `column` is its place within the task.
    Infinite { column: usize, value: f32 },
}

/// Checks the raw label values (`kind.label_dim()` of them) of one task
/// in one row.
pub fn check_label(kind: TaskKind, values: &[f32]) -> Result<(), BadLabel> {
    match kind {
        TaskKind::Classify { classes } => {
            let v = values[0];
            let in_range = v >= 0.0 && v < classes as f32 && v.fract() == 0.0;
            if !(in_range || is_missing(v)) {
                return Err(BadLabel::OutOfRange { value: v, classes });
            }
        }
        TaskKind::Binary => {
            let v = values[0];
            if !(v == 0.0 || v == 1.0 || is_missing(v)) {
                return Err(BadLabel::NotBinary { value: v });
            }
        }
        TaskKind::Regress { .. } => {
            if let Some(j) = values.iter().position(|v| v.is_infinite()) {
                return Err(BadLabel::Infinite {
                    column: j,
                    value: values[j],
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let c = TaskKind::Classify { classes: 3 };
        for ok in [0.0, 2.0, -1.0, f32::NAN] {
            assert_eq!(check_label(c, &[ok]), Ok(()), "{ok}");
        }
        for bad in [3.0, 1.5, -2.0, f32::INFINITY] {
            assert!(
                matches!(
                    check_label(c, &[bad]),
                    Err(BadLabel::OutOfRange { classes: 3, .. })
                ),
                "{bad}"
            );
        }
        for ok in [0.0, 1.0, -1.0, f32::NAN] {
            assert_eq!(check_label(TaskKind::Binary, &[ok]), Ok(()), "{ok}");
        }
        assert_eq!(
            check_label(TaskKind::Binary, &[2.0]),
            Err(BadLabel::NotBinary { value: 2.0 })
        );
        let r = TaskKind::Regress { dim: 3 };
        assert_eq!(check_label(r, &[1.0, f32::NAN, -1.0]), Ok(()));
        assert_eq!(
            check_label(r, &[1.0, f32::NEG_INFINITY, f32::INFINITY]),
            Err(BadLabel::Infinite {
                column: 1,
                value: f32::NEG_INFINITY
            })
        );

        let mut v = [-1.0];
        mark_missing(c, &mut v);
        assert!(v[0].is_nan());
        let mut v = [-1.0, 2.0];
        mark_missing(r, &mut v);
        assert_eq!(v, [-1.0, 2.0]);
    }
}
