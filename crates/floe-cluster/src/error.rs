//! The crate's typed errors: what can stop a role from starting or running
//! ([`ClusterError`]) and why one RPC to the other side failed
//! ([`RpcError`]).

use std::time::Duration;

use crate::config::ClusterConfigError;

/// Why a JobManager or TaskManager role cannot start or had to give up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ClusterConfigError),
    /// An address given on the command line or in the configuration is
    /// not `host:port` or does not resolve.
    #[error("invalid address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A listening socket could not be bound.
    #[error("cannot bind {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The role's async runtime or a thread could not be started.
    #[error("cannot start the control plane's runtime: {0}")]
    Runtime(std::io::Error),
    /// The JobManager's REST endpoint could not start.
    #[error(transparent)]
    Rest(#[from] floe_rest::RestError),
    /// The TaskManager could not register within
    /// `taskmanager.registration.timeout`.
    #[error(
        "could not register with the JobManager at {jobmanager} within {} ms (taskmanager.registration.timeout): {last_error}",
        .timeout.as_millis()
    )]
    RegistrationTimeout {
        /// The JobManager's RPC address.
        jobmanager: String,
        /// The timeout that ran out.
        timeout: Duration,
        /// Why the last attempt failed.
        last_error: String,
    },
}

/// Why an RPC to the other side failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// There is nobody to send to: the TaskManager is not registered (with
    /// this JobManager, or at all).
    #[error("{0}")]
    NotConnected(String),
    /// The other side answered with an error: fencing refusals are
    /// `FailedPrecondition`, a handler's refusal `Aborted`.
    #[error("{peer} refused the request ({code:?}): {message}")]
    Refused {
        /// Who refused.
        peer: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The other side's message.
        message: String,
    },
    /// The other side could not be reached or did not answer in time.
    #[error("{peer} is unreachable: {message}")]
    Unreachable {
        /// Who.
        peer: String,
        /// What happened.
        message: String,
    },
}

impl RpcError {
    /// Classifies a failed call's status.
    pub(crate) fn from_status(peer: &str, status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RpcError::Unreachable {
                    peer: peer.to_string(),
                    message: status.message().to_string(),
                }
            }
            code => RpcError::Refused {
                peer: peer.to_string(),
                code,
                message: status.message().to_string(),
            },
        }
    }

    /// The gRPC code when the other side refused, else `None`.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            RpcError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}
