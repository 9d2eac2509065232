//! Command line: `dockyard web`, `dockyard migrate`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "dockyard",
    version,
    about = "Dockyard: a container image hub (OCI distribution / Docker Registry v2)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the hub's HTTP server.
    Web(WebArgs),
    /// Apply pending metadata schema migrations and exit.
    Migrate(ConfigArg),
    /// Free the storage of blobs no manifest references (run with the
    /// server stopped; it takes the data directory's lock).
    Gc(GcArgs),
    /// Manage accounts from the command line.
    Admin(AdminArgs),
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create a system administrator.
    Create {
        /// Account name.
        name: String,
        #[arg(long)]
        email: Option<String>,
        /// The password (visible to other local users in the process list;
        /// prefer --password-stdin).
        #[arg(long)]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Keep blobs linked into a repository within this many seconds (an
    /// image push may still be on its way to its manifest).
    #[arg(long, default_value_t = 3600)]
    pub grace: u64,
    /// Report what would be removed without removing anything.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, short, default_value = "conf/runtime.toml")]
    pub config: PathBuf,
}

impl ConfigArg {
    /// A config file named explicitly must exist; the default may be absent.
    pub fn required(&self) -> bool {
        self.config.as_path() != std::path::Path::new("conf/runtime.toml")
    }
}

#[derive(Args, Debug)]
pub struct WebArgs {
    /// Address to listen on.
    #[arg(long, short, default_value = "0.0.0.0")]
    pub address: IpAddr,
    /// Port to listen on (0 picks a free one; the chosen address is printed).
    #[arg(long, short, default_value_t = 5000)]
    pub port: u16,
    #[command(flatten)]
    pub config: ConfigArg,
}
