//! OpenMPI's shared-memory transport (vader), tuned for small gradients.
//!
//! Between ranks of one host, vader copies a message of up to its eager
//! limit (4 KiB by default) through a shared queue; a longer one first
//! waits for a rendezvous handshake and then moves in one kernel copy
//! (CMA). A small model's gradient (a few to a few tens of KiB) pays that
//! handshake on every ring message: measured here (2 ranks, `bench
//! allreduce --comm ring`, 3 interleaved runs), 8 KiB took 11.6–13.8 µs
//! with the default and 2.9–4.1 µs with the eager limit at 32 KiB; 32 KiB
//! 12.4–16.4 µs and 5.2–7.6 µs; from 128 KiB up, where the ring's chunks
//! still take the single copy, no change. So each rank raises the eager
//! limit to 32 KiB, vader's largest fragment (`btl_vader_max_send_size`),
//! unless the user chose either.

use super::{Plan, UserChoices};

/// The eager limit set: vader's default maximum fragment.
pub const EAGER_BYTES: usize = 32 * 1024;

/// What `ringtrain info` says when it is set.
pub const SAID: &str = "btl_vader_eager_limit = 32768 B, set by ringtrain \
     (a small gradient's ring messages go without a handshake)";

/// The variables to set, or why none.
pub fn plan(user: &UserChoices) -> Plan {
    let watched = ["btl_vader_eager_limit", "btl_vader_max_send_size"];
    super::unless_chosen(user, &watched, &watched[..1], EAGER_BYTES, "shared-memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_eager_limit_unless_the_user_chose_it_or_the_fragment_size() {
        assert!(SAID.contains(&EAGER_BYTES.to_string()));
        let vars = plan(&UserChoices::new(|_| None, vec![])).unwrap();
        assert_eq!(
            vars,
            vec![(
                "OMPI_MCA_btl_vader_eager_limit".to_string(),
                "32768".to_string()
            )]
        );
        let mine = |k: &str| (k == "OMPI_MCA_btl_vader_max_send_size").then(|| "16384".into());
        assert!(
            plan(&UserChoices::new(mine, vec![]))
                .unwrap_err()
                .contains("btl_vader_max_send_size=16384 set by the user")
        );
        let file = "btl_vader_eager_limit = 8192\n".to_string();
        assert!(plan(&UserChoices::new(|_| None, vec![file])).is_err());
    }
}
