//! How a TaskManager's data plane is named to its peers.
//!
//! The control plane carries a TaskManager's data address as an opaque
//! string; the data plane needs the address to dial and the id the peer's
//! handshake must show. Both travel as one endpoint, `host:port@<id>`
//! (32 hex digits), which only this layer writes and reads.

use std::net::{SocketAddr, ToSocketAddrs};

/// A TaskManager's data endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataEndpoint {
    /// Where its data plane listens.
    pub address: SocketAddr,
    /// Its data-plane id.
    pub id: u128,
}

/// A data endpoint that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad data endpoint '{endpoint}': {reason} (expected host:port@<32 hex digits>)")]
pub struct EndpointError {
    /// What was given.
    pub endpoint: String,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for DataEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{:032x}", self.address, self.id)
    }
}

impl std::str::FromStr for DataEndpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, EndpointError> {
        let bad = |reason: &str| EndpointError {
            endpoint: s.to_string(),
            reason: reason.to_string(),
        };
        let (address, id) = s.rsplit_once('@').ok_or_else(|| bad("no '@'"))?;
        if id.len() != 32 {
            return Err(bad("the id is not 32 hex digits"));
        }
        let id = u128::from_str_radix(id, 16).map_err(|_| bad("the id is not hexadecimal"))?;
        let address = address
            .to_socket_addrs()
            .map_err(|e| bad(&format!("the address does not resolve: {e}")))?
            .next()
            .ok_or_else(|| bad("the address resolves to nothing"))?;
        Ok(DataEndpoint { address, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_reads_back_what_it_writes() {
        let e = DataEndpoint {
            address: "127.0.0.3:4100".parse().unwrap(),
            id: 0xabc,
        };
        assert_eq!(
            e.to_string(),
            "127.0.0.3:4100@00000000000000000000000000000abc"
        );
        assert_eq!(e.to_string().parse::<DataEndpoint>().unwrap(), e);
    }

    #[test]
    fn a_bad_endpoint_says_what_is_wrong() {
        for (s, why) in [
            ("127.0.0.1:1", "no '@'"),
            ("127.0.0.1:1@12", "not 32 hex digits"),
            (
                "127.0.0.1:1@zz000000000000000000000000000000",
                "not hexadecimal",
            ),
            (
                "nowhere@00000000000000000000000000000001",
                "does not resolve",
            ),
        ] {
            let e = s.parse::<DataEndpoint>().unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
    }
}
