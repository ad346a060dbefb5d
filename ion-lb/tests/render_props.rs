//! Property tests of the renderer: valid tables render to text that reads back as themselves,
//! and the hostile corpus from the ingress-nginx CVEs is refused at parse time or rendered inert.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use ion_core::{AppId, Backend, Hostname, HttpPath, InstanceId, Route, RouteTable, TenantId, Zone};
use ion_lb::directive::{write, Arg, Directive, Value};
use ion_lb::lexer::{parse, self_check, ParsedDirective};
use ion_lb::{render, NginxConfig};
use proptest::prelude::*;

fn config() -> NginxConfig {
    NginxConfig::builder("/usr/sbin/nginx", "/var/lib/ion-lb")
        .https_listen(Some("127.0.0.1:8443".parse().unwrap()))
        .build()
        .unwrap()
}

/// What a rendered configuration routes: hostname → backend addresses (empty = 503).
fn routing_of(tree: &[ParsedDirective]) -> BTreeMap<String, Vec<String>> {
    let http = tree
        .iter()
        .find(|d| d.name == "http")
        .and_then(|d| d.block.as_ref())
        .expect("an http block");
    let mut upstreams = BTreeMap::new();
    for d in http.iter().filter(|d| d.name == "upstream") {
        let servers: Vec<String> = d
            .block
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.name == "server")
            .map(|s| s.args[0].clone())
            .collect();
        upstreams.insert(format!("http://{}", d.args[0]), servers);
    }
    let mut out = BTreeMap::new();
    for server in http.iter().filter(|d| d.name == "server") {
        let block = server.block.as_ref().unwrap();
        let Some(names) = block.iter().find(|d| d.name == "server_name") else {
            continue;
        };
        let location = block.iter().find(|d| d.name == "location").unwrap();
        let inner = &location.block.as_ref().unwrap()[0];
        let backends = if inner.name == "proxy_pass" {
            upstreams[&inner.args[0]].clone()
        } else {
            assert_eq!(inner.args, vec!["503"]);
            Vec::new()
        };
        for n in &names.args {
            assert!(
                out.insert(n.clone(), backends.clone()).is_none(),
                "{n} twice"
            );
        }
    }
    out
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
}

fn hostname() -> impl Strategy<Value = Hostname> {
    (prop::collection::vec(label(), 1..4), "[a-z]{2,6}").prop_filter_map(
        "valid hostname",
        |(labels, tld)| {
            let s = format!("{}.{tld}", labels.join("."));
            Hostname::parse(&s).ok()
        },
    )
}

fn routes() -> impl Strategy<Value = Vec<Route>> {
    prop::collection::vec(
        (
            "[a-z][a-z0-9]{0,8}",
            "[a-z][a-z0-9]{0,8}",
            prop::collection::btree_set(hostname(), 1..4),
            prop::collection::btree_set(1024u16..65535, 0..4),
        ),
        0..8,
    )
    .prop_map(|specs| {
        let mut seen_hosts = std::collections::BTreeSet::new();
        let mut seen_apps = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for (tenant, app, hosts, ports) in specs {
            if !seen_apps.insert((tenant.clone(), app.clone())) {
                continue;
            }
            let hostnames: Vec<Hostname> = hosts
                .into_iter()
                .filter(|h| seen_hosts.insert(h.clone()))
                .collect();
            if hostnames.is_empty() {
                continue;
            }
            out.push(Route {
                tenant: TenantId::parse(&tenant).unwrap(),
                app: AppId::parse(&app).unwrap(),
                hostnames,
                backends: ports
                    .into_iter()
                    .map(|p| Backend {
                        instance: InstanceId::parse(&format!("i-{p}")).unwrap(),
                        addr: SocketAddr::from(([127, 0, 0, 1], p)),
                        zone: Zone::parse("z1").unwrap(),
                    })
                    .collect(),
                tls: None,
            });
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn valid_tables_render_and_read_back_as_themselves(routes in routes(), generation in 0u64..1000) {
        let table = RouteTable::new(generation, routes).unwrap();
        let rendered = render(&table, &config(), SystemTime::now()).unwrap();
        self_check(&rendered.tree, &rendered.text).unwrap();
        let parsed = parse(&rendered.text).unwrap();
        let mut want = BTreeMap::new();
        for r in table.routes() {
            for h in &r.hostnames {
                want.insert(
                    h.to_string(),
                    r.backends.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(),
                );
            }
        }
        prop_assert_eq!(routing_of(&parsed), want);
    }

    #[test]
    fn dynamic_upstream_tables_render_membership_and_pass_the_self_check(routes in routes()) {
        let dir = tempfile::tempdir().unwrap();
        let secret = ion_lb::dynamic::ControlSecret::load_or_create(&dir.path().join("s")).unwrap();
        let config = NginxConfig::builder("/usr/sbin/nginx", "/var/lib/ion-lb")
            .lua_modules_dir(Some("/usr/lib/nginx/modules".into()))
            .build()
            .unwrap();
        let table = RouteTable::new(1, routes).unwrap();
        let r = ion_lb::render::render_with(&table, &config, SystemTime::now(), Some(&secret)).unwrap();
        let lines = r.membership.lines().count();
        prop_assert_eq!(lines, table.routes().iter().filter(|r| !r.backends.is_empty()).count());
        for route in table.routes() {
            for b in &route.backends {
                prop_assert!(r.membership.contains(&b.addr.to_string()));
            }
        }
        // Membership is not configuration: other backends, same configuration hash.
        let moved: Vec<Route> = table.routes().iter().cloned().map(|mut route| {
            for b in &mut route.backends { b.addr.set_ip([127, 0, 0, 2].into()); }
            route
        }).collect();
        let moved = RouteTable::new(2, moved).unwrap();
        let r2 = ion_lb::render::render_with(&moved, &config, SystemTime::now(), Some(&secret)).unwrap();
        prop_assert_eq!(r.hash, r2.hash);
    }

    #[test]
    fn any_printable_value_reads_back_verbatim(s in "[ -~]{1,64}") {
        match Value::new(s.clone()) {
            Ok(v) => {
                let model = vec![Directive::new("server_name", vec![Arg::Value(v)])];
                let text = write(&model).unwrap();
                let parsed = parse(&text).unwrap();
                prop_assert_eq!(parsed.len(), 1);
                prop_assert_eq!(&parsed[0].args, &vec![s]);
            }
            Err(_) => prop_assert!(s.contains('$')),
        }
    }

    #[test]
    fn arbitrary_strings_never_become_a_hostname_with_syntax(s in "\\PC{0,80}") {
        if let Ok(h) = Hostname::parse(&s) {
            prop_assert!(h.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
        }
    }
}

/// The hostile corpus of the research notes (ingress-nginx CVEs and friends).
fn corpus() -> Vec<String> {
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
        "../../etc/nginx/x",
        "x/../../y",
        "a\u{ff1b}",
        "a\u{200b}b",
        "a\u{202e}b",
        "ok.test; include /etc/shadow",
        "ok.test\nlocation / {",
        "ok.test\\",
        "*.platform.tld",
        ".victim.tld",
        "~.*",
        "~^(.*)$",
        "_",
        "",
        "Victim.TLD.",
        "victim.tld.",
        "xn--80ak6aa92e.com",
        "a.test:443",
        "a.test/x",
        "[::1]",
        "127.0.0.1",
        "/a;",
        "/a }",
        "/x\" ; return 200 \"p",
        "/x\\",
        "/x\n",
        "/x\r",
        "/x\n#",
        "=/x",
        "~/x",
        "~*/x",
        "^~/x",
        "@named",
        "/x{1,3}",
        "/$uri",
        "/${x}",
        "/..;/",
        "//",
        "/%0a",
        "/%00",
        "engine:evil:x",
        "store:file:/x",
        "data:abc",
        "/proc/self/fd/3",
        "a b;c",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("a".repeat(10 * 1024));
    v.push(format!("{}.com", "a".repeat(254)));
    v
}

#[test]
fn the_hostile_corpus_is_refused_by_every_tenant_facing_name() {
    for s in corpus() {
        assert!(Hostname::parse(&s).is_err(), "hostname accepted {s:?}");
        assert!(TenantId::parse(&s).is_err(), "tenant id accepted {s:?}");
        assert!(AppId::parse(&s).is_err(), "app id accepted {s:?}");
        assert!(InstanceId::parse(&s).is_err(), "instance id accepted {s:?}");
        if s.starts_with('/') {
            // Paths are not rendered into nginx by ion-lb (routes are whole hosts); they are
            // checked here because the corpus has them.
            let path = HttpPath::parse(&s);
            if let Ok(p) = path {
                let v = Value::new(p.as_str()).expect("a parsed path is a safe value");
                let text = write(&[Directive::new("return", vec![Arg::Value(v)])]).unwrap();
                assert_eq!(parse(&text).unwrap()[0].args, vec![p.as_str().to_string()]);
            }
        }
    }
}

#[test]
fn the_hostile_corpus_is_inert_when_it_reaches_the_writer_as_a_value() {
    for s in corpus() {
        match Value::new(s.clone()) {
            Ok(v) => {
                let model = vec![
                    Directive::block(
                        "server",
                        vec![],
                        vec![Directive::new("server_name", vec![Arg::Value(v)])],
                    ),
                    Directive::new("pid", vec![Arg::Const("x")]),
                ];
                let text = write(&model).unwrap();
                let parsed = parse(&text).unwrap();
                assert_eq!(parsed.len(), 2, "{s:?} changed the structure");
                assert_eq!(parsed[0].block.as_ref().unwrap()[0].args, vec![s.clone()]);
            }
            Err(_) => assert!(
                s.is_empty() || s.contains('$') || s.bytes().any(|b| !(0x20..0x7f).contains(&b)),
                "{s:?} refused for no reason"
            ),
        }
    }
}

#[test]
fn long_valid_hostnames_sharing_a_listen_render_with_a_bucket_that_fits() {
    let long = |c: &str| {
        Hostname::parse(&format!(
            "{}.{}.{}.example.com",
            c.repeat(60),
            c.repeat(60),
            c.repeat(40)
        ))
        .unwrap()
    };
    let a = long("a");
    let b = long("b");
    assert!(a.as_str().len() >= 156);
    let mk = |app: &str, h: Hostname| Route {
        tenant: TenantId::parse("t").unwrap(),
        app: AppId::parse(app).unwrap(),
        hostnames: vec![h],
        backends: vec![],
        tls: None,
    };
    let table = RouteTable::new(1, vec![mk("a", a.clone()), mk("b", b)]).unwrap();
    let r = render(&table, &config(), SystemTime::now()).unwrap();
    let bucket = ion_lb::render::bucket_size_for(a.as_str().len());
    assert!(r
        .text
        .contains(&format!("server_names_hash_bucket_size \"{bucket}\"")));
}
