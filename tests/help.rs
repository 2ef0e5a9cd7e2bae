//! What a user reads before running anything: `--help` of every command
//! (clap's own output, parsed), and the `ringtrain` command lines of the
//! README, which must parse as written.

mod common;

use std::process::Command;

/// `ringtrain ARGS` (no launcher), stdout.
fn help(args: &[&str]) -> String {
    let out = common::without_launcher_env(Command::new(common::bin()))
        .args(args)
        .output()
        .expect("run ringtrain");
    assert!(out.status.success(), "ringtrain {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The subcommands a help page lists under "Commands:" (without `help`).
fn subcommands(page: &str) -> Vec<String> {
    page.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect()
}

/// Every command path: [], [train], [bench, allreduce], ...
fn all_commands() -> Vec<Vec<String>> {
    let mut out = vec![];
    let mut todo = vec![vec![]];
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        for sub in subcommands(&help(&args)) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        out.push(path);
    }
    out
}

/// (flag spec, description) of every option line of a short (`-h`) page:
/// clap puts the description after a gap of two or more spaces, or, when
/// the line would be too long, on the next line, indented further.
fn options(page: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = page.lines().collect();
    let mut out = vec![];
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim();
        if !(l.starts_with("  ") && t.starts_with('-')) {
            continue;
        }
        out.push(match t.find("  ") {
            Some(k) => (t[..k].to_string(), t[k..].trim().to_string()),
            None => {
                let next = lines.get(i + 1).copied().unwrap_or("");
                let indent = |s: &str| s.len() - s.trim_start().len();
                let text = if indent(next) > indent(l) && !next.trim().starts_with('-') {
                    next.trim().to_string()
                } else {
                    String::new()
                };
                (t.to_string(), text)
            }
        });
    }
    out
}

#[test]
fn every_flag_has_a_description_and_defaults_read_alike() {
    let commands = all_commands();
    assert!(commands.len() >= 8, "{commands:?}");
    for path in &commands {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("-h");
        let page = help(&args);
        for (flag, text) in options(&page) {
            assert!(
                !text.is_empty(),
                "ringtrain {path:?}: {flag} has no description\n{page}"
            );
            // One way to show a default: clap's `[default: …]`.
            assert!(
                !text.contains("(default"),
                "ringtrain {path:?}: {flag}: {text}"
            );
            for (i, _) in text.match_indices("default:") {
                assert!(
                    text[..i].ends_with('['),
                    "ringtrain {path:?}: {flag}: {text}"
                );
            }
        }
        // The start-up flags once, at the top (not in plot, not anywhere
        // below the top).
        let startup = page.matches("--rendezvous-timeout").count();
        assert_eq!(
            startup,
            usize::from(path.is_empty()),
            "ringtrain {path:?}\n{page}"
        );
    }
}

#[test]
fn train_help_shows_the_config_defaults_and_an_existing_config_file() {
    let page = help(&["train", "-h"]);
    let opts = options(&page);
    let text = |flag: &str| {
        opts.iter()
            .find(|(f, _)| f.starts_with(flag) && f[flag.len()..].starts_with([' ', ',']))
            .unwrap_or_else(|| panic!("no {flag} in\n{page}"))
            .1
            .clone()
    };
    let d = ringtrain::config::TrainConfig::default();
    assert!(text("--steps").ends_with(&format!("[default: {}]", d.train.steps)));
    assert!(text("--lr").ends_with(&format!("[default: {}]", d.optim.lr)));
    assert!(
        text("--hidden").ends_with("[default: 256,256]"),
        "{}",
        text("--hidden")
    );
    assert!(text("--comm-timeout").contains("[default: 300]"));
    // 0 means the same kind of thing for both: only the end (and start).
    assert!(text("--eval-every").contains("(0: only at the end)"));
    assert!(text("--log-every").contains("(0: only those two)"));
    // --config names a file that exists.
    let config = text("--config");
    let file = config
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| "()[];,".contains(c)))
        .find(|w| w.ends_with(".toml") || w.ends_with(".md"))
        .unwrap_or_else(|| panic!("--config names no file: {config}"));
    assert!(
        common::root().join(file).is_file(),
        "--config points to {file}, which does not exist"
    );
}

/// Every `ringtrain ...` line in the README's code blocks parses with the
/// binary's own command line (`...` and comments dropped, a launcher in
/// front taken off).
#[test]
fn readme_command_lines_parse() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let mut in_block = false;
    let mut checked = 0;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        let Some(at) = line.find("ringtrain ").filter(|_| in_block) else {
            continue;
        };
        // Only command lines: the line starts with the binary or a launcher.
        let head = line[..at].trim();
        let launched = head.is_empty() || head.starts_with("mpirun") || head.ends_with("--");
        if !launched || line.starts_with("ringtrain:") {
            continue;
        }
        let cmd = line[at..].split(" #").next().unwrap();
        let cmd = cmd.split(['>', '|']).next().unwrap();
        let args: Vec<&str> = cmd.split_whitespace().filter(|a| *a != "...").collect();
        let r = ringtrain::cli::help::command().try_get_matches_from(&args);
        assert!(r.is_ok(), "README: {line}\n{}", r.unwrap_err());
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} README command lines found");
}
