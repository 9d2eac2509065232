//! Dockyard: a container image hub.

// Handlers return `Result<_, Response>`; the error is the answer itself.
#![allow(clippy::result_large_err)]

mod agent;
mod api;
mod auth;
mod cli;
mod config;
mod meta;
mod p2p;
mod registry;
mod server;
mod storage;
#[cfg(test)]
mod testsupport;
mod zerocopy;

#[path = "../migrations/mod.rs"]
mod migrations;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // glibc gives every thread that allocates its own arena and keeps what
    // each one frees; two arenas keep the resident set small and flat.
    // Fixed thresholds: with glibc's moving ones, the 256 KiB frames the
    // swarm's muxer allocates and frees by the thousand were handed back
    // to the kernel (munmap, heap trims) and faulted in again, zeroed page
    // by page: a seventh of the CPU of a transfer between two nodes. Held
    // memory goes back when the swarm is idle (`p2p::buffers::trim_idle`);
    // without a swarm, an arena keeps at most the trim threshold free.
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dockyard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        match cli.command {
            cli::TopCommand::Hub(command) => server::run(command).await,
            cli::TopCommand::Agent(args) => agent::run(args).await,
            cli::TopCommand::P2pProbe(args) => agent::probe::run(args).await,
        }
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dockyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}
