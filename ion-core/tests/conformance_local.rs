//! The `Compute` conformance suite run against `LocalProcessCompute`, whose instances are real
//! child processes (here `sleep`, from coreutils: the suite checks placement and lifecycle, not
//! traffic; ion-lb's tests and `examples/local_platform` send traffic to real HTTP instances).
#![cfg(feature = "testkit")]

use ion_core::local::{LocalProcessCompute, LocalProgram};
use ion_core::{ArtifactRef, Zone};

fn sleeper(_: &ArtifactRef) -> ion_core::Result<LocalProgram> {
    Ok(LocalProgram {
        program: "sleep".into(),
        args: vec!["600".into()],
    })
}

ion_core::compute_conformance!(local_processes, async {
    Some(
        LocalProcessCompute::new(
            vec![
                Zone::parse("local-a").unwrap(),
                Zone::parse("local-b").unwrap(),
            ],
            sleeper,
        )
        .unwrap(),
    )
});
