//! What both roles need to speak gRPC: lazily connecting channels to the
//! other side, listeners bound synchronously (so a taken port is an error
//! at start), `host:port` parsing, and telling a refused connection from
//! other failures (a refused connection means the process is gone).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::ClusterError;

/// A channel to `address` (`host:port`) that connects on first use and
/// reconnects after a failure; each connection attempt may take
/// `connect_timeout`. Must be called within the role's runtime.
pub(crate) fn channel(address: &str, connect_timeout: Duration) -> Result<Channel, ClusterError> {
    let endpoint =
        Endpoint::from_shared(format!("http://{address}")).map_err(|e| ClusterError::Address {
            address: address.to_string(),
            reason: e.to_string(),
        })?;
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Resolves `host:port` to its first socket address.
pub(crate) fn resolve(address: &str) -> Result<SocketAddr, ClusterError> {
    let invalid = |reason: String| ClusterError::Address {
        address: address.to_string(),
        reason,
    };
    let (host, port) = split_host_port(address).ok_or_else(|| {
        invalid("expected host:port (an IPv6 address in brackets: [::1]:6123)".into())
    })?;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| invalid(e.to_string()))?
        .next()
        .ok_or_else(|| invalid("the host has no address".into()))
}

/// Splits `host:port` (`[v6]:port` too).
pub(crate) fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// `host:port`, with brackets around an IPv6 address.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Binds a listening socket on `host:port` now (the error names the
/// address), ready to hand to tonic inside the runtime.
pub(crate) fn bind(host: &str, port: u16) -> Result<std::net::TcpListener, ClusterError> {
    let address = join_host_port(host, port);
    let bind_err = |source| ClusterError::Bind {
        address: address.clone(),
        source,
    };
    let listener = std::net::TcpListener::bind((host, port)).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok(listener)
}

/// Whether a failed call never reached the other side because its
/// endpoint refused the connection: the process is gone (or not started).
pub(crate) fn is_connection_refused(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("127.0.0.1:6123"), Some(("127.0.0.1", 6123)));
        assert_eq!(split_host_port("[::1]:80"), Some(("::1", 80)));
        assert_eq!(split_host_port("localhost"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert!(
            resolve("nohost")
                .unwrap_err()
                .to_string()
                .contains("nohost")
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_recognised() {
        // A port nothing listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ch = channel(&format!("127.0.0.1:{port}"), Duration::from_secs(1)).unwrap();
        let mut client = crate::proto::job_manager_client::JobManagerClient::new(ch);
        let status = client
            .heartbeat(crate::proto::TaskManagerHeartbeat::default())
            .await
            .unwrap_err();
        assert!(is_connection_refused(&status), "{status:?}");
    }
}
