//! `[comm] overlap`: whether gradient buckets are all-reduced on a
//! communication thread while backward runs (`on`), after backward on the
//! compute thread (`off`), or as the run's shape says (`auto`, decided by
//! `train::overlap::decide` and printed in the header).

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// On when it can pay: more than one rank, more than one bucket, and a
    /// core free for the communication thread beside the GEMM threads.
    #[default]
    Auto,
    /// Always a communication thread (more than one rank).
    On,
    /// All-reduce after backward, on the compute thread.
    Off,
}

/// `overlap = true | false` (older configs) or `"auto" | "on" | "off"`.
impl<'de> Deserialize<'de> for Overlap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Overlap::On),
            Raw::Bool(false) => Ok(Overlap::Off),
            Raw::Name(s) => match s.as_str() {
                "auto" => Ok(Overlap::Auto),
                "on" => Ok(Overlap::On),
                "off" => Ok(Overlap::Off),
                _ => Err(serde::de::Error::custom(format!(
                    "overlap must be auto, on, off, true or false, not {s:?}"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Overlap;

    #[derive(serde::Deserialize)]
    struct C {
        overlap: Overlap,
    }

    #[test]
    fn reads_names_and_booleans() {
        for (text, want) in [
            ("overlap = true", Overlap::On),
            ("overlap = false", Overlap::Off),
            ("overlap = \"auto\"", Overlap::Auto),
            ("overlap = \"on\"", Overlap::On),
            ("overlap = \"off\"", Overlap::Off),
        ] {
            assert_eq!(toml::from_str::<C>(text).unwrap().overlap, want, "{text}");
        }
        assert!(toml::from_str::<C>("overlap = \"maybe\"").is_err());
        assert!(toml::from_str::<C>("overlap = 1").is_err());
        assert_eq!(serde_json::to_string(&Overlap::Auto).unwrap(), "\"auto\"");
    }
}
