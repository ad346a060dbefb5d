//! Model-based test of `InMemoryLoadBalancer`: random apply and refuse sequences against a
//! reference model of the generation rule.

use ion_core::fake::InMemoryLoadBalancer;
use ion_core::{ErrorKind, LiveGeneration, LoadBalancer, Route, RouteTable};
use proptest::prelude::*;

const HOSTS: [&str; 3] = ["a.example.com", "b.example.com", "c.example.com"];

#[derive(Clone, Debug)]
enum Op {
    /// Apply a table of this generation whose route answers `HOSTS[content]`.
    Apply {
        generation: u64,
        content: usize,
    },
    Refuse {
        n: u32,
    },
    Live,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u64..6, 0usize..3).prop_map(|(generation, content)| Op::Apply { generation, content }),
        1 => (0u32..3).prop_map(|n| Op::Refuse { n }),
        2 => Just(Op::Live),
    ]
}

fn table(generation: u64, content: usize) -> RouteTable {
    RouteTable::new(
        generation,
        vec![Route {
            tenant: "acme".parse().unwrap(),
            app: "shop".parse().unwrap(),
            hostnames: vec![HOSTS[content].parse().unwrap()],
            backends: Vec::new(),
            tls: None,
        }],
    )
    .unwrap()
}

fn live_of(generation: u64, content: usize) -> LiveGeneration {
    let t = table(generation, content);
    LiveGeneration {
        generation,
        checksum: t.checksum(),
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let fake = InMemoryLoadBalancer::new();
    // The model: what is live, what was made live, how many refusals remain, calls to apply.
    let mut live: Option<(u64, usize)> = None;
    let mut history: Vec<LiveGeneration> = Vec::new();
    let mut refuse = 0u32;
    let mut applies = 0u64;
    for op in ops {
        match op {
            Op::Apply {
                generation,
                content,
            } => {
                applies += 1;
                let got = fake
                    .apply(&table(generation, content))
                    .await
                    .map_err(|e| e.kind());
                let want = if refuse > 0 {
                    refuse -= 1;
                    Err(ErrorKind::Unavailable)
                } else {
                    match live {
                        Some((g, _)) if generation < g => Err(ErrorKind::Conflict),
                        Some((g, c)) if generation == g && c != content => Err(ErrorKind::Conflict),
                        Some((g, c)) if generation == g => Ok(live_of(g, c)),
                        _ => {
                            live = Some((generation, content));
                            history.push(live_of(generation, content));
                            Ok(live_of(generation, content))
                        }
                    }
                };
                prop_assert_eq!(got, want);
            }
            Op::Refuse { n } => {
                fake.refuse_next_apply(n);
                refuse = n;
            }
            Op::Live => {
                prop_assert_eq!(fake.live().await.unwrap(), live.map(|(g, c)| live_of(g, c)));
            }
        }
        prop_assert_eq!(fake.live_table(), live.map(|(g, c)| table(g, c)));
        prop_assert_eq!(fake.history(), history.clone());
        prop_assert_eq!(fake.apply_count(), applies);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn in_memory_load_balancer_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
