//! Test content for the blob and artifact suites: large bodies generated chunk by chunk, bodies
//! that fail part-way, and draining a body into its digest without keeping it.

use bytes::{Bytes, BytesMut};
use futures::stream::{self, StreamExt};

use crate::error::{Error, Result};
use crate::fake::SeededRng;
use crate::model::{Sha256Digest, Sha256Hasher};
use crate::stream::ByteStream;

/// `length` deterministic pseudo-random bytes from `seed`, produced `chunk` bytes at a time, so
/// a multi-megabyte body never exists whole in the test.
pub fn generated(seed: u64, length: u64, chunk: usize) -> ByteStream {
    let chunk = chunk.max(1) as u64;
    let state = (SeededRng::new(seed), 0u64);
    stream::unfold(state, move |(mut rng, done)| async move {
        if done >= length {
            return None;
        }
        let n = chunk.min(length - done) as usize;
        let mut buf = BytesMut::with_capacity(n + 8);
        while buf.len() < n {
            buf.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        buf.truncate(n);
        Some((Ok(buf.freeze()), (rng, done + n as u64)))
    })
    .boxed()
}

/// The sha256 of [`generated`] content, computed by generating it once more.
pub async fn generated_sha256(seed: u64, length: u64) -> Sha256Digest {
    let drained = drain(generated(seed, length, 64 * 1024)).await;
    drained.sha256
}

/// A body that yields everything `prefix` yields and then fails with `error`, as a
/// client whose source breaks mid-upload would.
pub fn failing_after(prefix: ByteStream, error: Error) -> ByteStream {
    prefix
        .chain(stream::once(async move { Err(error) }))
        .boxed()
}

/// The error [`failing_after`] bodies of the suites end with: `InvalidInput`, a kind no backend
/// produces on its own for a healthy request, so a store that returns it passed the stream's
/// error through.
pub fn body_failure() -> Error {
    Error::invalid_input("conformance: the body stream failed part-way")
}

/// What reading a body to its end showed.
#[derive(Debug)]
pub struct Drained {
    /// Bytes received before the end or the first error.
    pub length: u64,
    /// sha256 of those bytes.
    pub sha256: Sha256Digest,
    /// How many chunks carried them.
    pub chunks: usize,
    /// The largest chunk, in bytes.
    pub largest_chunk: usize,
    /// The error that ended the stream, if any.
    pub error: Option<Error>,
}

/// Reads `body` to its end (or first error), hashing rather than keeping it.
pub async fn drain(mut body: ByteStream) -> Drained {
    let mut hasher = Sha256Hasher::default();
    let (mut length, mut chunks, mut largest_chunk) = (0u64, 0usize, 0usize);
    let mut error = None;
    while let Some(item) = body.next().await {
        match item {
            Ok(chunk) => {
                hasher.update(&chunk);
                length += chunk.len() as u64;
                chunks += 1;
                largest_chunk = largest_chunk.max(chunk.len());
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    Drained {
        length,
        sha256: hasher.finish(),
        chunks,
        largest_chunk,
        error,
    }
}

/// Reads `body` into memory; for the small bodies of the suites.
pub async fn read_all(body: ByteStream) -> Result<Bytes> {
    crate::stream::collect(body, 64 * 1024 * 1024).await
}
