//! No probing for a fabric the host does not have.
//!
//! Before it chooses the point-to-point layer (PML), OpenMPI opens every
//! one it was built with: `cm` loads its fabric libraries (libfabric,
//! PSM, PSM2) and each probes for devices. On a host without any fabric
//! they all decline and `ob1` (shared memory, TCP) is chosen anyway, but
//! the probing took most of MPI_Init: measured here (Debian OpenMPI 4.1.4,
//! `mpirun -np 2 ringtrain train --steps 1`), start-up 0.25–0.45 s with
//! the probing and 0.04–0.07 s with `pml = ob1`. So when no fabric device
//! is on the host and the user chose neither `pml` nor `mtl`, each rank
//! asks for `ob1` directly: the choice OpenMPI would have made. Where a
//! device exists (InfiniBand, RoCE, EFA, iWARP and Omni-Path register
//! under /sys/class/infiniband; Slingshot under /sys/class/cxi; PSM,
//! PSM2 and Aries as /dev nodes) OpenMPI chooses, as before.

use std::path::Path;

use super::{Plan, UserChoices};

/// What `ringtrain info` says when `ob1` is asked for.
pub const SAID: &str = "pml = ob1, set by ringtrain (no fabric device on this host: \
     MPI_Init skips probing for one)";

/// Directories whose entries are fabric devices.
const DEVICE_CLASSES: [&str; 2] = ["/sys/class/infiniband", "/sys/class/cxi"];

/// Prefixes of /dev nodes of fabrics outside those classes: Omni-Path
/// (PSM2), QLogic (PSM), Cray Aries.
const DEVICE_NODES: [&str; 3] = ["hfi1", "ipath", "kgni"];

/// The first fabric device on this host, or `None`.
pub fn on_this_host() -> Option<String> {
    let first = |dir: &Path, keep: &dyn Fn(&str) -> bool| -> Option<String> {
        // Bounded: a host has a handful of devices; stop at the first.
        std::fs::read_dir(dir)
            .ok()?
            .take(10_000)
            .filter_map(|e| e.ok())
            .find(|e| keep(&e.file_name().to_string_lossy()))
            .map(|e| e.path().display().to_string())
    };
    DEVICE_CLASSES
        .iter()
        .find_map(|d| first(Path::new(d), &|_| true))
        .or_else(|| {
            first(Path::new("/dev"), &|n| {
                DEVICE_NODES.iter().any(|p| n.starts_with(p))
            })
        })
}

/// The variables to set, or why none: `device` is the fabric device found
/// on this host. A `pml` or `mtl` the user set is a choice to keep unless
/// it only excludes components (`^ucx`, as Debian's system file has) and
/// leaves `ob1` allowed.
pub fn plan(user: &UserChoices, device: Option<&str>) -> Plan {
    for param in ["pml", "mtl"] {
        if let Some(c) = user.chose(param) {
            let excluded = c.value.strip_prefix('^');
            let keeps_ob1 = excluded
                .is_some_and(|list| param == "mtl" || !list.split(',').any(|n| n.trim() == "ob1"));
            if !keeps_ob1 {
                return Err(format!("{}: OpenMPI chooses its transport", c.said));
            }
        }
    }
    if let Some(d) = device {
        return Err(format!(
            "fabric device {d} on this host: OpenMPI chooses its transport"
        ));
    }
    Ok(vec![("OMPI_MCA_pml".into(), "ob1".into())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_for_ob1_only_without_a_fabric_and_a_users_choice() {
        let none = || UserChoices::new(|_| None, vec![]);
        assert_eq!(
            plan(&none(), None).unwrap(),
            vec![("OMPI_MCA_pml".to_string(), "ob1".to_string())]
        );
        let ib = plan(&none(), Some("/sys/class/infiniband/mlx5_0")).unwrap_err();
        assert!(ib.contains("mlx5_0 on this host"), "{ib}");
        let pml = UserChoices::new(|k| (k == "OMPI_MCA_pml").then(|| "ucx".into()), vec![]);
        assert!(plan(&pml, None).unwrap_err().contains("OMPI_MCA_pml=ucx"));
        let mtl = UserChoices::new(|_| None, vec!["mtl = psm2\n".into()]);
        assert!(
            plan(&mtl, None)
                .unwrap_err()
                .contains("mtl = psm2 set in an MCA parameter file")
        );
        // Exclusions that leave ob1 allowed are no choice (Debian's
        // /etc/openmpi/openmpi-mca-params.conf has both of these).
        let debian = UserChoices::new(|_| None, vec!["mtl = ^ofi\npml = ^ucx\n".into()]);
        assert!(plan(&debian, None).is_ok());
        let no_ob1 = UserChoices::new(
            |k| (k == "OMPI_MCA_pml").then(|| "^ucx, ob1".into()),
            vec![],
        );
        assert!(plan(&no_ob1, None).is_err());
    }
}
