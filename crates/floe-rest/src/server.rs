//! The HTTP server: bound synchronously (so a taken port is an error of
//! [`RestServer::start`], not a log line later), served on a dedicated
//! thread with its own single-threaded tokio runtime (the job's threads are
//! not async, and a control plane needs no more than one thread), and shut
//! down gracefully when the [`RestServer`] is dropped.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use floe_core::PortRanges;
use floe_runtime::JobControl;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::directory::JobDirectory;
use crate::error::RestError;
use crate::routes::UnfetchedResults;

/// Connections served at once. The API is a control plane for one job
/// (the CLI opens one connection per command), so a few dozen is plenty;
/// further connections get a 503 and are closed, so a flood of idle
/// connections cannot exhaust the process's file descriptors.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// A connection that neither sends nor receives a byte for this long is
/// closed: a client that opens a connection and then stalls (or sends a
/// request one byte a minute) cannot keep its slot forever. Longer than
/// any request takes to answer (a state query waits at most 10 s).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many connections are served at once and how long one may idle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Duration,
}

/// The answer to a connection over the limit, written without waiting (it
/// fits any socket buffer) before the connection is closed.
fn busy_response(limit: usize) -> Vec<u8> {
    let body = format!(
        "{{\"errors\":[\"the REST endpoint serves its limit of {limit} connections at once; try again later\"]}}"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How long requests still in flight may take to finish after shutdown was
/// asked for; then their connections are dropped, so dropping a server never
/// hangs on a slow client.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Longest a dropped server keeps serving so that clients can fetch the
/// final status of the savepoint and stop requests they triggered (a stop
/// ends the job right after its savepoint; the CLI polls every 200 ms).
pub(crate) const LINGER: Duration = Duration::from_secs(3);

/// A running REST endpoint; it stops serving when dropped.
#[derive(Debug)]
#[must_use = "the REST endpoint stops as soon as the RestServer is dropped"]
pub struct RestServer {
    local_addr: SocketAddr,
    unreported: UnfetchedResults,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RestServer {
    /// Serves `control`'s job on `address:port` (port 0: any free port, see
    /// [`RestServer::local_addr`]). Fails at once, naming the address and
    /// the operating system's reason, when the socket cannot be bound.
    pub fn start(
        control: JobControl,
        address: &str,
        port: u16,
        auth: crate::auth::RestAuth,
    ) -> Result<RestServer, RestError> {
        Self::start_directory(JobDirectory::of_one(control), address, port, auth)
    }

    /// Serves every job of `directory` (as it changes) on `address:port`:
    /// [`RestServer::start`] for many jobs, with nothing else merged in.
    pub fn start_directory(
        directory: JobDirectory,
        address: &str,
        port: u16,
        auth: crate::auth::RestAuth,
    ) -> Result<RestServer, RestError> {
        let (app, unfetched) = crate::routes::router(directory.0, auth);
        Self::start_router(app, unfetched, address, port)
    }

    /// Serves only the job's Prometheus endpoint (`GET /metrics`) on
    /// `address` and the first free port of `ports`: Flink's
    /// `metrics.reporter.prom.port`.
    pub fn start_prometheus(
        control: JobControl,
        address: &str,
        ports: &PortRanges,
    ) -> Result<RestServer, RestError> {
        let app = crate::routes::prometheus_router(JobDirectory::of_one(control).0);
        Self::start_app_on_first(app, address, ports)
    }

    /// Serves `app` on `address` and the first port of `ports` that is
    /// free (a reporter's port range: several processes on one host each
    /// take their own); the error of the last port tried otherwise.
    pub fn start_app_on_first(
        app: Router,
        address: &str,
        ports: &PortRanges,
    ) -> Result<RestServer, RestError> {
        let mut last = None;
        for port in ports.ports() {
            match Self::start_router(app.clone(), UnfetchedResults::default(), address, port) {
                Ok(server) => return Ok(server),
                Err(RestError::Bind { address, source })
                    if source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    last = Some(RestError::Bind { address, source });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RestError::Bind {
            address: format!("{address}:{ports}"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no port to try"),
        }))
    }

    /// Serves only `GET /metrics` of every job of `directory` on
    /// `address` and the first free port of `ports`: a cluster
    /// JobManager's `metrics.reporter.prom.port`.
    pub fn start_prometheus_directory(
        directory: JobDirectory,
        address: &str,
        ports: &PortRanges,
    ) -> Result<RestServer, RestError> {
        let app = crate::routes::prometheus_router(directory.0);
        Self::start_app_on_first(app, address, ports)
    }

    /// Serves another process role's routes (the cluster JobManager's
    /// `/overview` and `/taskmanagers`) with the same connection limits,
    /// idle timeout and graceful shutdown as a job's endpoint.
    pub fn start_app(app: Router, address: &str, port: u16) -> Result<RestServer, RestError> {
        Self::start_router(app, UnfetchedResults::default(), address, port)
    }

    /// [`RestServer::start_app`] for an app that holds the jobs routes
    /// ([`crate::jobs_router`], merged with others): on drop the server
    /// lingers (at most a few seconds) while a savepoint or stop triggered
    /// through it has a final status no client fetched yet.
    pub fn start_jobs_app(
        app: Router,
        unfetched: UnfetchedResults,
        address: &str,
        port: u16,
    ) -> Result<RestServer, RestError> {
        Self::start_router(app, unfetched, address, port)
    }

    /// Serves any router: [`RestServer::start`] without a job, for tests.
    pub(crate) fn start_router(
        app: Router,
        unreported: UnfetchedResults,
        address: &str,
        port: u16,
    ) -> Result<RestServer, RestError> {
        Self::start_limited(
            app,
            unreported,
            address,
            port,
            ConnectionLimits {
                max_connections: MAX_CONNECTIONS,
                idle_timeout: IDLE_TIMEOUT,
            },
        )
    }

    /// [`RestServer::start_router`] with other connection limits (tests).
    pub(crate) fn start_limited(
        app: Router,
        unreported: UnfetchedResults,
        address: &str,
        port: u16,
        limits: ConnectionLimits,
    ) -> Result<RestServer, RestError> {
        let display = display_address(address, port);
        let bind_err = |source| RestError::Bind {
            address: display.clone(),
            source,
        };
        let listener = std::net::TcpListener::bind((address, port)).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .thread_name("floe-rest")
            .build()
            .map_err(RestError::Runtime)?;
        let listener = {
            let _guard = runtime.enter();
            LimitedListener {
                inner: TcpListener::from_std(listener).map_err(bind_err)?,
                permits: Arc::new(Semaphore::new(limits.max_connections)),
                limits,
            }
        };
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("floe-rest-{}", local_addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let (graceful_tx, graceful_rx) = oneshot::channel::<()>();
                    let server = tokio::spawn(
                        axum::serve(listener, app)
                            .with_graceful_shutdown(async move {
                                let _ = graceful_rx.await;
                            })
                            .into_future(),
                    );
                    // A send or the sender's drop both mean: stop.
                    let _ = shutdown_rx.await;
                    let _ = graceful_tx.send(());
                    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
                        Ok(Ok(Ok(()))) => {}
                        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "REST server failed"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "REST server task failed"),
                        Err(_) => tracing::debug!(
                            "REST requests still open after {SHUTDOWN_GRACE:?}; dropping them"
                        ),
                    }
                });
                // Remaining connection tasks are dropped with the runtime.
                runtime.shutdown_background();
            })
            .map_err(RestError::Runtime)?;
        tracing::debug!(%local_addr, "REST endpoint listening");
        Ok(RestServer {
            local_addr,
            unreported,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address actually bound (with the chosen port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        let started = Instant::now();
        while self.unreported.len() > 0 && started.elapsed() < LINGER {
            std::thread::sleep(Duration::from_millis(20));
        }
        match self.unreported.len() {
            0 => {}
            n => tracing::info!(
                addr = %self.local_addr,
                "stopping the REST endpoint with {n} savepoint result(s) never fetched"
            ),
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!(addr = %self.local_addr, "the REST server thread panicked");
        }
    }
}

/// The server's listener: at most [`MAX_CONNECTIONS`] connections, each
/// closed after [`IDLE_TIMEOUT`] without traffic.
struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, typically: let connections
                    // close instead of spinning.
                    tracing::debug!(error = %e, "REST accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    return (
                        LimitedStream {
                            stream,
                            _permit: permit,
                            idle: Box::pin(tokio::time::sleep(self.limits.idle_timeout)),
                            idle_timeout: self.limits.idle_timeout,
                        },
                        peer,
                    );
                }
                Err(_) => {
                    tracing::debug!(%peer, "REST endpoint busy: connection refused");
                    let _ = stream.try_write(&busy_response(self.limits.max_connections));
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A served connection: holds its slot, and fails once idle too long.
struct LimitedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
}

impl LimitedStream {
    fn progressed(&mut self) {
        let deadline = tokio::time::Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }

    fn check_idle(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let timeout = self.idle_timeout;
        self.idle.as_mut().poll(cx).map(|()| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no traffic for {timeout:?}"),
            )
        })
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.check_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.check_idle(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// `host:port`, with brackets around an IPv6 literal.
fn display_address(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    fn empty_app() -> Router {
        Router::new().fallback(|| async { "fallback" })
    }

    /// A one-shot HTTP/1.1 GET over a plain socket: the status line and body.
    fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn port_zero_picks_a_free_port_and_drop_stops_serving() {
        let server =
            RestServer::start_router(empty_app(), UnfetchedResults::default(), "127.0.0.1", 0)
                .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let reply = get(addr, "/anything").unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("fallback"), "{reply}");
        let started = std::time::Instant::now();
        drop(server);
        assert!(
            started.elapsed() < SHUTDOWN_GRACE + Duration::from_secs(1),
            "drop took {:?}",
            started.elapsed()
        );
        let err = TcpStream::connect(addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn drop_does_not_hang_on_an_idle_keep_alive_connection() {
        let server =
            RestServer::start_router(empty_app(), UnfetchedResults::default(), "127.0.0.1", 0)
                .unwrap();
        let addr = server.local_addr();
        let mut idle = TcpStream::connect(addr).unwrap();
        write!(idle, "GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut buf = [0u8; 256];
        let n = idle.read(&mut buf).unwrap();
        assert!(n > 0);
        // A half-sent request, too.
        let mut stuck = TcpStream::connect(addr).unwrap();
        write!(stuck, "GET / HTTP/1.1\r\nHo").unwrap();
        let started = std::time::Instant::now();
        drop(server);
        assert!(started.elapsed() < SHUTDOWN_GRACE + Duration::from_secs(1));
    }

    #[test]
    fn a_port_in_use_is_an_error_naming_the_address_and_the_reason() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err =
            RestServer::start_router(empty_app(), UnfetchedResults::default(), "127.0.0.1", port)
                .unwrap_err();
        assert!(matches!(err, RestError::Bind { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(msg.to_lowercase().contains("in use"), "{msg}");
    }

    #[test]
    fn an_unknown_host_or_foreign_address_is_an_error_naming_it() {
        let err = RestServer::start_router(
            empty_app(),
            UnfetchedResults::default(),
            "no-such-host.invalid",
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid:0"), "{err}");
        // An address of no local interface (TEST-NET-1, never assigned).
        let err =
            RestServer::start_router(empty_app(), UnfetchedResults::default(), "192.0.2.1", 0)
                .unwrap_err();
        assert!(err.to_string().contains("192.0.2.1:0"), "{err}");
    }

    #[test]
    fn ipv6_addresses_are_bracketed_in_messages() {
        assert_eq!(display_address("::1", 80), "[::1]:80");
        assert_eq!(display_address("127.0.0.1", 80), "127.0.0.1:80");
    }
}
