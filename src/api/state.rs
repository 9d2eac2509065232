//! What every handler can reach: the registry core, the auth service (none
//! on a standalone hub), and the audit writer.

use std::sync::Arc;

use crate::auth::audit::Auditor;
use crate::auth::service::Auth;
use crate::registry::Registry;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    /// `None` when `[dockyard] standalone = true`: everything is allowed.
    pub auth: Option<Arc<Auth>>,
    pub audit: Auditor,
    /// Believe forwarded-for headers from loopback peers.
    pub trust_proxy: bool,
    /// `[dockyard] domains` (lowercase); empty: the Host the client used.
    pub domains: Vec<String>,
    /// The hub's swarm node, when `[p2p] enabled`.
    pub p2p: Option<Arc<crate::p2p::hub::HubSwarm>>,
    pub counters: Arc<super::metrics::Counters>,
}

impl AppState {
    pub fn client_addr(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<&super::auth::Peer>,
    ) -> Option<std::net::IpAddr> {
        super::auth::client_addr(headers, peer, self.trust_proxy)
    }
}
