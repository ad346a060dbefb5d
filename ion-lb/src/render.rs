//! The pure renderer: a `RouteTable` and an `NginxConfig` become nginx configuration bytes.
//!
//! No I/O happens here. Tenant data reaches the output only as validated [`Hostname`](ion_core::Hostname)s and socket
//! addresses inside quoted arguments; upstream names and certificate file names are derived from
//! a hash of tenant and app, and nothing of a tenant's ever lands in a comment (ion writes none).
//! Every render is re-read by the independent lexer ([`crate::lexer::self_check`]) before it is
//! returned, so a render that would not mean what the model says is an error, never a file.

use std::path::PathBuf;
use std::time::SystemTime;

use ion_core::{Error, Result, Route, RouteTable, Sha256Digest};

use crate::config::{NginxConfig, PID_FILE};
use crate::directive::{consts, write, Arg, Directive, Value};
use crate::dynamic::{ControlSecret, CONTROL_PATH};
use crate::lexer::self_check;
use crate::tls;

/// The marker location's path on the marker server.
pub const MARKER_PATH: &str = "/ion-marker";
/// What the marker answers before the hash.
pub const MARKER_PREFIX: &str = "ion-config ";

/// A certificate and key to write before the configuration that names them.
#[derive(Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// Absolute path of the chain file.
    pub chain_path: PathBuf,
    /// Absolute path of the key file (written 0600).
    pub key_path: PathBuf,
    /// The chain, canonical PEM.
    pub chain_pem: String,
    /// The key, canonical PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertFiles")
            .field("chain_path", &self.chain_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// A rendered configuration.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The configuration text.
    pub text: String,
    /// Identity of the configuration, as the marker reports it: the hash of everything but the
    /// marker's own answer. Equal hashes mean an identical configuration (no reload needed).
    pub hash: Sha256Digest,
    /// The directive tree the text was written from.
    pub tree: Vec<Directive>,
    /// Certificates the configuration names.
    pub certs: Vec<CertFiles>,
    /// With dynamic upstreams: the membership to push (`<route key> <addr>,<addr>` lines).
    pub membership: String,
    /// With dynamic upstreams: the hash of [`Rendered::membership`].
    pub membership_hash: String,
}

impl Rendered {
    /// What the marker answers when this configuration is live.
    pub fn marker_body(&self) -> String {
        format!("{MARKER_PREFIX}{}", self.hash)
    }
}

/// The stable name of a route's upstream: `u_` and 20 hex digits of a hash of tenant and app.
pub fn upstream_name(route: &Route) -> String {
    format!("u_{}", route_key(route))
}

fn route_key(route: &Route) -> String {
    let digest = Sha256Digest::of(format!("{}\0{}", route.tenant, route.app).as_bytes());
    digest.to_string()[..20].to_string()
}

/// `server_names_hash_bucket_size` that fits a name of `longest` bytes: nginx needs
/// `sizeof(void*) + align(len + 2, 8)` for the entry plus one pointer, in a power of two.
pub fn bucket_size_for(longest: usize) -> u64 {
    let entry = 8 + (longest + 2).div_ceil(8) * 8 + 8;
    (entry as u64).next_power_of_two().max(64)
}

fn value(s: impl Into<String>) -> Result<Arg> {
    Value::new(s)
        .map(Arg::Value)
        .map_err(|e| Error::invalid_input(e.to_string()))
}

fn path_value(p: &std::path::Path) -> Result<Arg> {
    let s = p
        .to_str()
        .ok_or_else(|| Error::invalid_config("path is not utf-8"))?;
    value(s)
}

fn num(n: u64) -> Arg {
    Arg::Value(Value::number(n))
}

fn listen(addr: std::net::SocketAddr) -> Result<Arg> {
    value(addr.to_string())
}

/// Renders `table` for `config`, checking TLS material at time `now` (static upstreams only).
pub fn render(table: &RouteTable, config: &NginxConfig, now: SystemTime) -> Result<Rendered> {
    render_with(table, config, now, None)
}

/// Renders `table`; `secret` guards the control location when `config` has dynamic upstreams.
pub fn render_with(
    table: &RouteTable,
    config: &NginxConfig,
    now: SystemTime,
    secret: Option<&ControlSecret>,
) -> Result<Rendered> {
    let dynamic = match (&config.lua_modules_dir, secret) {
        (None, _) => None,
        (Some(dir), Some(secret)) => Some((dir, secret)),
        (Some(_), None) => {
            return Err(Error::invalid_config(
                "lua_modules_dir: dynamic upstreams need a control secret",
            ))
        }
    };
    let mut membership = String::new();
    let mut certs = Vec::new();
    let mut http = Vec::new();
    let https = config.https_listen;

    let longest = table
        .routes()
        .iter()
        .flat_map(|r| r.hostnames.iter())
        .map(|h| h.as_str().len())
        .max()
        .unwrap_or(0);
    let names: usize = table.routes().iter().map(|r| r.hostnames.len()).sum();

    http.push(Directive::new("access_log", consts(&["off"])));
    if dynamic.is_some() {
        http.push(Directive::new(
            "lua_shared_dict",
            consts(&["ion_backends", "16m"]),
        ));
        let lua = config.lua_dir().join("balancer.lua");
        http.push(Directive::block(
            "upstream",
            consts(&["ion_dynamic"]),
            vec![
                // A placeholder peer: balancer_by_lua picks the real one per request.
                Directive::new("server", consts(&["0.0.0.1:1"])),
                Directive::new("balancer_by_lua_file", vec![path_value(&lua)?]),
                Directive::new("keepalive", vec![num(config.upstream_keepalive.into())]),
            ],
        ));
    }
    for (name, dir) in [
        ("client_body_temp_path", "tmp/body"),
        ("proxy_temp_path", "tmp/proxy"),
        ("fastcgi_temp_path", "tmp/fastcgi"),
        ("uwsgi_temp_path", "tmp/uwsgi"),
        ("scgi_temp_path", "tmp/scgi"),
    ] {
        http.push(Directive::new(name, consts(&[dir])));
    }
    http.push(Directive::new("server_tokens", consts(&["off"])));
    http.push(Directive::new(
        "default_type",
        consts(&["application/octet-stream"]),
    ));
    http.push(Directive::new("keepalive_timeout", consts(&["65s"])));
    http.push(Directive::new(
        "server_names_hash_bucket_size",
        vec![num(bucket_size_for(longest))],
    ));
    http.push(Directive::new(
        "server_names_hash_max_size",
        vec![num(((names as u64) * 2).next_power_of_two().max(1024))],
    ));
    if https.is_some() {
        // nginx 1.22 still enables TLSv1/1.1 and not 1.3 by default.
        http.push(Directive::new(
            "ssl_protocols",
            consts(&["TLSv1.2", "TLSv1.3"]),
        ));
        http.push(Directive::new(
            "ssl_prefer_server_ciphers",
            consts(&["off"]),
        ));
    }
    http.push(Directive::new("proxy_http_version", consts(&["1.1"])));
    // One level defines every proxy header: a location with its own proxy_set_header would drop
    // all of these. X-Forwarded-For is overwritten, not appended: this is the edge, and a
    // client-supplied chain must not reach apps as if ion had vouched for it.
    for (h, v) in [
        ("Connection", ""),
        ("Host", "$host"),
        ("X-Forwarded-For", "$remote_addr"),
        ("X-Forwarded-Proto", "$scheme"),
        ("X-Forwarded-Host", "$host"),
        ("X-Request-Id", "$request_id"),
    ] {
        http.push(Directive::new("proxy_set_header", consts(&[h, v])));
    }
    http.push(Directive::new("proxy_connect_timeout", consts(&["2s"])));
    http.push(Directive::new(
        "proxy_next_upstream",
        consts(&["error", "timeout"]),
    ));
    http.push(Directive::new("proxy_next_upstream_tries", consts(&["3"])));

    // Unknown hosts are refused: 421 on plain HTTP, no handshake on TLS.
    http.push(Directive::block(
        "server",
        vec![],
        vec![
            Directive::new(
                "listen",
                vec![listen(config.http_listen)?, Arg::Const("default_server")],
            ),
            Directive::new("return", consts(&["421"])),
        ],
    ));
    if let Some(addr) = https {
        http.push(Directive::block(
            "server",
            vec![],
            vec![
                Directive::new(
                    "listen",
                    vec![
                        listen(addr)?,
                        Arg::Const("ssl"),
                        Arg::Const("default_server"),
                    ],
                ),
                Directive::new("ssl_reject_handshake", consts(&["on"])),
            ],
        ));
    }

    for route in table.routes() {
        let upstream = upstream_name(route);
        if dynamic.is_some() && !route.backends.is_empty() {
            let addrs: Vec<String> = route.backends.iter().map(|b| b.addr.to_string()).collect();
            membership.push_str(&format!("{} {}\n", route_key(route), addrs.join(",")));
        } else if !route.backends.is_empty() {
            let mut servers = Vec::new();
            for b in &route.backends {
                servers.push(Directive::new(
                    "server",
                    vec![
                        listen(b.addr)?,
                        value(format!("max_fails={}", config.max_fails))?,
                        value(format!("fail_timeout={}s", config.fail_timeout_secs))?,
                    ],
                ));
            }
            servers.push(Directive::new(
                "keepalive",
                vec![num(config.upstream_keepalive.into())],
            ));
            http.push(Directive::block(
                "upstream",
                vec![value(&upstream)?],
                servers,
            ));
        }

        let mut server = vec![Directive::new("listen", vec![listen(config.http_listen)?])];
        if let Some(tls) = &route.tls {
            let addr = https.ok_or_else(|| {
                Error::invalid_input(format!(
                    "route {}/{} has tls but no https listener is configured",
                    route.tenant, route.app
                ))
            })?;
            let checked = tls::check(tls, &route.hostnames, now).map_err(|why| {
                Error::invalid_input(format!(
                    "tls of route {}/{} refused: {why}",
                    route.tenant, route.app
                ))
            })?;
            let stem = format!("{}-{}", route_key(route), &checked.digest.to_string()[..16]);
            let chain_path = config.certs_dir().join(format!("{stem}.crt"));
            let key_path = config.certs_dir().join(format!("{stem}.key"));
            server.push(Directive::new(
                "listen",
                vec![listen(addr)?, Arg::Const("ssl")],
            ));
            server.push(Directive::new(
                "ssl_certificate",
                vec![path_value(&chain_path)?],
            ));
            server.push(Directive::new(
                "ssl_certificate_key",
                vec![path_value(&key_path)?],
            ));
            certs.push(CertFiles {
                chain_path,
                key_path,
                chain_pem: checked.chain_pem,
                key_pem: checked.key_pem,
            });
        }
        let mut names = Vec::new();
        for h in &route.hostnames {
            names.push(value(h.as_str())?);
        }
        server.push(Directive::new("server_name", names));
        let body = if route.backends.is_empty() {
            vec![Directive::new("return", consts(&["503"]))]
        } else if dynamic.is_some() {
            vec![
                Directive::new(
                    "set",
                    vec![Arg::Const("$ion_route"), value(route_key(route))?],
                ),
                Directive::new("proxy_pass", consts(&["http://ion_dynamic"])),
            ]
        } else {
            vec![Directive::new(
                "proxy_pass",
                vec![value(format!("http://{upstream}"))?],
            )]
        };
        server.push(Directive::block("location", consts(&["/"]), body));
        http.push(Directive::block("server", vec![], server));
    }

    let mut main = Vec::new();
    if let Some((dir, _)) = dynamic {
        for module in ["ndk_http_module.so", "ngx_http_lua_module.so"] {
            main.push(Directive::new(
                "load_module",
                vec![path_value(&dir.join(module))?],
            ));
        }
    }
    if let Some(user) = &config.user {
        main.push(Directive::new("user", vec![value(user.as_str())?]));
    }
    main.push(Directive::new(
        "worker_processes",
        vec![num(config.worker_processes.into())],
    ));
    main.push(Directive::new("pid", consts(&[PID_FILE])));
    main.push(Directive::new(
        "error_log",
        consts(&["logs/error.log", "warn"]),
    ));
    main.push(Directive::new(
        "worker_shutdown_timeout",
        vec![value(format!("{}s", config.worker_shutdown_timeout_secs))?],
    ));
    main.push(Directive::block(
        "events",
        vec![],
        vec![Directive::new(
            "worker_connections",
            vec![num(config.worker_connections.into())],
        )],
    ));

    // The hash covers everything but the marker's answer, plus the marker's own address.
    let mut unmarked = main.clone();
    unmarked.push(Directive::block("http", vec![], http.clone()));
    let unmarked_text = write(&unmarked).map_err(|e| Error::unexpected(e.to_string()))?;
    let hash =
        Sha256Digest::of(format!("{unmarked_text}\nmarker {}", config.marker_listen).as_bytes());

    let mut control = Vec::new();
    if let Some((_, secret)) = dynamic {
        control.push(Directive::block(
            "location",
            vec![Arg::Const("="), Arg::Const(CONTROL_PATH)],
            vec![
                Directive::new("allow", consts(&["127.0.0.1"])),
                Directive::new("allow", consts(&["::1"])),
                Directive::new("deny", consts(&["all"])),
                Directive::new("client_max_body_size", consts(&["16m"])),
                Directive::new("client_body_buffer_size", consts(&["16m"])),
                Directive::new(
                    "set",
                    vec![Arg::Const("$ion_secret"), value(secret.expose())?],
                ),
                Directive::new(
                    "content_by_lua_file",
                    vec![path_value(&config.lua_dir().join("control.lua"))?],
                ),
            ],
        ));
    }
    http.push(Directive::block(
        "server",
        vec![],
        vec![
            Directive::new("listen", vec![listen(config.marker_listen)?]),
            Directive::block(
                "location",
                vec![Arg::Const("="), Arg::Const(MARKER_PATH)],
                vec![
                    Directive::new("allow", consts(&["127.0.0.1"])),
                    Directive::new("allow", consts(&["::1"])),
                    Directive::new("deny", consts(&["all"])),
                    Directive::new("default_type", consts(&["text/plain"])),
                    Directive::new(
                        "return",
                        vec![Arg::Const("200"), value(format!("{MARKER_PREFIX}{hash}"))?],
                    ),
                ],
            ),
            Directive::block(
                "location",
                consts(&["/"]),
                vec![Directive::new("return", consts(&["404"]))],
            ),
        ]
        .into_iter()
        .chain(control)
        .collect(),
    ));
    main.push(Directive::block("http", vec![], http));
    let text = write(&main).map_err(|e| Error::unexpected(e.to_string()))?;
    self_check(&main, &text).map_err(|e| Error::unexpected(e.to_string()))?;
    let membership_hash = Sha256Digest::of(membership.as_bytes()).to_string();
    Ok(Rendered {
        text,
        hash,
        tree: main,
        certs,
        membership,
        membership_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ion_core::{AppId, Backend, Hostname, InstanceId, TenantId, Zone};

    fn config() -> NginxConfig {
        NginxConfig::builder("/usr/sbin/nginx", "/var/lib/ion-lb")
            .https_listen(Some("127.0.0.1:8443".parse().unwrap()))
            .build()
            .unwrap()
    }

    fn route(tenant: &str, app: &str, hosts: &[&str], ports: &[u16]) -> Route {
        Route {
            tenant: TenantId::parse(tenant).unwrap(),
            app: AppId::parse(app).unwrap(),
            hostnames: hosts.iter().map(|h| Hostname::parse(h).unwrap()).collect(),
            backends: ports
                .iter()
                .map(|p| Backend {
                    instance: InstanceId::parse(&format!("i-{p}")).unwrap(),
                    addr: format!("127.0.0.1:{p}").parse().unwrap(),
                    zone: Zone::parse("z1").unwrap(),
                })
                .collect(),
            tls: None,
        }
    }

    #[test]
    fn renders_upstreams_servers_default_and_marker() {
        let table = RouteTable::new(
            3,
            vec![
                route(
                    "acme",
                    "web",
                    &["a.example.com", "www.a.example.com"],
                    &[9001, 9002],
                ),
                route("acme", "empty", &["e.example.com"], &[]),
            ],
        )
        .unwrap();
        let r = render(&table, &config(), SystemTime::now()).unwrap();
        let up = upstream_name(&table.routes()[1]);
        assert!(r.text.contains(&format!("upstream \"{up}\"")));
        assert!(r.text.contains("server \"127.0.0.1:9001\" \"max_fails=3\""));
        assert!(r
            .text
            .contains("server_name \"a.example.com\" \"www.a.example.com\";"));
        assert!(r.text.contains("return \"503\""));
        assert!(r.text.contains("return \"421\""));
        assert!(r.text.contains("ssl_reject_handshake \"on\""));
        assert!(r.text.contains(&r.marker_body()));
        assert!(!r.text.contains("acme"), "tenant text outside server_name");
        assert!(!r.text.contains('#'));
    }

    #[test]
    fn equal_tables_render_equal_bytes_and_generation_is_not_part_of_it() {
        let t = RouteTable::new(1, vec![route("a", "b", &["x.example.com"], &[1000])]).unwrap();
        let a = render(&t, &config(), SystemTime::now()).unwrap();
        let b = render(&t.clone().with_generation(9), &config(), SystemTime::now()).unwrap();
        assert_eq!(a.text, b.text);
        assert_eq!(a.hash, b.hash);
        let other = RouteTable::new(1, vec![route("a", "b", &["x.example.com"], &[1001])]).unwrap();
        assert_ne!(
            render(&other, &config(), SystemTime::now()).unwrap().hash,
            a.hash
        );
    }

    #[test]
    fn bucket_size_fits_the_longest_valid_hostname() {
        assert_eq!(bucket_size_for(0), 64);
        assert!(bucket_size_for(156) >= 8 + 160 + 8);
        assert!(bucket_size_for(253) >= 8 + 256 + 8);
    }

    #[test]
    fn tls_without_https_listener_is_invalid_input() {
        let mut r = route("a", "b", &["x.example.com"], &[1000]);
        r.tls = Some(ion_core::TlsCertificate {
            chain_pem: String::new(),
            key_pem: String::new(),
        });
        let t = RouteTable::new(1, vec![r]).unwrap();
        let plain = NginxConfig::builder("/usr/sbin/nginx", "/var/lib/ion-lb")
            .build()
            .unwrap();
        let err = render(&t, &plain, SystemTime::now()).unwrap_err();
        assert_eq!(err.kind(), ion_core::ErrorKind::InvalidInput);
        let err = render(&t, &config(), SystemTime::now()).unwrap_err();
        assert_eq!(err.kind(), ion_core::ErrorKind::InvalidInput);
    }
}
