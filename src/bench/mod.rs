//! Benchmarks: `bench train` and `bench allreduce`.

pub mod allreduce;
pub mod train;
