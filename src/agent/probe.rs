//! `dockyard p2p-probe`: a throwaway swarm node (fresh identity) asks one
//! peer which pieces of a blob it has and for one piece, with no ticket, a
//! given one, or one the hub issues for the probe's own PeerId (with the
//! credentials given, like an agent's pull). Prints one JSON line. Used by
//! the tests to show that peers give nothing without a valid ticket.

use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde_json::json;

use super::hub::{Answer, Hub};
use crate::cli::ProbeArgs;
use crate::p2p::{Have, NoPieces, Node, NodeConfig, Ticket, TicketVerifier};
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;

pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let addr: Multiaddr = args.peer.parse()?;
    let Some(Protocol::P2p(peer)) = addr.iter().last() else {
        anyhow::bail!("--peer must end in /p2p/<PeerId>");
    };
    let digest: Digest = args
        .digest
        .parse()
        .map_err(|e| anyhow::anyhow!("--digest: {e}"))?;
    let dir = tempfile_dir()?;
    let (key, cert) = (dir.join("k.pem"), dir.join("c.pem"));
    crate::auth::token::ensure_dev_keys(&key, &cert)?;
    let verifier = TicketVerifier::load(&cert, "probe")?;
    let mut config = NodeConfig::new(&dir);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    config.request_timeout = Duration::from_secs(10);
    let node = Node::start(config, Arc::new(verifier), Arc::new(NoPieces)).await?;
    let h = node.handle();
    let me = h.local_peer_id();

    let mut ticket = Ticket::new(args.ticket.clone());
    let mut ticket_from = if ticket.is_empty() { "none" } else { "given" }.to_string();
    let mut table = None;
    if let (Some(hub), Some(name)) = (&args.hub, &args.name) {
        let name: RepoName = name.parse().map_err(|e| anyhow::anyhow!("--name: {e}"))?;
        match Hub::new(hub)?
            .pieces(&name, &digest, args.authorization.as_deref(), &me)
            .await?
        {
            Answer::Yes(p) => {
                ticket = Ticket::new(p.ticket);
                ticket_from = "hub".into();
                table = Some(p.table);
            }
            Answer::No(r) => ticket_from = format!("hub refused: {}", r.status),
        }
    }

    let mut bare = addr.clone();
    bare.pop();
    h.add_address(peer, bare).await;
    let have = match h.fetch_have(peer, &digest, &ticket).await {
        Ok(Have::All) => "all".to_string(),
        Ok(Have::None) => "none".to_string(),
        Ok(Have::Partial { have, .. }) => format!("partial {}", have.count()),
        Err(e) => format!("refused: {e}"),
    };
    let piece = match h.fetch_piece(peer, &digest, args.index, &ticket).await {
        Ok(bytes) => {
            let verified = table.as_ref().map(|t| t.verify(args.index, &bytes));
            json!({"bytes": bytes.len(), "verified": verified})
        }
        Err(e) => json!(format!("refused: {e}")),
    };
    println!(
        "{}",
        json!({
            "peer_id": me.to_base58(),
            "ticket": ticket_from,
            "ticket_value": ticket.as_str(),
            "have": have,
            "piece": piece,
        })
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("dockyard-probe-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
