//! The DocumentStore and ArtifactStore conformance suites against the MongoDB peer (FerretDB here,
//! a real MongoDB or replica set when `ION_TEST_MONGO_URL` points at one).

mod common;

ion_core::document_store_conformance!(mongo_documents, async {
    common::document_store("document store conformance").await
});

ion_core::artifact_store_conformance!(gridfs_artifacts, async {
    common::artifact_store("artifact store conformance").await
});
