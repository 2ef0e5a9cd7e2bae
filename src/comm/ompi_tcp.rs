//! OpenMPI's TCP transport, tuned for the ring before MPI_Init.
//!
//! The ring sends 256 KiB chunks ([`super::ring::CHUNK_BYTES`]). Above
//! OpenMPI's TCP eager limit (64 KiB by default) every message first waits
//! for a rendezvous handshake, which between hosts queues behind the data
//! already on the link: measured on simulated hosts with a 1 Gbit/s link
//! (docs/cluster.md), the ring moved 60% of the link with the defaults and
//! 91–96% with the eager limit, the rendezvous eager limit and the maximum
//! send size at 512 KiB. So each rank sets those three for itself, through
//! the `OMPI_MCA_*` variables MPI_Init reads, unless the user chose any of
//! them (in the environment, on mpirun's command line, which reaches the
//! ranks as the same variables, or in an MCA parameter file). Shared
//! memory and other transports are untouched.

use std::sync::OnceLock;

/// The eager limit, rendezvous eager limit and maximum send size set.
pub const TCP_EAGER_BYTES: usize = 512 * 1024;

/// The parameters set together.
pub const PARAMS: [&str; 3] = [
    "btl_tcp_eager_limit",
    "btl_tcp_rndv_eager_limit",
    "btl_tcp_max_send_size",
];

/// OpenMPI's default parameter files (`mca_base_param_files`), besides
/// any the environment names.
const PARAM_FILES: [&str; 2] = [
    "$HOME/.openmpi/mca-params.conf",
    "/etc/openmpi/openmpi-mca-params.conf",
];

/// The variables to set, or why none: `env` reads a variable, `files` are
/// the contents of the MCA parameter files that exist.
pub fn plan(
    env: &dyn Fn(&str) -> Option<String>,
    files: &[String],
) -> Result<Vec<(String, String)>, String> {
    for p in PARAMS {
        let var = format!("OMPI_MCA_{p}");
        if let Some(v) = env(&var) {
            return Err(format!(
                "{var}={v} set by the user: OpenMPI's TCP settings left alone"
            ));
        }
        if files.iter().any(|f| mentions(f, p)) {
            return Err(format!(
                "{p} set in an MCA parameter file: OpenMPI's TCP settings left alone"
            ));
        }
    }
    Ok(PARAMS
        .iter()
        .map(|p| (format!("OMPI_MCA_{p}"), TCP_EAGER_BYTES.to_string()))
        .collect())
}

/// Whether an MCA parameter file (`name = value` lines, `#` comments) sets
/// `param`.
fn mentions(file: &str, param: &str) -> bool {
    file.lines().any(|l| {
        let l = l.split('#').next().unwrap_or("");
        l.split('=').next().is_some_and(|k| k.trim() == param)
    })
}

static APPLIED: OnceLock<String> = OnceLock::new();

/// Sets the variables [`plan`] gives. Call first thing in `main`, before
/// any thread exists (it changes the environment).
pub fn apply() {
    let env = |k: &str| std::env::var(k).ok();
    let mut names: Vec<String> = PARAM_FILES
        .iter()
        .map(|f| f.replace("$HOME", &env("HOME").unwrap_or_default()))
        .collect();
    if let Some(more) = env("OMPI_MCA_mca_base_param_files") {
        names.extend(more.split(',').map(str::to_string));
    }
    // Bounded reads: a parameter file is a few lines.
    let files: Vec<String> = names
        .iter()
        .filter_map(|n| {
            let f = std::fs::File::open(n).ok()?;
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(f, 1 << 20), &mut s).ok()?;
            Some(s)
        })
        .collect();
    let said = match plan(&env, &files) {
        Ok(vars) => {
            for (k, v) in &vars {
                // SAFETY: called before any other thread exists (see above).
                unsafe { std::env::set_var(k, v) };
            }
            format!(
                "{} = {} B each, set by ringtrain (the ring's chunks then go without a handshake)",
                PARAMS.join(", "),
                TCP_EAGER_BYTES
            )
        }
        Err(why) => why,
    };
    let _ = APPLIED.set(said);
}

/// What [`apply`] did, for `ringtrain info`.
pub fn applied() -> Option<&'static str> {
    APPLIED.get().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_all_three_unless_the_user_chose_one() {
        let none = |_: &str| None;
        let vars = plan(&none, &[]).unwrap();
        assert_eq!(vars.len(), 3);
        assert!(vars.iter().all(|(_, v)| v == "524288"));
        assert_eq!(vars[0].0, "OMPI_MCA_btl_tcp_eager_limit");
        // One set in the environment (or by mpirun --mca): none touched.
        let one = |k: &str| (k == "OMPI_MCA_btl_tcp_max_send_size").then(|| "131072".to_string());
        assert!(
            plan(&one, &[])
                .unwrap_err()
                .contains("max_send_size=131072")
        );
        // One set in a parameter file: none touched; comments do not count.
        let file = "# btl_tcp_eager_limit = 1\nbtl_tcp_rndv_eager_limit = 65536\n".to_string();
        assert!(
            plan(&none, &[file])
                .unwrap_err()
                .contains("rndv_eager_limit")
        );
        let commented = "# btl_tcp_eager_limit = 1\nbtl = ^openib\n".to_string();
        assert_eq!(plan(&none, &[commented]).unwrap().len(), 3);
    }
}
