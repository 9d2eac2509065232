//! Command line: `dockyard web`, `migrate`, `gc`, `admin`, `agent`.

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
    pub command: TopCommand,
}

/// The hub's commands, and the host agent's.
#[derive(Subcommand, Debug)]
pub enum TopCommand {
    #[command(flatten)]
    Hub(Command),
    /// Run the host agent: a read-only registry for the local container
    /// engine that fetches blobs from the peer swarm and caches them.
    Agent(AgentArgs),
    /// Ask one swarm peer for a blob's pieces (a test and diagnosis tool).
    #[command(hide = true)]
    P2pProbe(ProbeArgs),
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
pub struct AgentArgs {
    /// The hub, e.g. http://hub.example:5000 (its swarm must be on).
    #[arg(long)]
    pub hub: String,
    /// Address the local registry listens on, e.g. 127.0.0.1:5001.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// Data directory: identity key and blob cache.
    #[arg(long, default_value = "agent-data")]
    pub data: PathBuf,
    /// Bound of the blob cache in bytes (suffixes K, M, G, T: powers of 1024).
    #[arg(long, default_value = "10G", value_parser = parse_size)]
    pub cache_size: u64,
    /// Swarm listen addresses (multiaddrs).
    #[arg(long = "p2p-listen", default_values_t = ["/ip4/0.0.0.0/tcp/4001".to_string()])]
    pub p2p_listen: Vec<String>,
    /// Further peers to join the swarm through (multiaddrs ending in
    /// /p2p/<PeerId>); the hub's own node is always one.
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// Log filter (tracing syntax).
    #[arg(long, default_value = "info")]
    pub log: String,
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The peer: a multiaddr ending in /p2p/<PeerId>.
    #[arg(long)]
    pub peer: String,
    #[arg(long)]
    pub digest: String,
    /// Piece to ask for.
    #[arg(long, default_value_t = 0)]
    pub index: u32,
    /// Ticket to present (none by default).
    #[arg(long, default_value = "")]
    pub ticket: String,
    /// Ask this hub for a ticket for the probe (with --name).
    #[arg(long)]
    pub hub: Option<String>,
    /// Repository the ticket is asked through.
    #[arg(long)]
    pub name: Option<String>,
    /// Authorization header value for the hub.
    #[arg(long)]
    pub authorization: Option<String>,
}

/// Bytes with an optional K/M/G/T suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix in {s:?}")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("bad size {s:?}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} too large"))
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
