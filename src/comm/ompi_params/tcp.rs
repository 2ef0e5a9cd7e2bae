//! OpenMPI's TCP transport, tuned for the ring.
//!
//! The ring sends 256 KiB chunks ([`crate::comm::ring::CHUNK_BYTES`]).
//! Above OpenMPI's TCP eager limit (64 KiB by default) every message first
//! waits for a rendezvous handshake, which between hosts queues behind the
//! data already on the link: measured on simulated hosts with a 1 Gbit/s
//! link (docs/cluster.md), the ring moved 60% of the link with the defaults
//! and 91–96% with the eager limit, the rendezvous eager limit and the
//! maximum send size at 512 KiB. So each rank sets those three, unless the
//! user chose any of them. Shared memory and other transports are
//! untouched.

use super::{Plan, UserChoices};

/// The eager limit, rendezvous eager limit and maximum send size set.
pub const TCP_EAGER_BYTES: usize = 512 * 1024;

/// The parameters set together.
pub const PARAMS: [&str; 3] = [
    "btl_tcp_eager_limit",
    "btl_tcp_rndv_eager_limit",
    "btl_tcp_max_send_size",
];

/// What `ringtrain info` says when they are set.
pub const SAID: &str = "btl_tcp_eager_limit, btl_tcp_rndv_eager_limit, btl_tcp_max_send_size \
     = 524288 B each, set by ringtrain (the ring's chunks then go without a handshake)";

/// The variables to set, or why none.
pub fn plan(user: &UserChoices) -> Plan {
    super::unless_chosen(user, &PARAMS, &PARAMS, TCP_EAGER_BYTES, "TCP")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_all_three_unless_the_user_chose_one() {
        assert!(SAID.contains(&TCP_EAGER_BYTES.to_string()));
        let vars = plan(&UserChoices::new(|_| None, vec![])).unwrap();
        assert_eq!(vars.len(), 3);
        assert!(vars.iter().all(|(_, v)| v == "524288"));
        assert_eq!(vars[0].0, "OMPI_MCA_btl_tcp_eager_limit");
        // One set in the environment (or by mpirun --mca): none touched.
        let one = |k: &str| (k == "OMPI_MCA_btl_tcp_max_send_size").then(|| "131072".to_string());
        assert!(
            plan(&UserChoices::new(one, vec![]))
                .unwrap_err()
                .contains("max_send_size=131072")
        );
        // One set in a parameter file: none touched; comments do not count.
        let file = "# btl_tcp_eager_limit = 1\nbtl_tcp_rndv_eager_limit = 65536\n".to_string();
        assert!(
            plan(&UserChoices::new(|_| None, vec![file]))
                .unwrap_err()
                .contains("rndv_eager_limit")
        );
        let commented = "# btl_tcp_eager_limit = 1\nbtl = ^openib\n".to_string();
        assert_eq!(
            plan(&UserChoices::new(|_| None, vec![commented]))
                .unwrap()
                .len(),
            3
        );
    }
}
