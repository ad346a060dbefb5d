//! Property tests and a hostile corpus for every validated name in `ion_core::name`.

use ion_core::name::*;
use proptest::prelude::*;

/// Strings that could break a file path, an index name, a URL, a database operator or an nginx
/// configuration. Every one must be rejected by every tenant-facing name type.
fn hostile_corpus() -> Vec<String> {
    let mut v: Vec<String> = [
        "a;",
        "a}",
        "a{",
        "a b",
        "a\n}",
        "a\r\nserver {",
        "a\0",
        "a\t",
        "a#x",
        "a\"",
        "a'",
        "a\\",
        "$host",
        "${x}",
        "a$b",
        "../../etc/nginx/x",
        "x/../../y",
        "..",
        "a/b",
        "/a",
        "a/",
        "\u{ff1b}",
        "a\u{200b}b",
        "a\u{202e}b",
        "caf\u{e9}",
        "A",
        "Abc",
        "aBc",
        "ok.test; include /etc/shadow",
        "ok.test\nlocation / {",
        "ok.test\\",
        "*.platform.tld",
        ".victim.tld",
        "~.*",
        "~^(.*)$",
        "_",
        "",
        " ",
        "Victim.TLD.",
        "a.test:443",
        "a.test/x",
        "[::1]",
        "127.0.0.1",
        "engine:evil:x",
        "store:x",
        "data:x",
        "/proc/self/fd/3",
        "a\u{7f}",
        "a\u{1b}[31m",
        "a`id`",
        "a|b",
        "a&b",
        "a>b",
        "a<b",
        "a*b",
        "a?b",
        "a,b",
        "$where",
        "a.$ne",
        "%0a",
        "a%00",
        "a=b",
        "a:b",
        "a@b",
        "a!b",
        "a(b)",
        "a[b]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("a".repeat(10_000));
    v.push(format!("{}.test", "a".repeat(250)));
    v
}

/// The tenant-facing name types that accept `s`.
fn accepted_by(s: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! check {
        ($($t:ident),*) => {$(
            if $t::parse(s).is_ok() { out.push(stringify!($t)); }
        )*};
    }
    check!(
        TenantId,
        AppId,
        Zone,
        InstanceId,
        ArtifactId,
        IdempotencyKey,
        CollectionName,
        FieldName,
        Hostname
    );
    out
}

#[test]
fn hostile_corpus_is_rejected_by_every_tenant_facing_name() {
    for s in hostile_corpus() {
        let accepted = accepted_by(&s);
        assert!(accepted.is_empty(), "{s:?} was accepted by {accepted:?}");
    }
}

#[test]
fn hostile_corpus_is_rejected_by_keys_paths_and_index_names() {
    for s in hostile_corpus() {
        // Blob keys are relative paths by design (segments, dots, upper case and `=` are fine):
        // what they accept must never climb out of their root or carry a shell or config
        // metacharacter.
        if let Ok(key) = BlobKey::parse(&s) {
            let k = key.as_str();
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._=-/".contains(&b)),
                "blob key accepted {s:?}"
            );
            assert!(
                !k.starts_with('/') && k.split('/').all(|p| !p.is_empty() && p != "." && p != ".."),
                "blob key accepted {s:?}"
            );
        }
        if !["A", "Abc", "aBc", "_"].contains(&s.as_str()) {
            assert!(RecordId::parse(&s).is_err(), "record id accepted {s:?}");
        }
        // A dotted number is a plain id; every other corpus entry must fail.
        if s != "127.0.0.1" {
            assert!(DocumentId::parse(&s).is_err(), "document id accepted {s:?}");
            assert!(IndexName::parse(&s).is_err(), "index name accepted {s:?}");
        }
    }
    for s in [
        "/a;",
        "/a }",
        "/x\" ; return 200 \"p",
        "/x\\",
        "/x\n",
        "/x\r",
        "/x\n#",
        "=/x",
        "~/x",
        "@named",
        "/x{1,3}",
        "/$uri",
        "/${x}",
        "/..;/",
        "//",
        "/a/../b",
        "/%0a",
        "a",
    ] {
        assert!(HttpPath::parse(s).is_err(), "http path accepted {s:?}");
    }
}

#[test]
fn errors_name_the_field_and_the_rule() {
    let e = TenantId::parse("Acme").unwrap_err();
    assert_eq!(e.field, "tenant id");
    assert_eq!(e.rule, Rule::ForbiddenChar { ch: 'A', at: 0 });
    assert_eq!(
        e.to_string(),
        "invalid tenant id: character 'A' at offset 0 is not allowed"
    );
    let e = Hostname::parse(&format!("{}.test", "a".repeat(64))).unwrap_err();
    assert_eq!(e.rule, Rule::TooLong { max: 63 });
    assert_eq!(BlobKey::parse("a/../b").unwrap_err().rule, Rule::BadSegment);
    assert_eq!(
        CollectionName::parse("system_x").unwrap_err().rule,
        Rule::Reserved
    );
    assert_eq!(
        Hostname::parse("xn--80ak6aa92e.com").unwrap_err().rule,
        Rule::Reserved
    );
    assert_eq!(TenantId::parse("").unwrap_err().rule, Rule::Empty);
    assert_eq!(TenantId::parse("1abc").unwrap_err().rule, Rule::BadStart);
    assert_eq!(TenantId::parse("abc-").unwrap_err().rule, Rule::BadEnd);
}

#[test]
fn realistic_values_parse() {
    assert!(TenantId::parse("acme").is_ok());
    assert!(AppId::parse("billing-api2").is_ok());
    assert!(Zone::parse("us-east-1a").is_ok());
    assert!(InstanceId::parse("i-0abc123def4567890").is_ok());
    assert!(Hostname::parse("billing.acme.example.com").is_ok());
    let longest = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(longest.len(), 253);
    assert!(Hostname::parse(&longest).is_ok());
    assert!(BlobKey::parse("snapshots/2026-11-26T12=00/manifest.json").is_ok());
    assert!(HttpPath::parse("/").is_ok());
    assert!(HttpPath::parse("/healthz/ready").is_ok());
    assert!(FieldPath::parse("spec.replicas").is_ok());
    assert!(DocumentId::parse("acme.billing-api").is_ok());
}

fn slug_strategy() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,30}[a-z0-9]"
}

fn hostname_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..4)
        .prop_map(|labels| format!("{}.example", labels.join(".")))
}

macro_rules! round_trip {
    ($t:ty, $s:expr) => {{
        let v = <$t>::parse(&$s).map_err(|e| TestCaseError::fail(format!("{}: {e}", $s)))?;
        prop_assert_eq!(v.to_string(), $s.clone());
        let json = serde_json::to_string(&v).unwrap();
        let back: $t = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, v);
    }};
}

proptest! {
    #[test]
    fn valid_slugs_round_trip(s in slug_strategy()) {
        round_trip!(TenantId, s);
        round_trip!(AppId, s);
        round_trip!(Zone, s);
        round_trip!(InstanceId, s);
        round_trip!(ArtifactId, s);
        round_trip!(IdempotencyKey, s);
    }

    #[test]
    fn valid_hostnames_round_trip(s in hostname_strategy()) {
        prop_assume!(!s.split('.').any(|l| l.starts_with("xn--")));
        round_trip!(Hostname, s);
    }

    #[test]
    fn arbitrary_strings_never_panic_and_accepted_values_are_plain(s in "\\PC{0,80}|[\\x00-\\x7f]{0,80}") {
        for name in accepted_by(&s) {
            prop_assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'),
                "{} accepted {:?}", name, s
            );
            prop_assert!(!s.contains(".."), "{} accepted {:?}", name, s);
        }
        let _ = BlobKey::parse(&s);
        let _ = BlobPrefix::parse(&s);
        let _ = HttpPath::parse(&s);
        let _ = FieldPath::parse(&s);
        let _ = RecordId::parse(&s);
        let _ = IndexName::parse(&s);
        let _ = DocumentId::parse(&s);
    }

    #[test]
    fn serde_accepts_exactly_what_parse_accepts(s in "\\PC{0,40}") {
        let json = serde_json::to_string(&s).unwrap();
        prop_assert_eq!(serde_json::from_str::<TenantId>(&json).is_ok(), TenantId::parse(&s).is_ok());
        prop_assert_eq!(serde_json::from_str::<Hostname>(&json).is_ok(), Hostname::parse(&s).is_ok());
        prop_assert_eq!(serde_json::from_str::<BlobKey>(&json).is_ok(), BlobKey::parse(&s).is_ok());
    }
}
