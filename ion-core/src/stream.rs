//! Byte streams: how blobs and artifacts move without being held whole in memory.

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};

use crate::error::{Error, Result};
use crate::model::{Sha256Digest, Sha256Hasher};

/// A stream of byte chunks that may fail part-way.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A stream of one chunk.
pub fn once(data: impl Into<Bytes>) -> ByteStream {
    let data = data.into();
    stream::once(async move { Ok(data) }).boxed()
}

/// A stream of the given chunks.
pub fn from_chunks(chunks: Vec<Bytes>) -> ByteStream {
    stream::iter(chunks.into_iter().map(Ok)).boxed()
}

/// `data` cut into chunks of `chunk` bytes (the last may be shorter).
pub fn chunked(data: Bytes, chunk: usize) -> ByteStream {
    let chunk = chunk.max(1);
    let parts: Vec<Bytes> = (0..data.len())
        .step_by(chunk)
        .map(|i| data.slice(i..(i + chunk).min(data.len())))
        .collect();
    from_chunks(parts)
}

/// Reads a whole stream into memory, failing with [`crate::ErrorKind::InvalidInput`] past `limit`
/// bytes.
pub async fn collect(mut body: ByteStream, limit: usize) -> Result<Bytes> {
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Err(Error::invalid_input(format!(
                "stream is longer than the {limit} byte limit"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Passes `body` through while hashing it; the stream's last item is an error of kind
/// [`crate::ErrorKind::Corrupt`] when the content does not match `sha256` and `length`.
///
/// Every artifact store uses this on download, so a consumer that reads to the end either saw
/// exactly the uploaded bytes or got an error.
pub fn verified(body: ByteStream, sha256: Sha256Digest, length: u64) -> ByteStream {
    struct State {
        body: ByteStream,
        hasher: Option<Sha256Hasher>,
        seen: u64,
    }
    let state = State {
        body,
        hasher: Some(Sha256Hasher::default()),
        seen: 0,
    };
    stream::unfold(state, move |mut st| async move {
        let hasher = st.hasher.as_mut()?;
        match st.body.next().await {
            Some(Ok(chunk)) => {
                hasher.update(&chunk);
                st.seen += chunk.len() as u64;
                if st.seen > length {
                    st.hasher = None;
                    let e = Error::corrupt(format!(
                        "content is longer than the recorded {length} bytes"
                    ));
                    return Some((Err(e), st));
                }
                Some((Ok(chunk), st))
            }
            Some(Err(e)) => {
                st.hasher = None;
                Some((Err(e), st))
            }
            None => {
                let digest = st.hasher.take()?.finish();
                if st.seen != length {
                    let e =
                        Error::corrupt(format!("content is {} bytes, expected {length}", st.seen));
                    Some((Err(e), st))
                } else if digest != sha256 {
                    let e = Error::corrupt(format!("sha256 is {digest}, expected {sha256}"));
                    Some((Err(e), st))
                } else {
                    None
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verified_passes_good_content_and_flags_bad() {
        let data = Bytes::from_static(b"hello world");
        let sha = Sha256Digest::of(&data);
        let ok = collect(verified(chunked(data.clone(), 3), sha, 11), 100).await;
        assert_eq!(ok.unwrap(), data);

        let bad = collect(verified(once("hello worle"), sha, 11), 100).await;
        assert_eq!(bad.unwrap_err().kind(), crate::ErrorKind::Corrupt);

        let short = collect(verified(once("hello"), sha, 11), 100).await;
        assert_eq!(short.unwrap_err().kind(), crate::ErrorKind::Corrupt);
    }

    #[tokio::test]
    async fn collect_enforces_limit() {
        let e = collect(once("abcdef"), 3).await.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
    }
}
