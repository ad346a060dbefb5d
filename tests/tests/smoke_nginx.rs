//! Smoke test for the nginx peer: validate a configuration, run our own master on a loopback
//! port, serve a page, reload into a new configuration and see it served, stop.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ion_core::testkit::peer_var;

const VAR: &str = "ION_TEST_NGINX_BIN";
const WHAT: &str = "nginx smoke test";

/// Kills the master if the test ends before it stopped it, so no nginx outlives a failed run.
struct Master(Child);

impl Drop for Master {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local addr").port()
}

/// The configuration for `generation`: a static page, a generation marker, and, when the lua
/// module is available, a lua location (ion-lb uses lua for reload-free upstream updates).
fn config(prefix: &Path, port: u16, generation: u32, lua_modules: Option<&Path>) -> String {
    let p = prefix.display();
    let (load, lua) = match lua_modules {
        Some(dir) => (
            format!(
                "load_module {0}/ndk_http_module.so;\nload_module {0}/ngx_http_lua_module.so;\n",
                dir.display()
            ),
            "location = /lua { default_type text/plain; content_by_lua_block { ngx.say(\"lua ok\") } }",
        ),
        None => (String::new(), ""),
    };
    format!(
        "{load}daemon off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {p}/html;
        location = /generation {{ default_type text/plain; return 200 \"generation {generation}\\n\"; }}
        {lua}
    }}
}}
"
    )
}

fn nginx(bin: &str, prefix: &Path, conf: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{WHAT}: cannot run {bin}: {e}"))
}

/// Polls `url` until its body is `want` or ten seconds pass.
async fn wait_for_body(http: &reqwest::Client, url: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        match http.get(url).send().await {
            Ok(r) => {
                last = r.text().await.unwrap_or_default();
                if last == want {
                    return;
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{WHAT}: {url} did not serve {want:?} within 10s; last answer: {last:?}");
}

#[tokio::test]
async fn nginx_validate_serve_reload_stop() {
    let Some(bin) = peer_var(VAR, WHAT) else {
        return;
    };
    let lua_modules: Option<PathBuf> = std::env::var_os("ION_TEST_NGINX_MODULES_DIR")
        .map(PathBuf::from)
        .filter(|d| d.join("ngx_http_lua_module.so").exists());

    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = dir.path().to_path_buf();
    // Workers of a master started as root run as nobody: they must be able to read the pages.
    fs::set_permissions(&prefix, fs::Permissions::from_mode(0o755)).expect("chmod prefix");
    for sub in ["logs", "html", "tmp"] {
        fs::create_dir_all(prefix.join(sub)).expect("create prefix folders");
    }
    fs::write(prefix.join("html/index.html"), "hello from ion\n").expect("write page");
    let conf = prefix.join("nginx.conf");
    let port = free_port();

    fs::write(&conf, config(&prefix, port, 1, lua_modules.as_deref())).expect("write config");
    let checked = nginx(&bin, &prefix, &conf, &["-t", "-q"]);
    assert!(
        checked.status.success(),
        "{WHAT}: nginx -t rejected the config: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let broken = prefix.join("broken.conf");
    fs::write(
        &broken,
        "events {}\nhttp { server { listen 127.0.0.1:1; bogus_directive on; } }\n",
    )
    .expect("write broken config");
    let rejected = nginx(&bin, &prefix, &broken, &["-t", "-q"]);
    assert!(
        !rejected.status.success(),
        "{WHAT}: nginx -t accepted an invalid config"
    );

    let child = Command::new(&bin)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{WHAT}: cannot start {bin}: {e}"));
    let mut master = Master(child);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .expect("http client");
    let base = format!("http://127.0.0.1:{port}");
    wait_for_body(&http, &format!("{base}/generation"), "generation 1\n").await;
    wait_for_body(&http, &format!("{base}/index.html"), "hello from ion\n").await;
    if lua_modules.is_some() {
        wait_for_body(&http, &format!("{base}/lua"), "lua ok\n").await;
    } else {
        println!("{WHAT}: ION_TEST_NGINX_MODULES_DIR has no lua module; lua location not checked");
    }

    // Reload: write the next generation, validate it, signal the running master.
    fs::write(&conf, config(&prefix, port, 2, lua_modules.as_deref())).expect("write config");
    let checked = nginx(&bin, &prefix, &conf, &["-t", "-q"]);
    assert!(
        checked.status.success(),
        "{WHAT}: nginx -t rejected generation 2: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let reloaded = nginx(&bin, &prefix, &conf, &["-s", "reload"]);
    assert!(
        reloaded.status.success(),
        "{WHAT}: nginx -s reload failed: {}",
        String::from_utf8_lossy(&reloaded.stderr)
    );
    wait_for_body(&http, &format!("{base}/generation"), "generation 2\n").await;

    let quit = nginx(&bin, &prefix, &conf, &["-s", "quit"]);
    assert!(
        quit.status.success(),
        "{WHAT}: nginx -s quit failed: {}",
        String::from_utf8_lossy(&quit.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = master.0.try_wait().expect("wait for the master") {
            assert!(status.success(), "{WHAT}: the master exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{WHAT}: the master did not stop within 10s of -s quit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        http.get(format!("{base}/generation")).send().await.is_err(),
        "{WHAT}: still serving after quit"
    );
}
