//! One libp2p node per process: a persistent ed25519 identity, TCP and
//! QUIC transports with noise and yamux, identify, ping, Kademlia (server
//! mode, provider records keyed by digest), optional mDNS, a block list for
//! banned peers, and the piece protocol. The swarm runs on its own task;
//! everything else talks to it through a [`NodeHandle`].
//!
//! Serving: each inbound request is checked on a task of its own (ticket
//! signature, expiry, digest, and that the ticket's subject is the peer
//! noise authenticated), then answered from the downloads in progress
//! (verified pieces only) or from the [`PieceSource`]. Uploads are bounded
//! per peer and in total; beyond the bound the answer is `busy`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore, store::MemoryStoreConfig};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{
    self, InboundRequestId, OutboundRequestId, ProtocolSupport, ResponseChannel,
};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, identify, mdns, ping, tcp,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::noise;
use super::piece::{MAX_PIECE_SIZE, PieceTable};
use super::protocol::{ErrorCode, Have, PROTOCOL, PieceCodec, Request, Response};
use super::sink::Partials;
use super::ticket::{Ticket, TicketVerifier};
use super::transport::Yamux;
use super::{PieceSource, Replication, Stats};
use crate::registry::digest::Digest;

/// The Kademlia protocol of Dockyard swarms: a DHT of their own, apart
/// from the public IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/dockyard/kad/1.0.0");
const IDENTIFY_PROTOCOL: &str = "/dockyard/id/1.0.0";

#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The data path; the identity lives at `<dir>/p2p/identity.key`.
    pub dir: PathBuf,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/4001` and
    /// `/ip4/0.0.0.0/udp/4001/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Peers to join the swarm through, each ending in `/p2p/<PeerId>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network by mDNS.
    pub mdns: bool,
    /// How long other nodes keep a provider record of ours.
    pub provider_ttl: Duration,
    /// How often our provider records are published again (below the TTL).
    pub provider_republish: Duration,
    /// Bound of Kademlia queries.
    pub query_timeout: Duration,
    /// Bound of [`NodeHandle::providers`].
    pub providers_timeout: Duration,
    /// Bound of one piece request.
    pub request_timeout: Duration,
    /// Concurrent uploads in total and per peer; beyond them, `busy`.
    /// With the downloads' in-flight pieces, this bounds the memory the
    /// swarm uses: (uploads + in-flight) × piece size.
    pub max_uploads: usize,
    pub max_uploads_per_peer: usize,
    /// Largest piece accepted in a response.
    pub max_piece_size: u32,
    /// Most blobs this node announces.
    pub max_provided: usize,
    pub idle_connection_timeout: Duration,
}

impl NodeConfig {
    /// Defaults for a node with data path `dir`: TCP and QUIC on port 4001
    /// of every interface, provider records valid 2 h and republished
    /// every 30 min.
    pub fn new(dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            dir: dir.into(),
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".parse().unwrap(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".parse().unwrap(),
            ],
            bootstrap: Vec::new(),
            mdns: false,
            provider_ttl: Duration::from_secs(2 * 3600),
            provider_republish: Duration::from_secs(1800),
            query_timeout: Duration::from_secs(20),
            providers_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            max_uploads: 16,
            max_uploads_per_peer: 4,
            max_piece_size: MAX_PIECE_SIZE,
            max_provided: 1 << 20,
            idle_connection_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("p2p identity {path}: {message}")]
    Identity { path: String, message: String },
    #[error("p2p transport: {0}")]
    Transport(String),
    #[error("p2p listen on {addr}: {message}")]
    Listen { addr: String, message: String },
    #[error("p2p node stopped")]
    Stopped,
    #[error("announcing: {0}")]
    Provide(String),
}

/// Why a piece (or have) request to a peer failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("peer refused: {0}")]
    Refused(ErrorCode),
    #[error("peer is banned")]
    Banned,
    #[error("request timed out")]
    Timeout,
    #[error("network: {0}")]
    Network(String),
    #[error("unexpected response")]
    Protocol,
    #[error("p2p node stopped")]
    Stopped,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    pieces: request_response::Behaviour<PieceCodec>,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    #[cfg_attr(not(test), allow(dead_code))] // the tests use it
    Connected(oneshot::Sender<Vec<PeerId>>),
    Provide(Digest, oneshot::Sender<Result<(), NodeError>>),
    Withdraw(Digest, oneshot::Sender<()>),
    #[cfg_attr(not(test), allow(dead_code))] // the tests use it
    IsProviding(Digest, oneshot::Sender<bool>),
    Providers(Digest, oneshot::Sender<Vec<PeerId>>),
    Request(
        PeerId,
        Request,
        oneshot::Sender<Result<Response, FetchError>>,
    ),
    AddAddress(PeerId, Multiaddr),
    Ban(PeerId, oneshot::Sender<bool>),
}

/// What the node shares with its handles and serving tasks.
pub(crate) struct Shared {
    pub peer_id: PeerId,
    pub stats: Arc<Stats>,
    pub partials: Arc<Partials>,
}

/// The cloneable way to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    pub(crate) shared: Arc<Shared>,
}

/// A running node. Dropping it stops the swarm and closes its connections.
pub struct Node {
    handle: NodeHandle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Node {
    /// Loads (or creates) the identity, starts listening and joins the
    /// swarm through the bootstrap peers. Returns once every listener has
    /// an address.
    pub async fn start(
        config: NodeConfig,
        verifier: Arc<TicketVerifier>,
        source: Arc<dyn PieceSource>,
    ) -> Result<Node, NodeError> {
        let keypair = load_or_create_identity(&config.dir)?;
        let peer_id = keypair.public().to_peer_id();
        let mdns = if config.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| NodeError::Transport(format!("mDNS: {e}")))?,
            )
        } else {
            None
        };
        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config
            .set_query_timeout(config.query_timeout)
            .set_provider_record_ttl(Some(config.provider_ttl))
            .set_provider_publication_interval(Some(config.provider_republish));
        let store = MemoryStore::with_config(
            peer_id,
            MemoryStoreConfig {
                max_provided_keys: config.max_provided,
                ..Default::default()
            },
        );
        let rr_config = request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(256);
        let codec = PieceCodec {
            max_piece: config.max_piece_size,
        };
        let transport_err = |e: &dyn std::fmt::Display| NodeError::Transport(e.to_string());
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                // Ours first; libp2p's for a node without it.
                (noise::Config::new, libp2p::noise::Config::new),
                Yamux::new,
            )
            .map_err(|e| transport_err(&e))?
            .with_quic()
            .with_behaviour(|key| {
                let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
                kad.set_mode(Some(kad::Mode::Server));
                Behaviour {
                    blocked: Default::default(),
                    identify: identify::Behaviour::new(identify::Config::new(
                        IDENTIFY_PROTOCOL.into(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::default(),
                    kad,
                    pieces: request_response::Behaviour::with_codec(
                        codec,
                        [(PROTOCOL, ProtocolSupport::Full)],
                        rr_config,
                    ),
                    mdns: Toggle::from(mdns),
                }
            })
            .map_err(|e| transport_err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
            .build();

        let mut listeners = HashSet::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.to_string(),
                    message: e.to_string(),
                })?;
            listeners.insert(id);
        }
        // Wait until each listener has an address, so `listen_addrs` is
        // meaningful as soon as `start` returns.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listeners.is_empty() {
            let ev = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .map_err(|_| NodeError::Transport("listeners did not start".into()))?;
            match ev {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    listeners.remove(&listener_id);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } if listeners.contains(&listener_id) => {
                    return Err(NodeError::Transport(format!("listener closed: {reason:?}")));
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(NodeError::Transport(error.to_string()));
                }
                _ => {}
            }
        }

        for addr in &config.bootstrap {
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                tracing::warn!(%addr, "p2p bootstrap address without /p2p/<peer id>: ignored");
                continue;
            };
            let mut bare = addr.clone();
            bare.pop();
            swarm.behaviour_mut().kad.add_address(&peer, bare);
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, "p2p bootstrap dial: {e}");
            }
        }
        if !config.bootstrap.is_empty() {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }

        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            peer_id,
            stats,
            partials: Arc::default(),
        });
        let (tx, rx) = mpsc::channel(1024);
        let (served_tx, served_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            swarm,
            shared: shared.clone(),
            verifier,
            source,
            config,
            served_tx,
            banned: HashSet::new(),
            provides: HashMap::new(),
            provider_queries: HashMap::new(),
            requests: HashMap::new(),
            serving: HashMap::new(),
            uploads_per_peer: HashMap::new(),
        };
        let task = tokio::spawn(driver.run(rx, served_rx));
        Ok(Node {
            handle: NodeHandle { tx, shared },
            task,
        })
    }

    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    #[cfg_attr(not(test), allow(dead_code))] // the tests use it
    pub fn local_peer_id(&self) -> PeerId {
        self.handle.shared.peer_id
    }
}

impl NodeHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    pub fn local_peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    /// The addresses the node listens on (with ports resolved).
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.call(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// The listen addresses, each with `/p2p/<our PeerId>`: what another
    /// node bootstraps from.
    pub async fn dial_addrs(&self) -> Vec<Multiaddr> {
        let me = self.local_peer_id();
        self.listen_addrs()
            .await
            .into_iter()
            .map(|a| a.with(Protocol::P2p(me)))
            .collect()
    }

    #[cfg_attr(not(test), allow(dead_code))] // the tests use it
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        self.call(Command::Connected).await.unwrap_or_default()
    }

    /// Announces that this node holds `digest` (a provider record keyed by
    /// the digest, republished until withdrawn). Returns once the record
    /// is stored here and the publication to the closest peers finished.
    pub async fn provide(&self, digest: &Digest) -> Result<(), NodeError> {
        self.call(|tx| Command::Provide(digest.clone(), tx))
            .await
            .unwrap_or(Err(NodeError::Stopped))
    }

    /// Stops announcing `digest` (the blob was deleted): the local record
    /// goes at once, copies at other nodes expire with the provider TTL.
    pub async fn withdraw(&self, digest: &Digest) {
        self.call(|tx| Command::Withdraw(digest.clone(), tx)).await;
    }

    /// Whether this node announces `digest` (holds its provider record).
    #[cfg_attr(not(test), allow(dead_code))] // the tests use it
    pub async fn is_providing(&self, digest: &Digest) -> bool {
        self.call(|tx| Command::IsProviding(digest.clone(), tx))
            .await
            .unwrap_or(false)
    }

    /// Peers announcing `digest`, ourselves and banned peers excluded;
    /// whatever was found within the configured bound.
    pub async fn providers(&self, digest: &Digest) -> Vec<PeerId> {
        self.call(|tx| Command::Providers(digest.clone(), tx))
            .await
            .unwrap_or_default()
    }

    /// Piece `index` of `digest` from `peer`, unverified (the caller holds
    /// the piece table).
    pub async fn fetch_piece(
        &self,
        peer: PeerId,
        digest: &Digest,
        index: u32,
        ticket: &Ticket,
    ) -> Result<Bytes, FetchError> {
        let req = Request::Piece {
            digest: digest.clone(),
            index,
            ticket: ticket.clone(),
        };
        match self.request(peer, req).await? {
            Response::Piece(b) => Ok(b),
            Response::Error(code) => Err(FetchError::Refused(code)),
            _ => Err(FetchError::Protocol),
        }
    }

    /// Which pieces of `digest` `peer` has.
    pub async fn fetch_have(
        &self,
        peer: PeerId,
        digest: &Digest,
        ticket: &Ticket,
    ) -> Result<Have, FetchError> {
        let req = Request::Have {
            digest: digest.clone(),
            ticket: ticket.clone(),
        };
        match self.request(peer, req).await? {
            Response::Have(h) => Ok(h),
            Response::Error(code) => Err(FetchError::Refused(code)),
            _ => Err(FetchError::Protocol),
        }
    }

    /// The piece table of `digest` held by `peer` (a hub node), checked to
    /// be well-formed and about `digest`. A lying peer's table can make
    /// forged pieces before the last pass, but not the last one, which must
    /// hash to the digest: a download against it fails, it never succeeds
    /// with forged bytes.
    pub async fn fetch_table(
        &self,
        peer: PeerId,
        digest: &Digest,
        ticket: &Ticket,
    ) -> Result<PieceTable, FetchError> {
        let req = Request::Table {
            digest: digest.clone(),
            ticket: ticket.clone(),
        };
        match self.request(peer, req).await? {
            Response::Table(b) => match PieceTable::from_bytes(&b) {
                Ok(t) if t.digest == *digest => Ok(t),
                _ => Err(FetchError::Protocol),
            },
            Response::Error(code) => Err(FetchError::Refused(code)),
            _ => Err(FetchError::Protocol),
        }
    }

    /// Asks `peer` (a hub node) to fetch `digest` from us and store it:
    /// starts the copy there if it does not run yet and returns where it
    /// stands (ask again until `Stored`).
    pub async fn replicate(
        &self,
        peer: PeerId,
        digest: &Digest,
        ticket: &Ticket,
    ) -> Result<Replication, FetchError> {
        let req = Request::Replicate {
            digest: digest.clone(),
            ticket: ticket.clone(),
        };
        match self.request(peer, req).await? {
            Response::Replicated => Ok(Replication::Stored),
            Response::Replicating(n) => Ok(Replication::Receiving(n)),
            Response::Error(code) => Err(FetchError::Refused(code)),
            _ => Err(FetchError::Protocol),
        }
    }

    async fn request(&self, peer: PeerId, req: Request) -> Result<Response, FetchError> {
        self.call(|tx| Command::Request(peer, req, tx))
            .await
            .unwrap_or(Err(FetchError::Stopped))
    }

    /// Tells the node where `peer` can be reached.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) {
        let _ = self.tx.send(Command::AddAddress(peer, addr)).await;
    }

    /// Blocks `peer` for the life of the process: its connections close,
    /// it is neither dialed nor accepted, nor returned as a provider.
    /// True if it was not banned before.
    pub async fn ban(&self, peer: PeerId) -> bool {
        self.call(|tx| Command::Ban(peer, tx))
            .await
            .unwrap_or(false)
    }
}

/// The swarm and the bookkeeping of its task.
struct Driver {
    swarm: Swarm<Behaviour>,
    shared: Arc<Shared>,
    verifier: Arc<TicketVerifier>,
    source: Arc<dyn PieceSource>,
    config: NodeConfig,
    served_tx: mpsc::UnboundedSender<Served>,
    banned: HashSet<PeerId>,
    provides: HashMap<kad::QueryId, oneshot::Sender<Result<(), NodeError>>>,
    provider_queries: HashMap<kad::QueryId, ProviderQuery>,
    requests: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, FetchError>>>,
    /// Inbound requests being answered: requester, whether it counts as an
    /// upload, and the bytes of the response once known.
    serving: HashMap<InboundRequestId, Serving>,
    uploads_per_peer: HashMap<PeerId, usize>,
}

struct ProviderQuery {
    found: HashSet<PeerId>,
    replies: Vec<oneshot::Sender<Vec<PeerId>>>,
    deadline: Instant,
}

struct Serving {
    peer: PeerId,
    upload: bool,
    bytes: u64,
}

/// An answer computed by a serving task.
struct Served {
    id: InboundRequestId,
    channel: ResponseChannel<Response>,
    response: Response,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut served: mpsc::UnboundedReceiver<Served>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(s) = served.recv() => self.on_served(s),
                _ = tick.tick() => {
                    self.expire_provider_queries();
                    super::buffers::trim_idle();
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::ListenAddrs(tx) => {
                let _ = tx.send(self.swarm.listeners().cloned().collect());
            }
            Command::Connected(tx) => {
                let _ = tx.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Provide(digest, tx) => {
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(record_key(&digest))
                {
                    Ok(id) => {
                        self.provides.insert(id, tx);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(NodeError::Provide(format!("{e:?}"))));
                    }
                }
            }
            Command::Withdraw(digest, tx) => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .stop_providing(&record_key(&digest));
                let _ = tx.send(());
            }
            Command::IsProviding(digest, tx) => {
                use libp2p::kad::store::RecordStore;
                let me = self.shared.peer_id;
                let key = record_key(&digest);
                let providing = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .providers(&key)
                    .iter()
                    .any(|p| p.provider == me);
                let _ = tx.send(providing);
            }
            Command::Providers(digest, tx) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(record_key(&digest));
                self.provider_queries.insert(
                    id,
                    ProviderQuery {
                        found: HashSet::new(),
                        replies: vec![tx],
                        deadline: Instant::now() + self.config.providers_timeout,
                    },
                );
            }
            Command::Request(peer, req, tx) => {
                if self.banned.contains(&peer) {
                    let _ = tx.send(Err(FetchError::Banned));
                    return;
                }
                let id = self.swarm.behaviour_mut().pieces.send_request(&peer, req);
                self.requests.insert(id, tx);
            }
            Command::AddAddress(peer, addr) => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
                self.swarm.add_peer_address(peer, addr);
            }
            Command::Ban(peer, tx) => {
                let new = self.banned.insert(peer);
                if new {
                    tracing::warn!(%peer, "p2p: banning peer");
                    Stats::add(&self.shared.stats.peers_banned, 1);
                    let b = self.swarm.behaviour_mut();
                    b.blocked.block_peer(peer);
                    b.kad.remove_peer(&peer);
                }
                let _ = tx.send(new);
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocols.contains(&KAD_PROTOCOL) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if self.banned.contains(&peer) {
                        continue;
                    }
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.on_kad_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Pieces(ev)) => self.on_pieces_event(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::debug!(%address, "p2p listening");
            }
            _ => {}
        }
    }

    fn on_kad_event(&mut self, ev: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = ev
        else {
            return;
        };
        match result {
            kad::QueryResult::StartProviding(r) => {
                if let Some(tx) = self.provides.remove(&id) {
                    // The local record exists either way and is republished;
                    // a failed publication matters in a swarm of one only.
                    if let Err(e) = r {
                        tracing::debug!("p2p: publishing a provider record: {e}");
                    }
                    let _ = tx.send(Ok(()));
                }
            }
            kad::QueryResult::GetProviders(r) => {
                let me = self.shared.peer_id;
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r {
                    let fresh: Vec<PeerId> = providers
                        .into_iter()
                        .filter(|p| *p != me && !self.banned.contains(p))
                        .collect();
                    for p in &fresh {
                        // Dial while the query still knows the provider's
                        // addresses (it forgets them when it ends).
                        if !self.swarm.is_connected(p) {
                            let _ = self.swarm.dial(*p);
                        }
                    }
                    if let Some(q) = self.provider_queries.get_mut(&id) {
                        q.found.extend(fresh);
                    }
                }
                if step.last {
                    self.finish_provider_query(id);
                }
            }
            _ => {}
        }
    }

    fn finish_provider_query(&mut self, id: kad::QueryId) {
        if let Some(q) = self.provider_queries.remove(&id) {
            let found: Vec<PeerId> = q
                .found
                .into_iter()
                .filter(|p| !self.banned.contains(p))
                .collect();
            for tx in q.replies {
                let _ = tx.send(found.clone());
            }
        }
        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            q.finish();
        }
    }

    fn expire_provider_queries(&mut self) {
        let now = Instant::now();
        let due: Vec<kad::QueryId> = self
            .provider_queries
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.finish_provider_query(id);
        }
    }

    fn on_pieces_event(&mut self, ev: request_response::Event<Request, Response>) {
        use request_response::{Event, Message, OutboundFailure};
        match ev {
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(tx) = self.requests.remove(&request_id) {
                    let _ = tx.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(tx) = self.requests.remove(&request_id) {
                    let e = match error {
                        OutboundFailure::Timeout => FetchError::Timeout,
                        other => FetchError::Network(other.to_string()),
                    };
                    let _ = tx.send(Err(e));
                }
            }
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => self.on_request(peer, request_id, request, channel),
            Event::ResponseSent { request_id, .. } => {
                if let Some(s) = self.end_serving(request_id)
                    && s.bytes > 0
                {
                    Stats::add(&self.shared.stats.bytes_served, s.bytes);
                    Stats::add(&self.shared.stats.pieces_served, 1);
                }
            }
            Event::InboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                tracing::debug!(%peer, "p2p: inbound request failed: {error}");
                self.end_serving(request_id);
            }
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        req: Request,
        channel: ResponseChannel<Response>,
    ) {
        let upload = matches!(req, Request::Piece { .. });
        // Have requests are small but each costs a task: bounded too.
        if self.serving.len() >= 4 * self.config.max_uploads + 64 {
            Stats::add(&self.shared.stats.busy_refusals, 1);
            let _ = self
                .swarm
                .behaviour_mut()
                .pieces
                .send_response(channel, Response::Error(ErrorCode::Busy));
            return;
        }
        if upload {
            let mine = self.uploads_per_peer.get(&peer).copied().unwrap_or(0);
            let total: usize = self.uploads_per_peer.values().sum();
            if mine >= self.config.max_uploads_per_peer || total >= self.config.max_uploads {
                Stats::add(&self.shared.stats.busy_refusals, 1);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .pieces
                    .send_response(channel, Response::Error(ErrorCode::Busy));
                return;
            }
            *self.uploads_per_peer.entry(peer).or_default() += 1;
        }
        self.serving.insert(
            id,
            Serving {
                peer,
                upload,
                bytes: 0,
            },
        );
        let (shared, verifier, source, tx) = (
            self.shared.clone(),
            self.verifier.clone(),
            self.source.clone(),
            self.served_tx.clone(),
        );
        tokio::spawn(async move {
            let response = serve(&shared, verifier, source.as_ref(), peer, req).await;
            let _ = tx.send(Served {
                id,
                channel,
                response,
            });
        });
    }

    fn on_served(&mut self, s: Served) {
        let bytes = match &s.response {
            Response::Piece(b) => b.len() as u64,
            _ => 0,
        };
        match self.serving.get_mut(&s.id) {
            Some(entry) => entry.bytes = bytes,
            // The request failed meanwhile (connection closed, timeout).
            None => return,
        }
        if self
            .swarm
            .behaviour_mut()
            .pieces
            .send_response(s.channel, s.response)
            .is_err()
        {
            self.end_serving(s.id);
        }
    }

    fn end_serving(&mut self, id: InboundRequestId) -> Option<Serving> {
        let s = self.serving.remove(&id)?;
        if s.upload
            && let Some(n) = self.uploads_per_peer.get_mut(&s.peer)
        {
            *n -= 1;
            if *n == 0 {
                self.uploads_per_peer.remove(&s.peer);
            }
        }
        Some(s)
    }
}

/// The answer to one inbound request: the ticket first (no answer at all
/// about a blob without one), then the download in progress, then the
/// source.
async fn serve(
    shared: &Shared,
    verifier: Arc<TicketVerifier>,
    source: &dyn PieceSource,
    peer: PeerId,
    req: Request,
) -> Response {
    let (digest, ticket) = (req.digest().clone(), req.ticket().clone());
    if ticket.is_empty() {
        Stats::add(&shared.stats.requests_refused, 1);
        return Response::Error(ErrorCode::NoTicket);
    }
    // A first sight of a ticket costs a signature check: off the async
    // threads.
    let d = digest.clone();
    let checked = tokio::task::spawn_blocking(move || verifier.verify(&ticket, &peer, &d)).await;
    match checked {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, %digest, "p2p: refusing request: {e}");
            Stats::add(&shared.stats.requests_refused, 1);
            return Response::Error(ErrorCode::BadTicket);
        }
        Err(_) => return Response::Error(ErrorCode::Busy),
    }
    let partial = shared.partials.get(&digest);
    if let Some(p) = &partial {
        p.note_interested(peer);
    }
    match req {
        Request::Have { .. } => match partial {
            Some(p) => Response::Have(p.have_map()),
            None => Response::Have(source.have(&digest).await),
        },
        Request::Piece { index, .. } => {
            if let Some(p) = partial
                && p.has(index)
            {
                let read = tokio::task::spawn_blocking(move || p.read_piece(index)).await;
                return match read {
                    Ok(Some(bytes)) => Response::Piece(bytes),
                    _ => Response::Error(ErrorCode::NotHave),
                };
            }
            match source.piece(&digest, index).await {
                Some(bytes) => Response::Piece(bytes),
                None => Response::Error(ErrorCode::NotHave),
            }
        }
        Request::Table { .. } => match source.table(&digest).await {
            Some(t) => Response::Table(Bytes::from(t.to_bytes())),
            None => Response::Error(ErrorCode::NotHave),
        },
        Request::Replicate { .. } => match source.replicate(&digest, peer).await {
            Replication::Stored => Response::Replicated,
            Replication::Receiving(n) => Response::Replicating(n),
            Replication::Refused => Response::Error(ErrorCode::NotHave),
        },
    }
}

/// The Kademlia key of a blob: the bytes of its digest text
/// (`sha256:<hex>`), so digests of different algorithms never collide.
pub fn record_key(digest: &Digest) -> kad::RecordKey {
    kad::RecordKey::new(&digest.as_str())
}

fn identity_err(path: &Path, message: impl ToString) -> NodeError {
    NodeError::Identity {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The node's ed25519 key at `<dir>/p2p/identity.key` (libp2p's protobuf
/// encoding), created with mode 0600 on first start. A key readable by
/// others is tightened to 0600 with a warning.
pub fn load_or_create_identity(dir: &Path) -> Result<Keypair, NodeError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let p2p = dir.join("p2p");
    std::fs::create_dir_all(&p2p).map_err(|e| identity_err(&p2p, e))?;
    let path = p2p.join("identity.key");
    for _ in 0..2 {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let meta = std::fs::metadata(&path).map_err(|e| identity_err(&path, e))?;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "p2p identity key readable by others: setting mode 0600");
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| identity_err(&path, e))?;
                }
                return Keypair::from_protobuf_encoding(&bytes).map_err(|e| identity_err(&path, e));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(identity_err(&path, e)),
        }
        let key = Keypair::generate_ed25519();
        let encoded = key
            .to_protobuf_encoding()
            .map_err(|e| identity_err(&path, e))?;
        // Written aside and linked into place, so a crash never leaves a
        // truncated key and two processes starting at once agree on one.
        let tmp = p2p.join(format!(".identity.key.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| identity_err(&tmp, e))?;
        f.write_all(&encoded)
            .and_then(|_| f.sync_all())
            .map_err(|e| identity_err(&tmp, e))?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(&p2p) {
                    let _ = d.sync_all();
                }
                return Ok(key);
            }
            // Another process won the race: use its key.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(identity_err(&path, e)),
        }
    }
    Err(identity_err(&path, "could not be created"))
}
