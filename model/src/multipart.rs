//! `multipart/related` bodies (RFC 2046 §5.1, as PS3.18 §8.6 uses them), read: a streaming
//! reader whose parts come out one at a time as the body arrives, each bounded in size, and a
//! body that ends before its closing delimiter is an error, never a shorter body. What the
//! gateway reads from a STOW-RS client and from a DICOMweb origin's WADO-RS answer alike.

use bytes::{Buf, Bytes, BytesMut};

use futures::{Stream, StreamExt};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("the multipart body ended before its closing delimiter")]
    Truncated,
    #[error("the multipart body has no opening delimiter for its boundary")]
    NoDelimiter,
    #[error("a part's headers are malformed")]
    BadHeaders,
    #[error("a part is larger than {0} bytes")]
    PartTooLarge(usize),
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("the multipart body has more than {0} parts")]
    TooManyParts(usize),
    #[error("reading the body failed: {0}")]
    Body(String),
}

/// One part: its headers (names lower-cased) and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Preamble,
    Headers,
    /// `searched`: how much of the buffer is known not to hold the end delimiter, so each
    /// byte is scanned about once however the body is chunked.
    Body {
        headers: Vec<(String, String)>,
        searched: usize,
    },
    Done,
}

/// Reads parts from a body stream.
pub struct MultipartReader<S> {
    body: S,
    buffer: BytesMut,
    /// `--boundary`
    delimiter: Vec<u8>,
    /// `\r\n--boundary`
    body_end: Vec<u8>,
    state: State,
    max_part: usize,
    max_body: u64,
    max_parts: usize,
    parts: usize,
    read: u64,
    ended: bool,
}

impl<S> std::fmt::Debug for MultipartReader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultipartReader").field("state", &self.state).field("read", &self.read).finish_non_exhaustive()
    }
}

impl<S, E> MultipartReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(body: S, boundary: &str, max_part: usize, max_body: u64) -> Self {
        MultipartReader {
            body,
            buffer: BytesMut::new(),
            delimiter: format!("--{boundary}").into_bytes(),
            body_end: format!("\r\n--{boundary}").into_bytes(),
            state: State::Preamble,
            max_part,
            max_body,
            max_parts: usize::MAX,
            parts: 0,
            read: 0,
            ended: false,
        }
    }

    /// At most `max_parts` parts are read; the next one is an error (`TooManyParts`).
    pub fn with_max_parts(mut self, max_parts: usize) -> Self {
        self.max_parts = max_parts;
        self
    }

    /// Reads the rest of the body and drops it (within `max_body`), so that a client still
    /// sending gets the error response rather than a reset connection.
    async fn discard_rest(&mut self) -> Result<(), MultipartError> {
        self.buffer.clear();
        while self.fill().await? {
            self.buffer.clear();
        }
        Ok(())
    }

    /// Reads more of the body; false at its end.
    async fn fill(&mut self) -> Result<bool, MultipartError> {
        if self.ended {
            return Ok(false);
        }
        match self.body.next().await {
            Some(Ok(chunk)) => {
                self.read += chunk.len() as u64;
                if self.read > self.max_body {
                    return Err(MultipartError::BodyTooLarge(self.max_body));
                }
                self.buffer.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(MultipartError::Body(e.to_string())),
            None => {
                self.ended = true;
                Ok(false)
            }
        }
    }

    /// The next part, or `None` after the closing delimiter.
    pub async fn next_part(&mut self) -> Result<Option<Part>, MultipartError> {
        loop {
            match &mut self.state {
                State::Done => return Ok(None),
                State::Preamble => {
                    if let Some(at) = memchr::memmem::find(&self.buffer, &self.delimiter) {
                        self.buffer.advance(at + self.delimiter.len());
                        self.state = State::Headers;
                        continue;
                    }
                    if self.buffer.len() > 64 * 1024 {
                        return Err(MultipartError::NoDelimiter);
                    }
                }
                State::Headers => {
                    // After a delimiter: "--" closes the body, otherwise optional padding, CRLF,
                    // then header lines up to an empty line.
                    if self.buffer.len() >= 2 && &self.buffer[..2] == b"--" {
                        self.state = State::Done;
                        return Ok(None);
                    }
                    if let Some(end) = memchr::memmem::find(&self.buffer, b"\r\n\r\n") {
                        let block = self.buffer.split_to(end + 4);
                        let text = std::str::from_utf8(&block).map_err(|_| MultipartError::BadHeaders)?;
                        let mut lines = text.split("\r\n");
                        // The rest of the delimiter line: transport padding only.
                        if lines.next().is_some_and(|l| !l.trim().is_empty()) {
                            return Err(MultipartError::BadHeaders);
                        }
                        let mut headers = Vec::new();
                        for line in lines.filter(|l| !l.is_empty()) {
                            let (name, value) = line.split_once(':').ok_or(MultipartError::BadHeaders)?;
                            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                        }
                        self.state = State::Body { headers, searched: 0 };
                        continue;
                    }
                    if self.buffer.len() > 64 * 1024 {
                        return Err(MultipartError::BadHeaders);
                    }
                }
                State::Body { headers, searched } => {
                    let from = *searched;
                    if let Some(at) = memchr::memmem::find(&self.buffer[from..], &self.body_end).map(|at| at + from) {
                        if at > self.max_part {
                            return Err(MultipartError::PartTooLarge(self.max_part));
                        }
                        // A part is kept (cached) as it is: in a buffer of its own size when the
                        // one it was read into is much larger (it grew by doubling), so that
                        // what it holds in memory is what it weighs.
                        let body = if self.buffer.capacity() > at + at / 4 + (64 << 10) {
                            let body = Bytes::copy_from_slice(&self.buffer[..at]);
                            self.buffer.advance(at);
                            body
                        } else {
                            self.buffer.split_to(at).freeze()
                        };
                        self.buffer.advance(self.body_end.len());
                        let headers = std::mem::take(headers);
                        self.state = State::Headers;
                        self.parts += 1;
                        if self.parts > self.max_parts {
                            self.state = State::Done;
                            self.discard_rest().await?;
                            return Err(MultipartError::TooManyParts(self.max_parts));
                        }
                        return Ok(Some(Part { headers, body }));
                    }
                    if self.buffer.len() > self.max_part + self.body_end.len() {
                        return Err(MultipartError::PartTooLarge(self.max_part));
                    }
                    *searched = self.buffer.len().saturating_sub(self.body_end.len() - 1);
                }
            }
            if !self.fill().await? {
                return Err(match self.state {
                    State::Preamble => MultipartError::NoDelimiter,
                    _ => MultipartError::Truncated,
                });
            }
        }
    }
}

/// A fresh boundary: unique within the process, and unlike any content's bytes by its length.
pub fn fresh_boundary() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("dicomweb-gateway-{nanos:x}-{count:x}")
}

/// The `boundary` parameter of a multipart Content-Type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))))
    }

    async fn all(chunks: Vec<&'static [u8]>) -> Result<Vec<Part>, MultipartError> {
        let mut reader = MultipartReader::new(body(chunks), "XyZ", 1000, 10_000);
        let mut parts = Vec::new();
        while let Some(part) = reader.next_part().await? {
            parts.push(part);
        }
        Ok(parts)
    }

    #[tokio::test]
    async fn reads_parts_split_anywhere() {
        let whole: &'static [u8] = b"preamble\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--XyZ\r\ncontent-type: application/dicom\r\n\r\nsec\r\nond\r\n--XyZ--\r\nepilogue";
        for split in [1usize, 3, 7, 16, whole.len()] {
            let chunks: Vec<&'static [u8]> = whole.chunks(split).collect();
            let parts = all(chunks).await.expect("valid");
            assert_eq!(parts.len(), 2, "split {split}");
            assert_eq!(parts[0].body, Bytes::from_static(b"first"));
            assert_eq!(parts[0].header("content-type"), Some("application/dicom"));
            assert_eq!(parts[1].body, Bytes::from_static(b"sec\r\nond"));
        }
    }

    #[tokio::test]
    async fn broken_bodies_are_errors() {
        let cases: Vec<(&'static [u8], MultipartError)> = vec![
            (b"no delimiter at all", MultipartError::NoDelimiter),
            (b"--XyZ\r\nContent-Type: application/dicom\r\n\r\nunfinished", MultipartError::Truncated),
            (b"--XyZ\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--XyZ\r\n", MultipartError::Truncated),
            (b"--XyZ\r\nno colon here\r\n\r\nx\r\n--XyZ--", MultipartError::BadHeaders),
        ];
        for (bytes, want) in cases {
            assert_eq!(all(vec![bytes]).await.expect_err("broken"), want);
        }
        let big: &'static [u8] =
            Box::leak(format!("--XyZ\r\n\r\n{}\r\n--XyZ--", "a".repeat(2000)).into_bytes().into_boxed_slice());
        assert_eq!(all(vec![big]).await.expect_err("too big"), MultipartError::PartTooLarge(1000));
        let mut reader = MultipartReader::new(body(vec![big]), "XyZ", 100_000, 100);
        assert_eq!(reader.next_part().await.expect_err("body too big"), MultipartError::BodyTooLarge(100));
    }

    #[tokio::test]
    async fn parts_past_the_limit_are_an_error_after_the_body_is_read() {
        let mut whole = Vec::new();
        for _ in 0..100 {
            whole.extend_from_slice(b"--XyZ\r\n\r\nx\r\n");
        }
        whole.extend_from_slice(b"--XyZ--\r\n");
        let whole: &'static [u8] = Box::leak(whole.into_boxed_slice());
        let chunks: Vec<&'static [u8]> = whole.chunks(64).collect();
        let mut body = body(chunks);
        let mut reader = MultipartReader::new(&mut body, "XyZ", 1000, 100_000).with_max_parts(10);
        for _ in 0..10 {
            assert!(reader.next_part().await.expect("within the limit").is_some());
        }
        assert_eq!(reader.next_part().await.expect_err("the 11th"), MultipartError::TooManyParts(10));
        assert_eq!(reader.next_part().await, Ok(None), "nothing after the error");
        drop(reader);
        assert!(body.next().await.is_none(), "the rest of the body was read");
        // Exactly at the limit is fine.
        let mut reader = MultipartReader::new(body_of(whole), "XyZ", 1000, 100_000).with_max_parts(100);
        let mut parts = 0;
        while reader.next_part().await.expect("100 parts").is_some() {
            parts += 1;
        }
        assert_eq!(parts, 100);
    }

    fn body_of(bytes: &'static [u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        body(vec![bytes])
    }

    #[test]
    fn boundary_parameter() {
        assert_eq!(boundary_of("multipart/related; type=\"application/dicom\"; boundary=abc").as_deref(), Some("abc"));
        assert_eq!(boundary_of("multipart/related; boundary=\"q r\"").as_deref(), Some("q r"));
        assert_eq!(boundary_of("multipart/related"), None);
    }
}
