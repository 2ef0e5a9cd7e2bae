//! The command line as a user reads it: every flag's default shown the
//! same way, the start-up flags once, and hints for common slips.
//!
//! Most `train` flags are `Option`s (unset: the config file's value, else
//! the default), so clap cannot show their defaults itself; they are read
//! off `TrainConfig::default()` here and written as clap writes its own
//! (`[default: …]`). A flag `--foo-bar` shows the default of the key
//! `foo_bar` of whichever config table has one (or the key `ALIASES`
//! names), so a new flag named after its key needs nothing here.

use clap::{Command, CommandFactory, FromArgMatches};
use serde_json::Value;

use super::Cli;
use crate::config::TrainConfig;

/// The flags every subcommand but `plot` takes (clap `global`): shown
/// once, in `ringtrain --help`, not in every subcommand's help.
pub const STARTUP_FLAGS: [&str; 3] = ["bootstrap", "rendezvous", "rendezvous_timeout"];

/// Flags whose config key has another name: (flag id, table, key).
const ALIASES: [(&str, &str, &str); 5] = [
    ("comm", "comm", "kind"),
    ("comm_timeout", "comm", "timeout"),
    ("checkpoint_every", "checkpoint", "every"),
    ("task_weighting", "tasks", "weighting"),
    ("task_stats_every", "tasks", "stats_every"),
];

/// The subcommands whose flags override a `TrainConfig`.
const CONFIG_COMMANDS: [&[&str]; 2] = [&["train"], &["bench", "train"]];

/// The full command, as `main` parses it and `--help` prints it.
pub fn command() -> Command {
    let mut cmd = Cli::command();
    let defaults = serde_json::to_value(TrainConfig::default()).expect("config serialises");
    for path in CONFIG_COMMANDS {
        cmd = mut_path(cmd, path, &|c| show_config_defaults(c, &defaults));
    }
    startup_flags_once(cmd)
}

/// Parses the process's arguments with [`command`].
pub fn try_parse() -> Result<Cli, clap::Error> {
    let mut cmd = command();
    let m = cmd.try_get_matches_from_mut(std::env::args_os())?;
    Cli::from_arg_matches(&m).map_err(|e| e.format(&mut cmd))
}

/// One more line for a usage error caused by a common slip.
pub fn usage_hint(args: &[String]) -> Option<&'static str> {
    let first = args.iter().skip(1).find(|a| a.starts_with('-'))?;
    let launcher = [
        "-np",
        "-n",
        "-N",
        "--np",
        "-H",
        "--host",
        "--hostfile",
        "-hostfile",
    ];
    launcher.contains(&first.as_str()).then_some(
        "tip: ranks are started by a launcher, which takes -np: \
         `mpirun -np 4 ringtrain train ...` (README.md, Starting ranks)",
    )
}

fn mut_path(cmd: Command, path: &[&str], f: &dyn Fn(Command) -> Command) -> Command {
    match path {
        [] => f(cmd),
        [first, rest @ ..] => cmd.mut_subcommand(*first, |c| mut_path(c, rest, f)),
    }
}

/// Hides the start-up flags (clap `global`, so they are also accepted
/// after the subcommand) from every help page and lists them once, after
/// the top-level one.
fn startup_flags_once(mut cmd: Command) -> Command {
    let mut lines = vec![];
    let mut long =
        String::from("Start-up options (every command but plot; before or after the command):\n");
    for id in STARTUP_FLAGS {
        let Some(a) = cmd.get_arguments().find(|a| a.get_id() == id) else {
            continue;
        };
        let value = a
            .get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| id.to_uppercase(), |v| v.to_string());
        let spec = format!("--{} <{value}>", a.get_long().unwrap_or(id));
        let mut text = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        let values: Vec<String> = a
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .collect();
        if !values.is_empty() {
            text += &format!(" ({})", values.join(", "));
        }
        if let Some(d) = a.get_default_values().first() {
            text += &format!(" [default: {}]", d.to_string_lossy());
        }
        // The long page: clap's own layout, value descriptions included.
        let help = a.get_long_help().or(a.get_help()).map(|h| h.to_string());
        long += &format!("      {spec}\n          {}\n", help.unwrap_or_default());
        let described: Vec<String> = a
            .get_possible_values()
            .iter()
            .filter_map(|v| Some(format!("          - {}: {}\n", v.get_name(), v.get_help()?)))
            .collect();
        if !described.is_empty() {
            long += "\n          Possible values:\n";
            long += &described.concat();
        }
        if let Some(d) = a.get_default_values().first() {
            long += &format!("\n          [default: {}]\n", d.to_string_lossy());
        }
        long.push('\n');
        lines.push((spec, text));
        cmd = cmd.mut_arg(id, |a| a.hide(true));
    }
    let width = lines.iter().map(|l| l.0.len()).max().unwrap_or(0);
    let mut section =
        String::from("Start-up options (every command but plot; before or after the command):\n");
    for (spec, text) in lines {
        section += &format!("      {spec:<width$}  {text}\n");
    }
    cmd.after_help(section)
        .after_long_help(long.trim_end().to_string())
}

/// Appends `[default: …]` to every flag of `cmd` that has a config
/// default and shows none yet.
fn show_config_defaults(mut cmd: Command, defaults: &Value) -> Command {
    let ids: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.get_default_values().is_empty() && !a.is_hide_default_value_set())
        .map(|a| a.get_id().to_string())
        .collect();
    for id in ids {
        let Some(shown) = config_default(defaults, &id) else {
            continue;
        };
        cmd = cmd.mut_arg(&id, |a| {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            let long = a
                .get_long_help()
                .map_or_else(|| help.clone(), |h| h.to_string());
            a.help(format!("{help} [default: {shown}]"))
                .long_help(format!("{long}\n\n[default: {shown}]"))
        });
    }
    cmd
}

/// The default of flag `id` as the user would type it, if the config has
/// one (a `null` default, "unset", shows none).
pub fn config_default(defaults: &Value, id: &str) -> Option<String> {
    let value = match ALIASES.iter().find(|(flag, ..)| *flag == id) {
        Some((_, table, key)) => defaults.get(table)?.get(key)?,
        None => defaults
            .as_object()?
            .values()
            .find_map(|t| t.as_object()?.get(id))?,
    };
    match value {
        Value::Number(n) if n.is_f64() => Some(format!("{}", n.as_f64()? as f32)),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|v| v.as_u64().map(|n| n.to_string()))
                .collect();
            Some(parts?.join(","))
        }
        _ => None,
    }
}
