//! One TCP connection to one broker, speaking request/response.
//!
//! Blocking I/O on the caller's thread: a source reader or sink writer
//! owns its connections and talks to them between two polls, so nothing
//! needs an async runtime or a lock. Each request is framed, sent, and its
//! response read before the next (the client never pipelines: Floe
//! batches records into large requests instead).

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::error::KafkaError;

/// The name of a request type, for errors (`FetchRequest` → `Fetch`).
pub(crate) fn api_name<R>() -> &'static str {
    let full = std::any::type_name::<R>();
    let last = full.rsplit("::").next().unwrap_or(full);
    last.strip_suffix("Request").unwrap_or(last)
}

/// The largest response accepted (a guard against a foreign server on the
/// port sending garbage that reads as a huge length).
const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// A connection to one broker, with the versions it speaks.
pub struct BrokerConnection {
    broker: String,
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    client_id: StrBytes,
    correlation_id: i32,
    /// `(min, max)` by API key, from the broker's ApiVersions answer.
    versions: Vec<Option<(i16, i16)>>,
    frame: BytesMut,
}

impl BrokerConnection {
    /// Connects to `broker` (`host:port`) and asks which versions it
    /// speaks. `timeout` bounds the connect and every later request.
    pub fn connect(broker: &str, client_id: &str, timeout: Duration) -> Result<Self, KafkaError> {
        let connect_error = |source| KafkaError::Connect {
            broker: broker.to_string(),
            source,
        };
        let addrs: Vec<_> = broker.to_socket_addrs().map_err(connect_error)?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| connect_error(last))?;
        stream.set_nodelay(true).map_err(connect_error)?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(connect_error)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(connect_error)?;
        let reader =
            BufReader::with_capacity(64 * 1024, stream.try_clone().map_err(connect_error)?);
        let mut conn = BrokerConnection {
            broker: broker.to_string(),
            reader,
            writer: BufWriter::with_capacity(64 * 1024, stream),
            client_id: StrBytes::from_string(client_id.to_string()),
            correlation_id: 0,
            versions: Vec::new(),
            frame: BytesMut::new(),
        };
        conn.negotiate()?;
        Ok(conn)
    }

    /// The `host:port` this connection goes to.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// Learns the broker's version ranges: ApiVersions v3 first, v0 if the
    /// broker is older (it answers an unknown version with v0's shape).
    fn negotiate(&mut self) -> Result<(), KafkaError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("floe"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response: ApiVersionsResponse = self.round_trip(&request, 3)?;
        if ResponseError::try_from_code(response.error_code)
            == Some(ResponseError::UnsupportedVersion)
        {
            response = self.round_trip(&ApiVersionsRequest::default(), 0)?;
        }
        crate::error::check("ApiVersions", response.error_code, || self.broker.clone())?;
        for api in response.api_keys {
            let key = api.api_key as usize;
            if self.versions.len() <= key {
                self.versions.resize(key + 1, None);
            }
            self.versions[key] = Some((api.min_version, api.max_version));
        }
        Ok(())
    }

    /// The highest version of `R` both sides speak, at most `cap` (the
    /// highest this client fills the request's fields for).
    pub fn version<R: Request>(&self, cap: i16) -> Result<i16, KafkaError> {
        let ours = (R::VERSIONS.min, R::VERSIONS.max.min(cap));
        let theirs = self.versions.get(R::KEY as usize).copied().flatten();
        match theirs {
            Some((min, max)) if min.max(ours.0) <= max.min(ours.1) => Ok(max.min(ours.1)),
            _ => Err(KafkaError::UnsupportedVersion {
                broker: self.broker.clone(),
                api: api_name::<R>(),
                ours: format!("{}..{}", ours.0, ours.1),
                theirs: theirs.map_or("none".to_string(), |(a, b)| format!("{a}..{b}")),
            }),
        }
    }

    /// Sends `request` at the highest common version up to `cap` and
    /// returns the broker's answer (error codes inside it are the
    /// caller's to check).
    pub fn send<R: Request>(&mut self, request: &R, cap: i16) -> Result<R::Response, KafkaError> {
        let version = self.version::<R>(cap)?;
        self.round_trip(request, version)
    }

    /// Sends `request` and forgets it: for a Produce with `acks = 0`, the
    /// one request a broker does not answer.
    pub fn send_no_response<R: Request>(
        &mut self,
        request: &R,
        cap: i16,
    ) -> Result<(), KafkaError> {
        let version = self.version::<R>(cap)?;
        self.write_request(request, version)?;
        self.writer.flush().map_err(|e| self.io::<R>(e))
    }

    fn io<R>(&self, source: std::io::Error) -> KafkaError {
        KafkaError::Io {
            broker: self.broker.clone(),
            api: api_name::<R>(),
            source,
        }
    }

    fn codec<R>(&self, what: &str, e: impl std::fmt::Display) -> KafkaError {
        KafkaError::Codec {
            broker: self.broker.clone(),
            what: format!("{what} {}", api_name::<R>()),
            message: e.to_string(),
        }
    }

    fn write_request<R: Request>(&mut self, request: &R, version: i16) -> Result<i32, KafkaError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        self.frame.clear();
        self.frame.put_i32(0);
        header
            .encode(&mut self.frame, R::header_version(version))
            .map_err(|e| self.codec::<R>("encode the header of", e))?;
        request
            .encode(&mut self.frame, version)
            .map_err(|e| self.codec::<R>("encode", e))?;
        let len = (self.frame.len() - 4) as i32;
        self.frame[..4].copy_from_slice(&len.to_be_bytes());
        let frame = std::mem::take(&mut self.frame);
        let written = self.writer.write_all(&frame);
        self.frame = frame;
        written.map_err(|e| self.io::<R>(e))?;
        Ok(self.correlation_id)
    }

    fn round_trip<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, KafkaError> {
        let correlation_id = self.write_request(request, version)?;
        self.writer.flush().map_err(|e| self.io::<R>(e))?;
        let mut len = [0u8; 4];
        self.reader
            .read_exact(&mut len)
            .map_err(|e| self.io::<R>(e))?;
        let len = i32::from_be_bytes(len);
        if len < 0 || len as usize > MAX_RESPONSE_BYTES {
            return Err(self.codec::<R>("frame the response to", format!("length {len}")));
        }
        let mut body = BytesMut::zeroed(len as usize);
        self.reader
            .read_exact(&mut body)
            .map_err(|e| self.io::<R>(e))?;
        let mut body: Bytes = body.freeze();
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| self.codec::<R>("decode the response header of", e))?;
        if header.correlation_id != correlation_id {
            return Err(self.codec::<R>(
                "match the response to",
                format!(
                    "correlation id {} where {correlation_id} was sent",
                    header.correlation_id
                ),
            ));
        }
        let response = R::Response::decode(&mut body, version)
            .map_err(|e| self.codec::<R>("decode the response to", e))?;
        if body.has_remaining() {
            tracing::debug!(broker = %self.broker, api = api_name::<R>(), left = body.remaining(), "response had trailing bytes");
        }
        Ok(response)
    }
}
