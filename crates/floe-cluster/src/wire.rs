//! Conversions between the wire messages of [`crate::proto`] and the
//! domain types, with the `INVALID_ARGUMENT` statuses a malformed message
//! earns. One place, so both services read messages the same way.

use floe_core::JobId;
use tonic::Status;

use crate::handler::Hardware;
use crate::ids::{Attempt, JobAttempt};
use crate::proto;

/// The job attempt a message names; a missing or malformed one is refused.
pub(crate) fn job_attempt(job: Option<proto::JobAttempt>) -> Result<JobAttempt, Status> {
    let job = job.ok_or_else(|| Status::invalid_argument("the message names no job attempt"))?;
    let id: JobId = job
        .job_id
        .parse()
        .map_err(|e: floe_core::JobIdParseError| Status::invalid_argument(e.to_string()))?;
    Ok(JobAttempt {
        job: id,
        attempt: Attempt(job.attempt),
    })
}

/// The wire form of a job attempt.
pub(crate) fn to_proto(job: JobAttempt) -> proto::JobAttempt {
    proto::JobAttempt {
        job_id: job.job.to_string(),
        attempt: job.attempt.0,
    }
}

/// The domain form of the hardware description.
pub(crate) fn hardware(h: Option<proto::HardwareDescription>) -> Option<Hardware> {
    h.map(|h| Hardware {
        cpu_cores: h.cpu_cores,
        physical_memory_bytes: h.physical_memory_bytes,
    })
}

/// The wire form of the hardware description.
pub(crate) fn hardware_to_proto(h: Hardware) -> proto::HardwareDescription {
    proto::HardwareDescription {
        cpu_cores: h.cpu_cores,
        physical_memory_bytes: h.physical_memory_bytes,
    }
}
