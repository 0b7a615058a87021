//! The API's HTTP server: `axum::serve` with bounds, so that clients can never take the
//! descriptors the health checker and the data plane need (1,100 idle connections under a
//! 1,024-descriptor limit once made every probe fail).
//!
//! * At most [`HttpLimits::max_connections`] connections are open; one over the cap is closed
//!   as soon as it is accepted, and counted.
//! * A client has [`HttpLimits::header_read_timeout`] to send a request's headers, counted
//!   from the moment the server waits for them: an idle keep-alive connection closes after it
//!   too.
//! * A connection that moves no byte either way for [`HttpLimits::idle_timeout`] (a client
//!   that stopped reading its answer, a request body that never comes) is closed.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinSet,
    time::Instant,
};
use tracing::{debug, warn};

/// Bounds of the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, also the longest a keep-alive
    /// connection waits for its next request.
    pub header_read_timeout: Duration,
    /// Time a connection may move no byte at all before it is closed.
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Counters of the API server, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct HttpStats {
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl HttpStats {
    /// Connections served since the start (within the cap).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
    /// Connections closed at once because `max_connections` were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves; then stops accepting
/// and closes every connection. Accept errors (out of descriptors) are logged and retried
/// after a pause, never fatal.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "API accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let refused = stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if refused.is_power_of_two() {
                warn!(%peer, refused, max = limits.max_connections, "API connection cap reached; closing new connections");
            }
            drop(stream);
            continue;
        };
        let app = app.clone();
        let stats = stats.clone();
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        connections.spawn(async move {
            if let Err(e) = connection(stream, app, limits).await {
                debug!(%peer, error = %e, "API connection ended");
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    connections.shutdown().await;
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("no byte moved for {0:?}")]
    Idle(Duration),
}

async fn connection(
    stream: TcpStream,
    app: Router,
    limits: HttpLimits,
) -> Result<(), ConnectionError> {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
        start,
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let deadline = start + last + limits.idle_timeout;
        tokio::select! {
            done = conn.as_mut() => return Ok(done?),
            () = tokio::time::sleep_until(deadline) => {
                if activity.load(Ordering::Relaxed) == last.as_millis() as u64 {
                    return Err(ConnectionError::Idle(limits.idle_timeout));
                }
            }
        }
    }
}

/// A stream that records when it last moved a byte, in ms since `start`.
struct Watched {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
    start: Instant,
}

impl Watched {
    fn touch(&self, moved: bool) {
        if moved {
            let ms = self.start.elapsed().as_millis() as u64;
            self.activity.store(ms, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.touch(buf.filled().len() > before);
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.touch(matches!(polled, Poll::Ready(Ok(n)) if n > 0));
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.touch(matches!(polled, Poll::Ready(Ok(n)) if n > 0));
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
