//! An independent nginx configuration lexer, used to prove that rendered text means what the
//! directive tree says.
//!
//! It follows nginx's own tokenizer (`ngx_conf_read_token`): `#` at the start of a token opens a
//! comment to the end of the line, `;` ends a directive, `{`/`}` open and close blocks, a token
//! starting with `"` or `'` runs to the matching quote with `\"`, `\'`, `\\`, `\t`, `\r` and `\n`
//! unescaped and any other backslash kept. It shares no code with the writer, so an escaping bug
//! in either shows up as a mismatch in [`self_check`].

use std::fmt;

use crate::directive::{Arg, Directive};

/// A directive as read back from text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedDirective {
    /// Its name.
    pub name: String,
    /// Its arguments, unescaped.
    pub args: Vec<String>,
    /// Its block, if it has one.
    pub block: Option<Vec<ParsedDirective>>,
}

/// Why text did not lex or did not match the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCheckError(pub String);

impl fmt::Display for SelfCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rendered configuration failed its self-check: {}",
            self.0
        )
    }
}

impl std::error::Error for SelfCheckError {}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, SelfCheckError> {
    let err = |m: String| Err(SelfCheckError(m));
    let b = text.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b';' => {
                out.push(Token::Semicolon);
                i += 1;
            }
            b'{' => {
                out.push(Token::Open);
                i += 1;
            }
            b'}' => {
                out.push(Token::Close);
                i += 1;
            }
            b'"' | b'\'' => {
                let quote = c;
                i += 1;
                let mut word = Vec::new();
                loop {
                    if i >= b.len() {
                        return err("unterminated quoted argument".into());
                    }
                    let ch = b[i];
                    if ch == b'\\' && i + 1 < b.len() {
                        let next = b[i + 1];
                        match next {
                            b'"' | b'\'' | b'\\' => word.push(next),
                            b't' => word.push(b'\t'),
                            b'r' => word.push(b'\r'),
                            b'n' => word.push(b'\n'),
                            _ => {
                                word.push(b'\\');
                                word.push(next);
                            }
                        }
                        i += 2;
                        continue;
                    }
                    i += 1;
                    if ch == quote {
                        break;
                    }
                    word.push(ch);
                }
                // nginx demands a separator after a closing quote.
                if i < b.len() && !matches!(b[i], b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{') {
                    return err(format!("unexpected character after quote at byte {i}"));
                }
                out.push(Token::Word(String::from_utf8(word).map_err(|_| {
                    SelfCheckError("quoted argument is not utf-8".into())
                })?));
            }
            _ => {
                let start = i;
                let mut word = Vec::new();
                while i < b.len()
                    && !matches!(b[i], b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' | b'}')
                {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        word.push(b[i + 1]);
                        i += 2;
                        continue;
                    }
                    word.push(b[i]);
                    i += 1;
                }
                if word.is_empty() {
                    return err(format!("empty token at byte {start}"));
                }
                out.push(Token::Word(
                    String::from_utf8(word)
                        .map_err(|_| SelfCheckError("argument is not utf-8".into()))?,
                ));
            }
        }
    }
    Ok(out)
}

/// Parses configuration text into a directive tree.
pub fn parse(text: &str) -> Result<Vec<ParsedDirective>, SelfCheckError> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    let tree = parse_level(&tokens, &mut pos, 0)?;
    if pos != tokens.len() {
        return Err(SelfCheckError("unbalanced '}'".into()));
    }
    Ok(tree)
}

fn parse_level(
    tokens: &[Token],
    pos: &mut usize,
    depth: usize,
) -> Result<Vec<ParsedDirective>, SelfCheckError> {
    let mut out = Vec::new();
    loop {
        match tokens.get(*pos) {
            None if depth == 0 => return Ok(out),
            None => return Err(SelfCheckError("unterminated block".into())),
            Some(Token::Close) if depth > 0 => {
                *pos += 1;
                return Ok(out);
            }
            Some(Token::Close) => return Err(SelfCheckError("unbalanced '}'".into())),
            Some(Token::Semicolon) | Some(Token::Open) => {
                return Err(SelfCheckError("directive without a name".into()))
            }
            Some(Token::Word(name)) => {
                let name = name.clone();
                *pos += 1;
                let mut args = Vec::new();
                loop {
                    match tokens.get(*pos) {
                        Some(Token::Word(a)) => {
                            args.push(a.clone());
                            *pos += 1;
                        }
                        Some(Token::Semicolon) => {
                            *pos += 1;
                            out.push(ParsedDirective {
                                name,
                                args,
                                block: None,
                            });
                            break;
                        }
                        Some(Token::Open) => {
                            *pos += 1;
                            let block = parse_level(tokens, pos, depth + 1)?;
                            out.push(ParsedDirective {
                                name,
                                args,
                                block: Some(block),
                            });
                            break;
                        }
                        Some(Token::Close) | None => {
                            return Err(SelfCheckError(format!(
                                "directive {name} is not terminated by ';'"
                            )))
                        }
                    }
                }
            }
        }
    }
}

/// The only directive names ion ever emits. `include`, `load_module`, `ssl_engine`, `*_by_lua*`,
/// `root`, `alias`, `access_log` paths and the like are absent on purpose.
pub const ALLOWED_DIRECTIVES: &[&str] = &[
    "worker_processes",
    "pid",
    "error_log",
    "worker_shutdown_timeout",
    "events",
    "worker_connections",
    "http",
    "access_log",
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
    "server_names_hash_bucket_size",
    "server_names_hash_max_size",
    "server_tokens",
    "default_type",
    "keepalive_timeout",
    "ssl_protocols",
    "ssl_prefer_server_ciphers",
    "ssl_session_cache",
    "proxy_http_version",
    "proxy_set_header",
    "proxy_connect_timeout",
    "proxy_next_upstream",
    "proxy_next_upstream_tries",
    "upstream",
    "server",
    "keepalive",
    "listen",
    "server_name",
    "ssl_certificate",
    "ssl_certificate_key",
    "ssl_reject_handshake",
    "location",
    "return",
    "proxy_pass",
    "allow",
    "deny",
    "user",
    "load_module",
    "lua_shared_dict",
    "balancer_by_lua_file",
    "content_by_lua_file",
    "set",
    "client_max_body_size",
    "client_body_buffer_size",
];

/// Parses `text` and proves it equals `model`, uses only [`ALLOWED_DIRECTIVES`], puts `$` only
/// where ion's constants do, and names no key through an OpenSSL engine/store URI.
pub fn self_check(model: &[Directive], text: &str) -> Result<(), SelfCheckError> {
    let parsed = parse(text)?;
    compare(model, &parsed, "")
}

fn compare(
    model: &[Directive],
    parsed: &[ParsedDirective],
    at: &str,
) -> Result<(), SelfCheckError> {
    if model.len() != parsed.len() {
        return Err(SelfCheckError(format!(
            "{at}: model has {} directives, text has {}",
            model.len(),
            parsed.len()
        )));
    }
    for (m, p) in model.iter().zip(parsed) {
        let here = format!("{at}/{}", p.name);
        if !ALLOWED_DIRECTIVES.contains(&p.name.as_str()) {
            return Err(SelfCheckError(format!(
                "{here}: directive not on the allow-list"
            )));
        }
        if m.name != p.name {
            return Err(SelfCheckError(format!(
                "{at}: model says {}, text says {}",
                m.name, p.name
            )));
        }
        if m.args.len() != p.args.len() {
            return Err(SelfCheckError(format!(
                "{here}: model has {} arguments, text has {}",
                m.args.len(),
                p.args.len()
            )));
        }
        for (ma, pa) in m.args.iter().zip(&p.args) {
            if ma.text() != pa {
                return Err(SelfCheckError(format!(
                    "{here}: argument {:?} reads back as {pa:?}",
                    ma.text()
                )));
            }
            if matches!(ma, Arg::Value(_)) && pa.contains('$') {
                return Err(SelfCheckError(format!("{here}: '$' in a value argument")));
            }
            if pa.bytes().any(|b| b.is_ascii_control()) {
                return Err(SelfCheckError(format!("{here}: control character")));
            }
        }
        check_semantics(p, &here)?;
        match (&m.block, &p.block) {
            (None, None) => {}
            (Some(mb), Some(pb)) => compare(mb, pb, &here)?,
            _ => {
                return Err(SelfCheckError(format!(
                    "{here}: block in one and not the other"
                )))
            }
        }
    }
    Ok(())
}

/// Rules that hold for the text whatever the model says.
fn check_semantics(p: &ParsedDirective, here: &str) -> Result<(), SelfCheckError> {
    let fail = |m: &str| Err(SelfCheckError(format!("{here}: {m}")));
    match p.name.as_str() {
        "ssl_certificate" | "ssl_certificate_key" => {
            for a in &p.args {
                if !a.starts_with('/') || a.split('/').any(|s| s == "..") {
                    return fail("certificate paths must be absolute, without '..'");
                }
            }
        }
        "server_name" => {
            for a in &p.args {
                // A regex (`~`), wildcard (`*`), leading dot or `_` would widen the match.
                let first = a.bytes().next().unwrap_or(b'~');
                if !(first.is_ascii_lowercase() || first.is_ascii_digit())
                    || a.contains('*')
                    || a.contains('~')
                {
                    return fail("server_name must be a plain hostname");
                }
            }
        }
        "load_module" => {
            let ok = p.args.len() == 1
                && p.args[0].starts_with('/')
                && !p.args[0].split('/').any(|s| s == "..")
                && (p.args[0].ends_with("/ndk_http_module.so")
                    || p.args[0].ends_with("/ngx_http_lua_module.so"));
            if !ok {
                return fail("load_module may load only the lua module and its kit");
            }
        }
        "balancer_by_lua_file" | "content_by_lua_file" => {
            let ok = p.args.len() == 1
                && p.args[0].starts_with('/')
                && !p.args[0].split('/').any(|s| s == "..")
                && (p.args[0].ends_with("/lua/balancer.lua")
                    || p.args[0].ends_with("/lua/control.lua"));
            if !ok {
                return fail("lua may run only ion's own files");
            }
        }
        "set"
            if !matches!(
                p.args.first().map(String::as_str),
                Some("$ion_route" | "$ion_secret")
            ) =>
        {
            return fail("set may assign only ion's variables");
        }
        "proxy_pass" => {
            for a in &p.args {
                if !a.starts_with("http://u_") && a != "http://ion_dynamic" {
                    return fail("proxy_pass must target an ion upstream");
                }
            }
        }
        _ => {}
    }
    for a in &p.args {
        for prefix in ["engine:", "store:", "data:"] {
            if a.starts_with(prefix) {
                return fail("argument names an openssl engine, store or inline data");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nginx_quoting_and_comments() {
        let tree = parse("a \"x\\\"y\" 'z\\n' w\\;v; # c ;\n b { c; }").unwrap();
        assert_eq!(tree[0].name, "a");
        assert_eq!(tree[0].args, vec!["x\"y", "z\n", "w;v"]);
        assert_eq!(tree[1].block.as_ref().unwrap()[0].name, "c");
    }

    #[test]
    fn refuses_unbalanced_or_unterminated_text() {
        for bad in ["a", "a {", "}", "a \"x", "a \"x\"y;", "{ a; }"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_directive_off_the_allow_list_fails_the_check() {
        let model = vec![Directive::new("include", vec![])];
        assert!(self_check(&model, "include;\n").is_err());
    }
}
