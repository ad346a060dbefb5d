//! Reload-free upstream membership through nginx's Lua module (Debian `libnginx-mod-http-lua`).
//!
//! With [`crate::NginxConfig::lua_modules_dir`] set, every route proxies to one `ion_dynamic`
//! upstream whose `balancer_by_lua_file` picks a peer from a shared dictionary, keyed by the
//! route's hashed key. ion pushes membership to a control location on the loopback marker server
//! that demands a per-prefix secret; hostnames, certificates and the set of routes still change
//! through a reload. The Lua files are ion's constants: no tenant text is ever Lua code.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ion_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::files::{io_error, write_atomic};

/// Path of the control location on the marker server.
pub const CONTROL_PATH: &str = "/ion-backends";

/// The balancer: a random first peer of the route's list, then the next ones on retry.
pub const BALANCER_LUA: &str = r#"-- ion-lb balancer (constant, written by ion)
local balancer = require "ngx.balancer"
local list = ngx.shared.ion_backends:get("r:" .. ngx.var.ion_route)
if not list then
    ngx.log(ngx.ERR, "ion: no backends for route")
    return ngx.exit(502)
end
local peers = {}
for p in string.gmatch(list, "[^,]+") do
    peers[#peers + 1] = p
end
local ctx = ngx.ctx
local try = (ctx.ion_try or 0) + 1
ctx.ion_try = try
if try == 1 then
    ctx.ion_start = math.random(#peers)
    if #peers > 1 then
        balancer.set_more_tries(math.min(#peers - 1, 2))
    end
end
local p = peers[(ctx.ion_start + try - 2) % #peers + 1]
local host, port = string.match(p, "^(.+):(%d+)$")
host = string.gsub(host, "^%[(.*)%]$", "%1")
local ok, err = balancer.set_current_peer(host, tonumber(port))
if not ok then
    ngx.log(ngx.ERR, "ion: set_current_peer: ", err)
    return ngx.exit(500)
end
"#;

/// The control location: `GET` answers the membership hash, `POST` replaces the membership with
/// the body (`<hash>\n` then `<route key> <addr>,<addr>\n` lines). Both demand `X-Ion-Secret`.
pub const CONTROL_LUA: &str = r#"-- ion-lb control (constant, written by ion)
local secret = ngx.var.ion_secret
local given = ngx.var.http_x_ion_secret or ""
local diff = #given == #secret and 0 or 1
for i = 1, math.min(#given, #secret) do
    if string.byte(given, i) ~= string.byte(secret, i) then diff = 1 end
end
if diff ~= 0 then
    return ngx.exit(403)
end
local dict = ngx.shared.ion_backends
if ngx.req.get_method() == "GET" then
    ngx.say(dict:get("hash") or "none")
    return
end
ngx.req.read_body()
local body = ngx.req.get_body_data()
if not body then
    return ngx.exit(400)
end
local hash = nil
local keep = {}
local sets = {}
for line in string.gmatch(body, "[^\n]+") do
    if not hash then
        hash = line
    else
        local key, list = string.match(line, "^([0-9a-f]+) ([0-9a-f.:%[%],]+)$")
        if not key then
            return ngx.exit(400)
        end
        keep["r:" .. key] = true
        sets[#sets + 1] = { "r:" .. key, list }
    end
end
if not hash or not string.match(hash, "^[0-9a-f]+$") then
    return ngx.exit(400)
end
for _, kv in ipairs(sets) do
    local ok, err = dict:set(kv[1], kv[2])
    if not ok then
        ngx.log(ngx.ERR, "ion: shared dict: ", err)
        return ngx.exit(507)
    end
end
for _, k in ipairs(dict:get_keys(0)) do
    if k ~= "hash" and not keep[k] then
        dict:delete(k)
    end
end
dict:set("hash", hash)
ngx.say(hash)
"#;

/// The per-prefix secret the control location demands. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlSecret(String);

impl fmt::Debug for ControlSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlSecret(<redacted>)")
    }
}

impl ControlSecret {
    /// Reads the secret at `path`, creating it (0600, 128 random bits) if absent.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if let Ok(text) = std::fs::read_to_string(path) {
            let s = text.trim();
            if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Self(s.to_string()));
            }
            return Err(Error::corrupt(format!(
                "bad control secret in {}",
                path.display()
            )));
        }
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .map_err(|e| io_error("read /dev/urandom", e))?;
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_atomic(path, secret.as_bytes(), 0o600)?;
        Ok(Self(secret))
    }

    /// The secret, for the configuration.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// Writes the Lua files into `dir` (world-readable: workers load them; they hold no secret).
pub fn write_lua_files(dir: &Path) -> Result<()> {
    crate::files::ensure_dir(dir, 0o755)?;
    write_atomic(&dir.join("balancer.lua"), BALANCER_LUA.as_bytes(), 0o644)?;
    write_atomic(&dir.join("control.lua"), CONTROL_LUA.as_bytes(), 0o644)
}

async fn exchange(addr: SocketAddr, request: String) -> Result<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(1024 * 1024).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| Error::unavailable("nginx control endpoint timed out").with_transient(true))?
        .map_err(|e| io_error("nginx control endpoint", e).with_transient(true))?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0u16);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Replaces the membership nginx balances over with `body` and checks it answers `hash`.
pub async fn push(addr: SocketAddr, secret: &ControlSecret, body: &str, hash: &str) -> Result<()> {
    let request = format!(
        "POST {CONTROL_PATH} HTTP/1.0\r\nHost: ion-control\r\nX-Ion-Secret: {}\r\nContent-Length: {}\r\n\r\n{body}",
        secret.expose(),
        body.len()
    );
    let (status, answer) = exchange(addr, request).await?;
    if status != 200 || answer != hash {
        return Err(Error::unavailable(format!(
            "nginx control endpoint refused the membership update (status {status})"
        )));
    }
    let request = format!(
        "GET {CONTROL_PATH} HTTP/1.0\r\nHost: ion-control\r\nX-Ion-Secret: {}\r\n\r\n",
        secret.expose()
    );
    let (status, live) = exchange(addr, request).await?;
    if status != 200 || live != hash {
        return Err(Error::unavailable(
            "nginx does not report the pushed membership",
        ));
    }
    Ok(())
}
