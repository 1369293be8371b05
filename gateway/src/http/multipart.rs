//! `multipart/related` bodies (RFC 2046 §5.1, as PS3.18 §8.6 uses them). Read: the streaming
//! reader of dicomweb_model::multipart, re-exported. Written: [`response`], one streamed
//! response of parts as they are made, cut short (never closed) when making one fails.

use bytes::Bytes;

use futures::{Stream, StreamExt};

pub use dicomweb_model::multipart::{boundary_of, MultipartError, MultipartReader};

/// The framing of one outgoing part: delimiter and headers, the content, the line break that
/// ends it.
pub(crate) fn part(boundary: &str, content_type: &str, content: Bytes) -> [Bytes; 3] {
    [Bytes::from(format!("--{boundary}\r\nContent-Type: {content_type}\r\n\r\n")), content, Bytes::from_static(b"\r\n")]
}

/// The framing of one outgoing part that names where its content lives (`Content-Location`,
/// as bulk data parts do).
pub(crate) fn part_with_location(boundary: &str, content_type: &str, location: &str, content: Bytes) -> [Bytes; 3] {
    [
        Bytes::from(format!("--{boundary}\r\nContent-Type: {content_type}\r\nContent-Location: {location}\r\n\r\n")),
        content,
        Bytes::from_static(b"\r\n"),
    ]
}

/// One outgoing part: its media type, where its content lives (bulk data), its content.
#[derive(Debug)]
pub(crate) struct OutgoingPart {
    pub(crate) content_type: String,
    pub(crate) location: Option<String>,
    pub(crate) content: Bytes,
}

impl OutgoingPart {
    pub(crate) fn new(content_type: impl Into<String>, content: Bytes) -> OutgoingPart {
        OutgoingPart { content_type: content_type.into(), location: None, content }
    }
}

pub(crate) use dicomweb_model::multipart::fresh_boundary as boundary;

/// A `multipart/related; type="{part_type}"` response streaming `parts` (each item the parts of
/// one instance) as they come. When an item fails after the response started, the failure is
/// logged with `what` and the body aborted without its closing delimiter, so that no client
/// takes a partial response for a complete one.
pub(crate) fn response<S>(part_type: &str, what: &'static str, parts: S) -> axum::response::Response
where
    S: Stream<Item = Result<Vec<OutgoingPart>, std::io::Error>> + Send + 'static,
{
    use axum::response::IntoResponse;
    let boundary = boundary();
    let part_boundary = boundary.clone();
    let content_type = format!("multipart/related; type=\"{part_type}\"; boundary={boundary}");
    let body = parts
        .flat_map(move |item| {
            let chunks: Vec<Result<Bytes, std::io::Error>> = match item {
                Ok(parts) => parts
                    .into_iter()
                    .flat_map(|p| match &p.location {
                        Some(location) => part_with_location(&part_boundary, &p.content_type, location, p.content),
                        None => part(&part_boundary, &p.content_type, p.content),
                    })
                    .map(Ok)
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "{what} failed after the response started; aborting it");
                    vec![Err(e)]
                }
            };
            futures::stream::iter(chunks)
        })
        .chain(futures::stream::once(async move { Ok(closing(&boundary)) }));
    ([(axum::http::header::CONTENT_TYPE, content_type)], axum::body::Body::from_stream(body)).into_response()
}

/// The closing delimiter of an outgoing multipart body.
pub(crate) fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("--{boundary}--\r\n"))
}
