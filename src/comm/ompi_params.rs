//! OpenMPI parameters ringtrain sets for itself before MPI_Init, unless
//! the user chose them.
//!
//! Each rank sets them through the `OMPI_MCA_*` variables MPI_Init reads.
//! A parameter counts as the user's when it is in the environment (where
//! mpirun's `--mca` also puts it) or in an MCA parameter file; then
//! ringtrain leaves that group alone and says so in `ringtrain info`.
//! Three groups: [`tcp`] (the ring's chunks go without a rendezvous
//! handshake between hosts), [`shm`] (nor do a small gradient's messages
//! within a host) and [`fabric`] (no probing for a fabric the host does
//! not have). Without OpenMPI the variables are read by nothing.

pub mod fabric;
pub mod shm;
pub mod tcp;

use std::sync::OnceLock;

/// OpenMPI's default parameter files (`mca_base_param_files`), besides
/// any the environment names.
const PARAM_FILES: [&str; 2] = [
    "$HOME/.openmpi/mca-params.conf",
    "/etc/openmpi/openmpi-mca-params.conf",
];

/// Reads an environment variable.
type EnvLookup = Box<dyn Fn(&str) -> Option<String>>;

/// What the user set: the environment and the MCA parameter files that
/// exist.
pub struct UserChoices {
    env: EnvLookup,
    files: Vec<String>,
}

impl UserChoices {
    /// From a variable lookup and parameter files' contents (tests).
    pub fn new(env: impl Fn(&str) -> Option<String> + 'static, files: Vec<String>) -> Self {
        UserChoices {
            env: Box::new(env),
            files,
        }
    }

    /// From this process's environment and parameter files.
    pub fn of_this_process() -> Self {
        let env = |k: &str| std::env::var(k).ok();
        let mut names: Vec<String> = PARAM_FILES
            .iter()
            .map(|f| f.replace("$HOME", &env("HOME").unwrap_or_default()))
            .collect();
        if let Some(more) = env("OMPI_MCA_mca_base_param_files") {
            names.extend(more.split(',').map(str::to_string));
        }
        // Bounded reads: a parameter file is a few lines.
        let files = names
            .iter()
            .filter_map(|n| {
                let f = std::fs::File::open(n).ok()?;
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::Read::take(f, 1 << 20), &mut s).ok()?;
                Some(s)
            })
            .collect();
        UserChoices::new(env, files)
    }

    /// Where and how the user set `param`; `None` when not set.
    pub fn chose(&self, param: &str) -> Option<Choice> {
        let var = format!("OMPI_MCA_{param}");
        if let Some(v) = (self.env)(&var) {
            return Some(Choice {
                said: format!("{var}={v} set by the user"),
                value: v,
            });
        }
        let value = self.files.iter().find_map(|f| value_in(f, param))?;
        Some(Choice {
            said: format!("{param} = {value} set in an MCA parameter file"),
            value,
        })
    }
}

/// A parameter the user set.
#[derive(Debug)]
pub struct Choice {
    /// Where and how, for a message.
    pub said: String,
    /// The value.
    pub value: String,
}

/// The value an MCA parameter file (`name = value` lines, `#` comments)
/// gives `param`, if it sets it.
fn value_in(file: &str, param: &str) -> Option<String> {
    file.lines().find_map(|l| {
        let l = l.split('#').next().unwrap_or("");
        let (k, v) = l.split_once('=')?;
        (k.trim() == param).then(|| v.trim().to_string())
    })
}

/// What one group did: the variables it set, or why none.
pub type Plan = Result<Vec<(String, String)>, String>;

/// `OMPI_MCA_<param> = value` for each of `params`, unless the user chose
/// any of `watched`; then why `what` is left alone.
fn unless_chosen(
    user: &UserChoices,
    watched: &[&str],
    params: &[&str],
    value: usize,
    what: &str,
) -> Plan {
    if let Some(c) = watched.iter().find_map(|p| user.chose(p)) {
        return Err(format!("{}: OpenMPI's {what} settings left alone", c.said));
    }
    Ok(params
        .iter()
        .map(|p| (format!("OMPI_MCA_{p}"), value.to_string()))
        .collect())
}

/// Each group's line for `ringtrain info`: ("openmpi tcp", what it did).
static APPLIED: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();

/// Sets the variables of every group. Call first thing in `main`, before
/// any thread exists (it changes the environment).
pub fn apply() {
    let user = UserChoices::of_this_process();
    let groups = [
        ("openmpi tcp", tcp::plan(&user), tcp::SAID),
        ("openmpi shared memory", shm::plan(&user), shm::SAID),
        (
            "openmpi fabric",
            fabric::plan(&user, fabric::on_this_host().as_deref()),
            fabric::SAID,
        ),
    ];
    let mut said = Vec::new();
    for (name, plan, set) in groups {
        let line = match plan {
            Ok(vars) => {
                for (k, v) in &vars {
                    // SAFETY: called before any other thread exists (see above).
                    unsafe { std::env::set_var(k, v) };
                }
                set.to_string()
            }
            Err(why) => why,
        };
        said.push((name, line));
    }
    let _ = APPLIED.set(said);
}

/// What [`apply`] did, a line per group, for `ringtrain info`.
pub fn applied() -> &'static [(&'static str, String)] {
    APPLIED.get().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_is_the_users_in_the_environment_or_a_file() {
        let env = |k: &str| (k == "OMPI_MCA_pml").then(|| "ucx".to_string());
        let file = "# btl_tcp_eager_limit = 1\nmtl = ^ofi # why\n".to_string();
        let user = UserChoices::new(env, vec![file]);
        let pml = user.chose("pml").unwrap();
        assert_eq!(
            (pml.said.as_str(), pml.value.as_str()),
            ("OMPI_MCA_pml=ucx set by the user", "ucx")
        );
        let mtl = user.chose("mtl").unwrap();
        assert_eq!(
            (mtl.said.as_str(), mtl.value.as_str()),
            ("mtl = ^ofi set in an MCA parameter file", "^ofi")
        );
        // Commented out: not set.
        assert!(user.chose("btl_tcp_eager_limit").is_none());
        assert!(user.chose("btl").is_none());
    }
}
