//! `DirectoryBlobStore`: a `BlobStore` in one local directory, for the aggregator binary's
//! segment archive when no S3 is configured (durable across restarts, not across disks).
//!
//! Each object is one file named after its key with `/` written as `%` (a character keys never
//! contain, so the mapping is one-to-one and `a` and `a/b` can coexist). A put streams into a
//! temporary file, fsyncs it, renames it over the old object and fsyncs the directory: readers
//! see the old object or the new one, and a body that fails part-way changes nothing.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use ion_core::blob::BlobCapabilities;
use ion_core::{
    BlobKey, BlobList, BlobMeta, BlobObject, BlobStore, ByteStream, Error, ListRequest, PutOptions,
    Result, Timestamp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A blob store in a local directory (see the module docs).
#[derive(Debug, Clone)]
pub struct DirectoryBlobStore {
    objects: PathBuf,
    tmp: PathBuf,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        return Error::not_found(format!("{what} {}: not found", path.display()));
    }
    Error::unavailable(format!("{what} {}: {e}", path.display())).with_source(e)
}

fn file_name(key: &BlobKey) -> Result<String> {
    let name = key.as_str().replace('/', "%");
    if name.len() > 255 {
        return Err(Error::unsupported(
            "blob keys over 255 bytes do not fit a file name",
        ));
    }
    Ok(name)
}

impl DirectoryBlobStore {
    /// A store in `dir` (created if needed).
    pub fn open(dir: &Path) -> Result<Self> {
        let objects = dir.join("objects");
        let tmp = dir.join("tmp");
        for d in [&objects, &tmp] {
            std::fs::create_dir_all(d).map_err(|e| io("create", d, e))?;
        }
        Ok(Self { objects, tmp })
    }

    async fn meta(&self, key: &BlobKey) -> Result<BlobMeta> {
        let path = self.objects.join(file_name(key)?);
        let m = tokio::fs::metadata(&path)
            .await
            .map_err(|e| io("stat", &path, e))?;
        Ok(BlobMeta {
            key: key.clone(),
            size: m.len(),
            last_modified: modified(&m),
        })
    }
}

fn modified(m: &std::fs::Metadata) -> Timestamp {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Timestamp::from_millis(d.as_millis() as i64))
        .unwrap_or(Timestamp::EPOCH)
}

#[async_trait]
impl BlobStore for DirectoryBlobStore {
    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities {
            max_object_size: None,
        }
    }

    async fn put(
        &self,
        key: &BlobKey,
        mut body: ByteStream,
        _options: PutOptions,
    ) -> Result<BlobMeta> {
        let name = file_name(key)?;
        let mut suffix = [0u8; 8];
        let _ = getrandom::fill(&mut suffix);
        let tmp = self
            .tmp
            .join(format!("{}.{}", hex::encode(suffix), name.len()));
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io("create", &tmp, e))?;
        let written: Result<()> = async {
            while let Some(chunk) = body.next().await {
                f.write_all(&chunk?)
                    .await
                    .map_err(|e| io("write", &tmp, e))?;
            }
            f.sync_all().await.map_err(|e| io("fsync", &tmp, e))
        }
        .await;
        drop(f);
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let dst = self.objects.join(&name);
        tokio::fs::rename(&tmp, &dst)
            .await
            .map_err(|e| io("rename", &dst, e))?;
        let dir = self.objects.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
            .await
            .map_err(|e| Error::unexpected(format!("fsync task: {e}")))?
            .map_err(|e| io("fsync", &self.objects, e))?;
        self.meta(key).await
    }

    async fn get(&self, key: &BlobKey) -> Result<BlobObject> {
        let meta = self.meta(key).await?;
        let path = self.objects.join(file_name(key)?);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io("open", &path, e))?;
        let body = futures::stream::unfold(Some((file, path)), |state| async move {
            let (mut file, path) = state?;
            let mut buf = vec![0u8; 256 << 10];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), Some((file, path))))
                }
                Err(e) => Some((Err(io("read", &path, e)), None)),
            }
        })
        .boxed();
        Ok(BlobObject { meta, body })
    }

    async fn head(&self, key: &BlobKey) -> Result<BlobMeta> {
        self.meta(key).await
    }

    async fn list(&self, request: &ListRequest) -> Result<BlobList> {
        let mut rd = tokio::fs::read_dir(&self.objects)
            .await
            .map_err(|e| io("list", &self.objects, e))?;
        let mut keys = Vec::new();
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(|e| io("list", &self.objects, e))?
        {
            let name = entry.file_name().to_string_lossy().replace('%', "/");
            let Ok(key) = BlobKey::parse(&name) else {
                continue;
            };
            if !request.prefix.matches(&key) {
                continue;
            }
            if request
                .continuation
                .as_deref()
                .is_some_and(|c| key.as_str() <= c)
            {
                continue;
            }
            keys.push(key);
        }
        keys.sort();
        let size = request.page_size();
        let more = keys.len() > size;
        keys.truncate(size);
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            match self.meta(&key).await {
                Ok(m) => items.push(m),
                // Deleted while listing: it is simply gone.
                Err(e) if e.kind() == ion_core::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let next = if more {
            items.last().map(|m| m.key.to_string())
        } else {
            None
        };
        Ok(BlobList { items, next })
    }

    async fn delete(&self, key: &BlobKey) -> Result<()> {
        let path = self.objects.join(file_name(key)?);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("delete", &path, e)),
        }
    }
}
