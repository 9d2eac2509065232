//! Black-box HTTP tests of every OCI distribution v1.1 / Docker Registry v2
//! endpoint, its errors and pagination, against a real `dockyard` process
//! (one per test, in parallel). They complement the conformance port
//! (`tests/conformance.rs`): edge cases of ranges, upload sessions, names,
//! negotiation, pagination walks, restarts and crashes mid-upload, large
//! blobs, dedup on disk, configuration and the command line.
//!
//! Each assertion message names the spec behaviour it checks ("end-N" are
//! the endpoint ids of the OCI spec's API table).

mod common;

#[path = "api/support.rs"]
mod support;

#[path = "api/base.rs"]
mod base;
#[path = "api/blobs.rs"]
mod blobs;
#[path = "api/cli.rs"]
mod cli;
#[path = "api/listing.rs"]
mod listing;
#[path = "api/manifests.rs"]
mod manifests;
#[path = "api/referrers.rs"]
mod referrers;
#[path = "api/restart.rs"]
mod restart;
#[path = "api/uploads.rs"]
mod uploads;
