//! A config file key in the wrong table: name the table it belongs in.
//!
//! `lr` under `[train]` is a common slip; the TOML error ("unknown field
//! `lr`, expected one of ...") lists the keys of the table it is in, not
//! where `lr` goes. The tables and their keys are read off the defaults'
//! serialisation, so a new key needs no change here.

use super::TrainConfig;

/// A sentence naming the table(s) that do hold the unknown key of a TOML
/// error message, or None (not an unknown-key error, or no table has it).
pub fn wrong_table(toml_error: &str) -> Option<String> {
    let rest = toml_error.split("unknown field `").nth(1)?;
    let key = &rest[..rest.find('`')?];
    let defaults = serde_json::to_value(TrainConfig::default()).ok()?;
    let tables: Vec<String> = defaults
        .as_object()?
        .iter()
        .filter(|(_, v)| v.as_object().is_some_and(|t| t.contains_key(key)))
        .map(|(name, _)| format!("[{name}]"))
        .collect();
    if tables.is_empty() {
        return None;
    }
    Some(format!(
        "`{key}` belongs in {} (examples/train.toml lists every key in its table)",
        tables.join(" or ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_table_of_a_misplaced_key() {
        let text = "[train]\nlr = 0.1\n";
        let e = toml::from_str::<TrainConfig>(text).unwrap_err().to_string();
        assert_eq!(
            wrong_table(&e).as_deref(),
            Some("`lr` belongs in [optim] (examples/train.toml lists every key in its table)")
        );
    }

    #[test]
    fn says_nothing_about_a_key_no_table_has() {
        let e = toml::from_str::<TrainConfig>("[train]\nnosuchkey = 1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(wrong_table(&e), None);
        assert_eq!(wrong_table("some other error"), None);
    }
}
