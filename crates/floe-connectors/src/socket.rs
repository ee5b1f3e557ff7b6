//! A socket text source (Flink's `socketTextStream`): connects to a server,
//! reads newline-delimited text, and ends when the server closes the
//! connection. It cannot rewind, so it is at-most-once across failures.

use std::io::{ErrorKind, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use floe_runtime::{Source, SourceReader, SourceStatus, TaskInfo};

/// Reads lines from `host:port`. Runs with parallelism 1.
#[derive(Debug, Clone)]
pub struct SocketTextSource {
    address: String,
}

impl SocketTextSource {
    /// A source reading from `address` (`host:port`).
    pub fn new(address: impl Into<String>) -> Self {
        SocketTextSource {
            address: address.into(),
        }
    }
}

impl Source<String> for SocketTextSource {
    fn is_parallel(&self) -> bool {
        false
    }

    fn create_reader(&self, _info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<String>>> {
        Ok(Box::new(SocketReader {
            address: self.address.clone(),
            stream: None,
            pending: Vec::new(),
            ended: false,
        }))
    }
}

struct SocketReader {
    address: String,
    stream: Option<TcpStream>,
    /// Bytes after the last complete line.
    pending: Vec<u8>,
    ended: bool,
}

impl SocketReader {
    fn take_lines(&mut self, out: &mut Vec<String>, max: usize) -> anyhow::Result<usize> {
        let mut n = 0;
        let mut start = 0;
        while n < max {
            let Some(pos) = self.pending[start..].iter().position(|b| *b == b'\n') else {
                break;
            };
            let mut line = &self.pending[start..start + pos];
            line = line.strip_suffix(b"\r").unwrap_or(line);
            out.push(
                String::from_utf8(line.to_vec()).with_context(|| {
                    format!("socket source {} sent invalid UTF-8", self.address)
                })?,
            );
            start += pos + 1;
            n += 1;
        }
        self.pending.drain(..start);
        Ok(n)
    }
}

impl SourceReader<String> for SocketReader {
    fn open(&mut self, _info: &TaskInfo) -> anyhow::Result<()> {
        let addrs: Vec<_> = self
            .address
            .to_socket_addrs()
            .with_context(|| {
                format!(
                    "invalid socket address {:?} (expected host:port)",
                    self.address
                )
            })?
            .collect();
        let mut last_err = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_millis(50)))?;
                    self.stream = Some(s);
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
        }
        match last_err {
            Some(e) => {
                Err(e).with_context(|| format!("cannot connect to socket source {}", self.address))
            }
            None => anyhow::bail!("socket address {} resolves to nothing", self.address),
        }
    }

    fn poll_next(&mut self, out: &mut Vec<String>, max: usize) -> anyhow::Result<SourceStatus> {
        if self.take_lines(out, max)? == max {
            return Ok(SourceStatus::MoreAvailable);
        }
        if self.ended {
            if !self.pending.is_empty() {
                // The last line had no newline.
                let rest = std::mem::take(&mut self.pending);
                out.push(String::from_utf8(rest).with_context(|| {
                    format!("socket source {} sent invalid UTF-8", self.address)
                })?);
            }
            return Ok(SourceStatus::Finished);
        }
        let stream = self.stream.as_mut().expect("opened");
        let mut buf = [0u8; 64 * 1024];
        match stream.read(&mut buf) {
            Ok(0) => {
                self.ended = true;
                Ok(SourceStatus::MoreAvailable)
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                let before = out.len();
                self.take_lines(out, max - before.min(max))?;
                Ok(SourceStatus::MoreAvailable)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(SourceStatus::NothingAvailable)
            }
            Err(e) => {
                Err(e).with_context(|| format!("cannot read from socket source {}", self.address))
            }
        }
    }
}
