//! ringtrain: synchronous data-parallel training of a multi-task network
//! across MPI ranks. See docs/ARCHITECTURE.md for the map of the crate.

pub mod app;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod comm;
pub mod config;
pub mod data;
pub mod digest;
pub mod error;
pub mod fault;
pub mod fsutil;
pub mod gradsync;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod rendezvous;
pub mod report;
pub mod rng;
pub mod spec;
pub mod startup_guard;
pub mod stderr;
pub mod tasks;
pub mod trace;
pub mod train;
pub mod watchdog;
pub mod world;
