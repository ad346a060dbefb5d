//! The expansion the store suites' macros share: one `#[tokio::test]` per named case.

/// Expands to `mod $name` holding one `#[tokio::test]` per case, each building a fresh store with
/// `$factory` (an async block yielding `Option<impl Trait>`; `None` skips) and calling
/// `$crate::testkit::$suite::$case(&store)`.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    ($name:ident, $factory:expr, $suite:ident, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test]
                async fn $case() {
                    let Some(store) = ($factory).await else {
                        return;
                    };
                    $crate::testkit::$suite::$case(&store).await;
                }
            )*
        }
    };
}
