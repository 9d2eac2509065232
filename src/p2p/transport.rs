//! The muxer of the node's TCP connections: yamux with bigger frames.
//!
//! yamux flushes its socket after every frame, and libp2p-yamux keeps
//! yamux's default of 16 KiB frames (and does not expose the setting), so
//! a piece went out as 16 KiB noise frames, each its own `send` and TCP
//! segment train through the kernel. With frames of about 256 KiB sized
//! to the noise channel's messages, a frame goes out as four whole 64 KiB
//! messages in one write. `Muxer` is libp2p-yamux's adapter (MIT, Parity
//! Technologies) over a yamux config of our own.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::futures::{AsyncRead, AsyncWrite};

/// A yamux frame header (the spec's; the crate keeps its constant private).
const HEADER: usize = 12;

/// Largest yamux frame body sent (a stream's send window bounds it too):
/// with its header, four whole noise messages.
const FRAME: usize = super::noise::BULK_PLAINTEXT - HEADER;

/// yamux with `FRAME`-sized frames.
#[derive(Clone)]
pub struct Yamux(yamux::Config);

impl Yamux {
    pub fn new() -> Self {
        let mut config = yamux::Config::default();
        config.set_split_send_size(FRAME);
        Yamux(config)
    }

    fn connect<C: AsyncRead + AsyncWrite + Unpin>(self, socket: C, mode: yamux::Mode) -> Ready<C> {
        std::future::ready(Ok(Muxer::new(yamux::Connection::new(socket, self.0, mode))))
    }
}

type Ready<C> = std::future::Ready<Result<Muxer<C>, std::io::Error>>;

impl UpgradeInfo for Yamux {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = Ready<C>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        self.connect(socket, yamux::Mode::Server)
    }
}

impl<C> OutboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = Ready<C>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        self.connect(socket, yamux::Mode::Client)
    }
}

/// Inbound streams held while the swarm is not asking for them; beyond
/// this many they are dropped (yamux's own backlog of unacknowledged
/// streams, which peers respect).
const MAX_BUFFERED_INBOUND: usize = 256;

/// A yamux connection as libp2p's `StreamMuxer`.
pub struct Muxer<C> {
    connection: yamux::Connection<C>,
    /// Inbound streams that arrived while the swarm polled the connection
    /// as a whole (`poll`), for `poll_inbound`.
    inbound: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
}

impl<C> Muxer<C> {
    fn new(connection: yamux::Connection<C>) -> Self {
        Muxer {
            connection,
            inbound: VecDeque::new(),
            inbound_waker: None,
        }
    }
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<yamux::Stream, yamux::ConnectionError>> {
        match self.connection.poll_next_inbound(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(r),
            Poll::Ready(None) => Poll::Ready(Err(yamux::ConnectionError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Substream = yamux::Stream;
    type Error = yamux::ConnectionError;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        if let Some(stream) = self.inbound.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if let Poll::Ready(r) = self.poll_next(cx) {
            return Poll::Ready(r);
        }
        self.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.connection.poll_new_outbound(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.connection.poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let stream = match this.poll_next(cx) {
            Poll::Ready(r) => r?,
            Poll::Pending => return Poll::Pending,
        };
        if this.inbound.len() >= MAX_BUFFERED_INBOUND {
            tracing::warn!(%stream, "p2p: dropping an inbound stream: too many waiting");
            drop(stream);
        } else {
            this.inbound.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        }
        // Come back at once: the connection makes progress only when polled.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
