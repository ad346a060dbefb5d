//! The ingest body parser: NDJSON lines into [`WalEntry`]s, naming every bad line.
//!
//! Pure and total: any byte sequence (invalid UTF-8, huge lines, deep nesting, NUL bytes) yields
//! good entries and line errors, never a panic. The tenant is a parameter, never read from the
//! payload: a line carrying a `tenant` key is refused, so a client that believes it can choose
//! its tenant learns at once that it cannot.

use std::collections::BTreeMap;

use ion_core::{AppId, FieldName, InstanceId, LogLevel, TenantId, Timestamp};
use serde::Deserialize;
use serde_json::Value;

use crate::codec::WalEntry;

/// Per-line limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineLimits {
    /// Longest line in bytes (without the newline).
    pub max_line_bytes: usize,
    /// Most entries in `fields`.
    pub max_fields: usize,
}

impl Default for LineLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: 64 * 1024,
            max_fields: 32,
        }
    }
}

/// A refused line: its 1-based number in the body and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// Why it was refused (never echoes the line's content).
    pub reason: String,
}

/// The outcome of parsing a body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedBody {
    /// Good lines, in order.
    pub entries: Vec<WalEntry>,
    /// Bad lines, in order.
    pub errors: Vec<LineError>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLine {
    #[serde(default)]
    time: Option<Value>,
    app: String,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    level: Option<String>,
    message: String,
    #[serde(default)]
    fields: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    tenant: Option<serde::de::IgnoredAny>,
}

/// Counts the non-blank lines of a body (what a refusal of the whole body refuses).
pub fn count_lines(body: &[u8]) -> usize {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count()
}

/// Parses an NDJSON body for `tenant`; lines without a time get `received`.
pub fn parse_body(
    body: &[u8],
    tenant: &TenantId,
    received: Timestamp,
    limits: LineLimits,
) -> ParsedBody {
    let mut out = ParsedBody::default();
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(line, tenant, received, limits) {
            Ok(entry) => out.entries.push(entry),
            Err(reason) => out.errors.push(LineError {
                line: i + 1,
                reason,
            }),
        }
    }
    out
}

fn parse_line(
    line: &[u8],
    tenant: &TenantId,
    received: Timestamp,
    limits: LineLimits,
) -> Result<WalEntry, String> {
    if line.len() > limits.max_line_bytes {
        return Err(format!(
            "line is {} bytes, over the {} byte limit",
            line.len(),
            limits.max_line_bytes
        ));
    }
    let wire: WireLine = serde_json::from_slice(line).map_err(|e| {
        // serde_json's messages name the problem and a column, never the content.
        format!("not a valid log line: {e}")
    })?;
    if wire.tenant.is_some() {
        return Err("the tenant comes from the bearer token; remove the tenant field".into());
    }
    let app = AppId::parse(&wire.app).map_err(|e| e.to_string())?;
    let instance = wire
        .instance
        .as_deref()
        .map(InstanceId::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    let level = match wire.level.as_deref() {
        None => LogLevel::Info,
        Some(l) => l
            .to_ascii_lowercase()
            .parse::<LogLevel>()
            .map_err(|e| e.to_string())?,
    };
    let time = match wire.time {
        None | Some(Value::Null) => received,
        Some(Value::String(s)) => Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| "time must be an RFC 3339 timestamp".to_owned())?,
        Some(Value::Number(n)) => Timestamp::from_millis(
            n.as_i64()
                .ok_or_else(|| "time must be integer milliseconds".to_owned())?,
        ),
        Some(_) => return Err("time must be an RFC 3339 string or integer milliseconds".into()),
    };
    // Keep times within what every search server stores as a date.
    if !(0..=253_402_300_799_999).contains(&time.as_millis()) {
        return Err("time must lie between 1970 and 9999".into());
    }
    let mut fields = BTreeMap::new();
    if let Some(map) = wire.fields {
        if map.len() > limits.max_fields {
            return Err(format!(
                "{} fields, over the limit of {}",
                map.len(),
                limits.max_fields
            ));
        }
        for (k, v) in map {
            let name = FieldName::parse(&k).map_err(|e| e.to_string())?;
            let value = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("field {name} must be a string, number or boolean")),
            };
            fields.insert(name, value);
        }
    }
    Ok(WalEntry {
        tenant: tenant.clone(),
        app,
        instance,
        time,
        level,
        message: wire.message,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[test]
    fn good_and_bad_lines_are_separated_and_numbered() {
        let body = b"{\"app\":\"web\",\"message\":\"ok\",\"level\":\"warn\",\"time\":\"2026-01-02T03:04:05Z\"}\n\
\n\
{\"app\":\"web\",\"message\":\"x\",\"tenant\":\"other\"}\n\
not json\r\n\
{\"app\":\"Web;\",\"message\":\"x\"}\n\
{\"app\":\"web\",\"message\":\"fields\",\"fields\":{\"code\":500,\"ok\":true,\"path\":\"/a\"}}";
        let p = parse_body(
            body,
            &tenant(),
            Timestamp::from_millis(5),
            LineLimits::default(),
        );
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.entries[0].level, LogLevel::Warn);
        assert_eq!(p.entries[0].tenant, tenant());
        assert_eq!(p.entries[1].fields.len(), 3);
        assert_eq!(p.entries[1].time, Timestamp::from_millis(5));
        let lines: Vec<usize> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5]);
        assert!(p.errors[0].reason.contains("tenant"));
    }

    #[test]
    fn limits_are_enforced() {
        let limits = LineLimits {
            max_line_bytes: 60,
            max_fields: 1,
        };
        let long = format!("{{\"app\":\"web\",\"message\":\"{}\"}}", "a".repeat(100));
        let many = r#"{"app":"web","message":"m","fields":{"a":"1","b":"2"}}"#;
        let p = parse_body(
            format!("{long}\n{many}").as_bytes(),
            &tenant(),
            Timestamp::EPOCH,
            limits,
        );
        assert!(p.entries.is_empty());
        assert!(p.errors[0].reason.contains("byte limit"));
        assert!(p.errors[1].reason.contains("fields"));
        assert_eq!(count_lines(b"a\n\n  \nb\n"), 2);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_every_line_is_accounted(body in prop::collection::vec(any::<u8>(), 0..4000)) {
            let p = parse_body(&body, &tenant(), Timestamp::EPOCH, LineLimits::default());
            prop_assert_eq!(p.entries.len() + p.errors.len(), count_lines(&body));
            for e in &p.errors {
                prop_assert!(e.reason.len() < 300);
            }
        }

        #[test]
        fn huge_lines_and_junk_never_panic(
            junk in prop::collection::vec(any::<u8>(), 0..64),
            repeat in 0usize..200_000,
        ) {
            let mut body = b"{\"app\":\"web\",\"message\":\"".to_vec();
            body.extend(std::iter::repeat_n(b'[', repeat));
            body.extend_from_slice(&junk);
            let p = parse_body(&body, &tenant(), Timestamp::EPOCH, LineLimits::default());
            prop_assert_eq!(p.entries.len() + p.errors.len(), count_lines(&body));
        }

        #[test]
        fn valid_lines_round_trip(message in ".*", app in "[a-z][a-z0-9]{0,10}") {
            let line = serde_json::json!({"app": app, "message": message}).to_string();
            let p = parse_body(line.as_bytes(), &tenant(), Timestamp::EPOCH, LineLimits::default());
            prop_assert_eq!(p.errors.len(), 0);
            prop_assert_eq!(&p.entries[0].message, &message);
        }
    }
}
