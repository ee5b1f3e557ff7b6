//! The `floe` commands that talk to running jobs (`list`, `savepoint`,
//! `cancel`, `stop`, `checkpoints`): finding a job (the host's job registry,
//! or `-m/--jobmanager host:port`) and a small blocking client for its REST
//! API.
//!
//! Blocking on purpose: each command makes a handful of sequential requests,
//! so an async runtime would only add weight to the CLI.

pub mod commands;
mod format;
pub mod submit;

use std::time::Duration;

use serde_json::Value;

/// How long one request may take; the job answers from memory, so a slow
/// answer means something is wrong, not that the job is busy.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest request target (path and query) sent: the HTTP client
/// cannot represent a longer URI (65,534 bytes), and the endpoint's HTTP
/// parser refuses far shorter ones, so a longer request is refused here
/// with a message instead of failing inside the client.
pub const MAX_TARGET: usize = 16 << 10;

/// The environment variable holding the REST token (`rest.auth.token`) the
/// commands send; `--token` overrides it.
pub const TOKEN_ENV: &str = "FLOE_REST_TOKEN";

/// How the job-control commands reach a job.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `-m host:port`, else the job registry.
    pub jobmanager: Option<String>,
    /// The bearer token to send, if any.
    pub token: Option<String>,
}

/// `/segment/segment…` with every segment percent-encoded (all but
/// unreserved characters), so a name holding `/`, `?`, `#` or `%` stays one
/// segment and `.` or `..` is a name, not a step up the path.
pub fn api_path(segments: &[&str]) -> String {
    let mut out = String::new();
    for segment in segments {
        out.push('/');
        let dots_only = !segment.is_empty() && segment.bytes().all(|b| b == b'.');
        for b in segment.bytes() {
            let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~');
            if unreserved || (b == b'.' && !dots_only) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Why a request to a job's REST endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address (refused, unreachable, timed out).
    #[error(
        "cannot reach the job's REST endpoint at {address}: {reason}; the job may have ended (`floe list` shows the running jobs)"
    )]
    Unreachable {
        /// `host:port`.
        address: String,
        /// What the connection attempt ran into.
        reason: String,
    },
    /// The job answered with an error status and Flink's error body.
    #[error("{message} (HTTP {status} from {method} http://{address}{path})")]
    Api {
        /// `host:port`.
        address: String,
        /// The HTTP method.
        method: &'static str,
        /// The request path.
        path: String,
        /// The HTTP status code.
        status: u16,
        /// The `errors` of the body, joined (or the raw body).
        message: String,
    },
    /// The answer was not what a Floe (or Flink) endpoint sends.
    #[error("unexpected answer to {method} {path} from {address}: {reason}")]
    Protocol {
        /// `host:port`.
        address: String,
        /// The HTTP method.
        method: &'static str,
        /// The request path.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The request cannot be sent: its path and query are too long.
    #[error(
        "the request is too long to send ({len} bytes of path and query, the limit is {MAX_TARGET}): {what}"
    )]
    TooLong {
        /// What made it long.
        what: String,
        /// Its length.
        len: usize,
    },
}

/// A client for one REST endpoint.
pub struct RestClient {
    agent: ureq::Agent,
    address: String,
    /// `Authorization` header value, when a token was given.
    authorization: Option<String>,
}

impl RestClient {
    /// A client for the endpoint at `address` (`host:port`; a leading
    /// `http://` and a trailing `/` are accepted, as users copy the URL the
    /// job prints).
    pub fn new(address: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let address = normalize_address(address)?;
        let authorization = match token.map(str::trim) {
            None => None,
            Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(format!("Bearer {t}"))
            }
            Some(_) => anyhow::bail!(
                "the REST token (--token or ${TOKEN_ENV}) must be printable ASCII without spaces"
            ),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Ok(RestClient {
            agent,
            address,
            authorization,
        })
    }

    /// The endpoint's `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The full URL of `target` (path and query), refused when too long.
    fn url(&self, target: &str, what: &str) -> Result<String, ClientError> {
        if target.len() > MAX_TARGET {
            return Err(ClientError::TooLong {
                what: what.to_string(),
                len: target.len(),
            });
        }
        Ok(format!("http://{}{target}", self.address))
    }

    fn with_auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(a) => r.header("Authorization", a),
            None => r,
        }
    }

    /// `GET path`, the JSON answer.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        let url = self.url(path, "the path")?;
        let resp = self.with_auth(self.agent.get(&url)).call();
        self.answer("GET", path, resp)
    }

    /// `GET path?name=value…` (values percent-encoded), the JSON answer.
    pub fn get_with_query(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        let mut encoded = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            encoded.append_pair(k, v);
        }
        let target = format!("{path}?{}", encoded.finish());
        let names: Vec<&str> = query.iter().map(|(k, _)| *k).collect();
        let url = self.url(&target, &format!("the value of {}", names.join(", ")))?;
        let resp = self.with_auth(self.agent.get(&url)).call();
        self.answer("GET", path, resp)
    }

    /// `POST path` with a JSON body, the JSON answer.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = self.url(path, "the path")?;
        let resp = self.with_auth(self.agent.post(&url)).send_json(body);
        self.answer("POST", path, resp)
    }

    /// `PATCH path` without a body, the JSON answer.
    pub fn patch(&self, path: &str) -> Result<Value, ClientError> {
        let url = self.url(path, "the path")?;
        let resp = self.with_auth(self.agent.patch(&url)).send_empty();
        self.answer("PATCH", path, resp)
    }

    fn answer(
        &self,
        method: &'static str,
        path: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ClientError> {
        let protocol = |reason: String| ClientError::Protocol {
            address: self.address.clone(),
            method,
            path: path.to_string(),
            reason,
        };
        let mut resp = resp.map_err(|e| self.transport_error(method, path, e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| protocol(format!("cannot read the body: {e}")))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if !(200..300).contains(&status) {
            let message = json
                .as_ref()
                .and_then(|j| j.get("errors"))
                .and_then(Value::as_array)
                .map(|errs| {
                    errs.iter()
                        .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_else(|| text.trim().to_string());
            return Err(ClientError::Api {
                address: self.address.clone(),
                method,
                path: path.to_string(),
                status,
                message,
            });
        }
        json.ok_or_else(|| protocol(format!("status {status}, body is not JSON: {text:?}")))
    }

    fn transport_error(&self, method: &'static str, path: &str, e: ureq::Error) -> ClientError {
        let unreachable = |reason: String| ClientError::Unreachable {
            address: self.address.clone(),
            reason,
        };
        match e {
            ureq::Error::Io(io) => match io.kind() {
                std::io::ErrorKind::ConnectionRefused => unreachable("connection refused".into()),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof => {
                    unreachable("the connection was closed".into())
                }
                _ => unreachable(io.to_string()),
            },
            ureq::Error::Timeout(t) => unreachable(format!(
                "no answer in time ({t}, limit {REQUEST_TIMEOUT:?})"
            )),
            ureq::Error::HostNotFound => unreachable("host not found".into()),
            ureq::Error::ConnectionFailed => unreachable("the connection failed".into()),
            other => ClientError::Protocol {
                address: self.address.clone(),
                method,
                path: path.to_string(),
                reason: other.to_string(),
            },
        }
    }
}

/// `host:port` from what a user typed.
fn normalize_address(input: &str) -> anyhow::Result<String> {
    let s = input.trim();
    let s = s.strip_prefix("http://").unwrap_or(s);
    let s = s.trim_end_matches('/');
    if s.starts_with("https://") {
        anyhow::bail!("-m/--jobmanager {input}: Floe's REST endpoint speaks plain HTTP, not HTTPS");
    }
    let port = s
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(_))) if !host.is_empty() && !s.contains('/') => Ok(s.to_string()),
        _ => anyhow::bail!(
            "-m/--jobmanager {input}: expected host:port (the address a job prints as `REST endpoint: http://host:port`)"
        ),
    }
}

/// A job to talk to: its full id and its endpoint.
pub struct JobTarget {
    /// The job's full id.
    pub job_id: String,
    /// A client for its endpoint.
    pub client: RestClient,
}

/// Finds `job` (a full id or a unique prefix): at `jobmanager` when given,
/// else in the host's job registry.
pub fn resolve(job: &str, connect: &ConnectOptions) -> anyhow::Result<JobTarget> {
    let token = connect.token.as_deref();
    let Some(address) = connect.jobmanager.as_deref() else {
        let entry = floe_rest::registry::lookup(job)?;
        return Ok(JobTarget {
            job_id: entry.job_id,
            client: RestClient::new(&entry.rest_address, token)?,
        });
    };
    let client = RestClient::new(address, token)?;
    let jobs = client.get("/jobs")?;
    let ids: Vec<String> = jobs["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["id"].as_str().map(str::to_string))
        .collect();
    let wanted = job.trim().to_ascii_lowercase();
    let matches: Vec<&String> = if ids.contains(&wanted) {
        ids.iter().filter(|id| **id == wanted).collect()
    } else if wanted.is_empty() {
        Vec::new()
    } else {
        ids.iter().filter(|id| id.starts_with(&wanted)).collect()
    };
    match matches.as_slice() {
        [one] => Ok(JobTarget {
            job_id: (*one).clone(),
            client,
        }),
        [] => anyhow::bail!(
            "no job with id {job} at {}: it serves {}",
            client.address(),
            if ids.is_empty() {
                "no job".to_string()
            } else {
                ids.join(", ")
            }
        ),
        many => anyhow::bail!(
            "job id prefix {job} is ambiguous at {}: it matches {}",
            client.address(),
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_port_with_an_optional_scheme() {
        assert_eq!(
            normalize_address("127.0.0.1:8081").unwrap(),
            "127.0.0.1:8081"
        );
        assert_eq!(
            normalize_address("http://localhost:8081/").unwrap(),
            "localhost:8081"
        );
        assert_eq!(normalize_address("[::1]:80").unwrap(), "[::1]:80");
        for bad in [
            "localhost",
            "127.0.0.1:",
            ":80",
            "host:99999",
            "https://h:1",
            "h:1/x",
        ] {
            let err = normalize_address(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            api_path(&["jobs", "ab", "state", "count"]),
            "/jobs/ab/state/count"
        );
        assert_eq!(
            api_path(&["jobs", "ab", "state", "count?key=9"]),
            "/jobs/ab/state/count%3Fkey%3D9"
        );
        assert_eq!(
            api_path(&["a/b", "#c", "d e", "%", "é"]),
            "/a%2Fb/%23c/d%20e/%25/%C3%A9"
        );
        assert_eq!(api_path(&["..", ".", "a.b"]), "/%2E%2E/%2E/a.b");
    }
}
