//! [`Body`]: the bytes of an upload (a tar archive into a box, a snapshot image), whole or streamed, without
//! exposing the HTTP client the SDK uses.

use bytes::Bytes;

/// The body of an upload: bytes in memory (`Vec<u8>`, [`Bytes`], `&'static [u8]`, `String` convert into it) or a
/// stream of chunks ([`Body::from_stream`]), sent as it is read.
pub struct Body(pub(crate) reqwest::Body);

impl Body {
    /// A body read from a stream of chunks (e.g. a file read piece by piece); an error in the stream aborts the
    /// upload.
    pub fn from_stream<S, B, E>(stream: S) -> Body
    where
        S: futures::Stream<Item = Result<B, E>> + Send + 'static,
        Bytes: From<B>,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
        B: 'static,
    {
        Body(reqwest::Body::wrap_stream(stream))
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_bytes() {
            Some(b) => write!(f, "Body({} bytes)", b.len()),
            None => f.write_str("Body(stream)"),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body(v.into())
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body(b.into())
    }
}

impl From<&'static [u8]> for Body {
    fn from(b: &'static [u8]) -> Self {
        Body(b.into())
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body(s.into())
    }
}
