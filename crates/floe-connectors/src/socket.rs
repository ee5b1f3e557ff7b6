//! A socket text source (Flink's `socketTextStream`): connects to a server,
//! reads newline-delimited text, and ends when the server closes the
//! connection. It cannot rewind, so it is at-most-once across failures.
//!
//! A line longer than the source's maximum line length (1 MiB unless
//! [`SocketTextSource::with_max_line_length`] says otherwise) fails the
//! source with an error naming the limit, rather than being split (which
//! would change the records) or buffered without bound (a peer that never
//! sends a newline would otherwise grow the job's memory until it dies).

use std::io::{ErrorKind, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use floe_runtime::{Source, SourceReader, SourceStatus, TaskInfo};

/// The default longest line: far beyond any text line a socket sends, small
/// enough that a stream without newlines cannot hurt the job.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 1 << 20;

/// Reads lines from `host:port`. Runs with parallelism 1.
#[derive(Debug, Clone)]
pub struct SocketTextSource {
    address: String,
    max_line_length: usize,
}

impl SocketTextSource {
    /// A source reading from `address` (`host:port`).
    pub fn new(address: impl Into<String>) -> Self {
        SocketTextSource {
            address: address.into(),
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
        }
    }

    /// Lines longer than `bytes` (without the newline) fail the source
    /// (default [`DEFAULT_MAX_LINE_LENGTH`]); at least 1.
    pub fn with_max_line_length(mut self, bytes: usize) -> Self {
        self.max_line_length = bytes.max(1);
        self
    }
}

impl Source<String> for SocketTextSource {
    fn is_parallel(&self) -> bool {
        false
    }

    fn create_reader(&self, _info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<String>>> {
        Ok(Box::new(SocketReader {
            address: self.address.clone(),
            max_line_length: self.max_line_length,
            stream: None,
            pending: Vec::new(),
            ended: false,
        }))
    }
}

struct SocketReader {
    address: String,
    max_line_length: usize,
    stream: Option<TcpStream>,
    /// Bytes after the last complete line.
    pending: Vec<u8>,
    ended: bool,
}

impl SocketReader {
    fn too_long(&self, at_least: usize) -> anyhow::Error {
        anyhow::anyhow!(
            "socket source {} sent a line of more than {} bytes (at least {at_least}); the limit keeps a peer that never sends a newline from exhausting memory (SocketTextSource::with_max_line_length raises it)",
            self.address,
            self.max_line_length
        )
    }

    /// Fails when the bytes after the last newline already exceed the
    /// limit (they can only become a longer line).
    fn check_pending(&self) -> anyhow::Result<()> {
        if self.pending.len() > self.max_line_length {
            let complete = self.pending.iter().position(|b| *b == b'\n');
            if complete.is_none_or(|pos| pos > self.max_line_length) {
                return Err(self.too_long(complete.unwrap_or(self.pending.len())));
            }
        }
        Ok(())
    }

    fn take_lines(&mut self, out: &mut Vec<String>, max: usize) -> anyhow::Result<usize> {
        let mut n = 0;
        let mut start = 0;
        while n < max {
            let Some(pos) = self.pending[start..].iter().position(|b| *b == b'\n') else {
                break;
            };
            let mut line = &self.pending[start..start + pos];
            line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > self.max_line_length {
                return Err(self.too_long(line.len()));
            }
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
                self.check_pending()?;
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
                self.check_pending()?;
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

    use super::*;

    fn info() -> TaskInfo {
        TaskInfo {
            job_id: floe_core::JobId::from_u128(1),
            job_name: "test".into(),
            operator_name: "socket".into(),
            uid: "socket".into(),
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
        }
    }

    /// Reads from a server sending `payload` (then closing when `close`)
    /// until the source finishes or fails; the lines read and the outcome.
    fn read_all(
        payload: Vec<u8>,
        close: bool,
        max_line: usize,
    ) -> (Vec<String>, anyhow::Result<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // The peer may stop reading (the source failed): ignore errors.
            let _ = s.write_all(&payload);
            if !close {
                // Hold the connection open without a newline.
                std::thread::sleep(Duration::from_secs(60));
            }
        });
        let source = SocketTextSource::new(addr.to_string()).with_max_line_length(max_line);
        let mut reader = source.create_reader(&info()).unwrap();
        reader.open(&info()).unwrap();
        let mut lines = Vec::new();
        let outcome = loop {
            match reader.poll_next(&mut lines, 1000) {
                Ok(SourceStatus::Finished) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        if close {
            server.join().unwrap();
        }
        (lines, outcome)
    }

    #[test]
    fn lines_up_to_the_limit_pass_and_the_last_line_needs_no_newline() {
        let mut payload = b"a\r\n".to_vec();
        payload.extend(vec![b'x'; 1000]);
        payload.extend(b"\nlast");
        let (lines, outcome) = read_all(payload, true, 1000);
        outcome.unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "a");
        assert_eq!(lines[1].len(), 1000);
        assert_eq!(lines[2], "last");
    }

    /// A peer that sends 8 MiB and never a newline (and never closes)
    /// fails the source once the limit is passed, instead of being
    /// buffered without end.
    #[test]
    fn a_stream_without_newlines_fails_with_the_limit_named() {
        let (lines, outcome) = read_all(vec![b'y'; 8 << 20], false, 64 << 10);
        assert!(lines.is_empty());
        let err = format!("{:#}", outcome.unwrap_err());
        assert!(err.contains("more than 65536 bytes"), "{err}");
        assert!(err.contains("127.0.0.1"), "{err}");
    }

    #[test]
    fn an_over_long_complete_line_and_an_over_long_last_line_fail() {
        let mut payload = vec![b'z'; 2000];
        payload.push(b'\n');
        let (_, outcome) = read_all(payload, true, 1000);
        assert!(format!("{:#}", outcome.unwrap_err()).contains("more than 1000 bytes"));
        let (_, outcome) = read_all(vec![b'z'; 1500], true, 1000);
        assert!(format!("{:#}", outcome.unwrap_err()).contains("more than 1000 bytes"));
    }
}
