//! The `BlobStore` conformance suite against `DirectoryBlobStore` (a fresh directory per case).

ion_core::blob_store_conformance!(directory, async {
    // Kept for the test process's lifetime: the store must outlive every case's future.
    let dir = tempfile::tempdir().expect("tempdir").keep();
    Some(ion_logs::dir_blob::DirectoryBlobStore::open(&dir).expect("open"))
});
