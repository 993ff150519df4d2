//! Forwarding: which headers travel, and the [`Tee`] that relays a generation call's response
//! to the agent chunk by chunk while keeping a copy for its record.

use std::error::Error as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, header};

use crate::call::{CallRecord, Outcome};

/// Hop-by-hop headers (RFC 9110 §7.6.1), which belong to one connection and are never
/// forwarded.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// The agent's headers, minus those of its connection; generation calls also lose
/// `accept-encoding`, so that what comes back can be read for the record.
pub fn upstream_headers(incoming: &HeaderMap, generation: bool) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(incoming.len() + 3);
    for (name, value) in incoming {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || (generation && name == header::ACCEPT_ENCODING)
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// The upstream's response headers an agent gets (those of the connection stay behind).
pub fn response_headers(upstream: &HeaderMap, out: &mut HeaderMap) {
    for (name, value) in upstream {
        if HOP_BY_HOP.contains(&name.as_str()) || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
}

/// A reqwest error and its causes on one line.
pub fn error_chain(err: &reqwest::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Where a finished call's record goes (the proxy's recorder).
pub type Sink = Box<dyn FnOnce(CallRecord) + Send>;

/// The response body of a generation call: every chunk goes to the agent as it arrives,
/// and a reference to it into the record. When the body ends, breaks off, or is dropped
/// because the agent went away (which drops, and so aborts, the upstream request), the
/// record goes to the sink. `guard` is dropped with the tee: an in-flight count, say.
pub struct Tee {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    record: Option<CallRecord>,
    kept: usize,
    received: u64,
    expected: Option<u64>,
    limit: usize,
    sink: Option<Sink>,
    _guard: Box<dyn Send>,
}

impl Tee {
    /// Relays `response`, keeping at most `limit` bytes of it in `record` (past that the
    /// record is marked truncated and keeps nothing).
    pub fn new(
        response: reqwest::Response,
        record: CallRecord,
        limit: usize,
        sink: Sink,
        guard: Box<dyn Send>,
    ) -> Self {
        Self {
            expected: response.content_length(),
            inner: Box::pin(response.bytes_stream()),
            record: Some(record),
            kept: 0,
            received: 0,
            limit,
            sink: Some(sink),
            _guard: guard,
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let (Some(mut record), Some(sink)) = (self.record.take(), self.sink.take()) {
            record.ended = Instant::now();
            record.outcome = outcome;
            sink(record);
        }
    }
}

impl Stream for Tee {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                if let Some(record) = &mut this.record
                    && !record.truncated
                {
                    if this.kept + chunk.len() > this.limit {
                        record.truncated = true;
                        record.chunks = Vec::new();
                    } else {
                        this.kept += chunk.len();
                        record.chunks.push((Instant::now(), chunk.clone()));
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.finish(Outcome::UpstreamFailed(error_chain(&err)));
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                this.finish(Outcome::Completed);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // A body with a known length may be dropped right after its last byte, without
        // being polled for its end.
        let complete = self.expected.is_some_and(|n| self.received >= n);
        self.finish(if complete {
            Outcome::Completed
        } else {
            Outcome::ClientDisconnected
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn connection_headers_stay_behind() {
        let mut incoming = HeaderMap::new();
        incoming.insert(header::HOST, HeaderValue::from_static("proxy:8000"));
        incoming.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        incoming.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        incoming.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        incoming.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        let passed = upstream_headers(&incoming, true);
        assert_eq!(passed.len(), 1);
        assert_eq!(passed[header::AUTHORIZATION], "Bearer k");
        assert!(upstream_headers(&incoming, false).contains_key(header::ACCEPT_ENCODING));
        let mut out = HeaderMap::new();
        response_headers(&incoming, &mut out);
        assert!(!out.contains_key(header::CONNECTION));
        assert!(out.contains_key(header::AUTHORIZATION));
    }
}
