//! The nginx directive tree and the one writer that turns it into configuration text.
//!
//! Every argument is double-quoted with `\` and `"` escaped. Arguments come in two types so that
//! the compiler keeps tenant-derived text and ion's own constants apart: [`Arg::Const`] is a
//! `&'static str` written by ion (the only place `$` variables may appear), and [`Arg::Value`]
//! wraps a [`Value`], which refuses control characters, `$` and non-ASCII at construction.

use std::fmt;

/// Why a value cannot be an nginx argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeValue {
    /// What was wrong, in words.
    pub reason: &'static str,
}

impl fmt::Display for UnsafeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "value not allowed in nginx configuration: {}",
            self.reason
        )
    }
}

impl std::error::Error for UnsafeValue {}

/// A runtime value safe to place in a quoted nginx argument: printable ASCII without `$`.
///
/// Printable ASCII keeps out control characters (which end comments and directives) and
/// lookalike unicode; without `$` nginx cannot expand a variable inside it. Quotes, `;`, `{`,
/// `}` and `#` are harmless inside a double-quoted argument, and the writer escapes `"` and `\`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Value(String);

impl Value {
    /// Accepts `s` if it is non-empty printable ASCII without `$`.
    pub fn new(s: impl Into<String>) -> Result<Self, UnsafeValue> {
        let s = s.into();
        if s.is_empty() {
            return Err(UnsafeValue {
                reason: "empty value",
            });
        }
        if let Some(b) = s.bytes().find(|b| !(0x20..0x7f).contains(b)) {
            return Err(UnsafeValue {
                reason: if b.is_ascii_control() {
                    "control character"
                } else {
                    "non-ascii character"
                },
            });
        }
        if s.contains('$') {
            return Err(UnsafeValue {
                reason: "'$' would expand an nginx variable",
            });
        }
        Ok(Self(s))
    }

    /// A number (always safe).
    pub fn number(n: u64) -> Self {
        Self(n.to_string())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One argument of a directive.
#[derive(Clone, PartialEq, Eq)]
pub enum Arg {
    /// Text written by ion in its source code; may name nginx variables.
    Const(&'static str),
    /// A checked runtime value; never contains `$`.
    Value(Value),
}

impl Arg {
    /// The unescaped text of the argument.
    pub fn text(&self) -> &str {
        match self {
            Arg::Const(s) => s,
            Arg::Value(v) => v.as_str(),
        }
    }
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

impl From<Value> for Arg {
    fn from(v: Value) -> Self {
        Arg::Value(v)
    }
}

/// One directive: a name from ion's allow-list, arguments, and an optional block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    /// The directive name (always an ion constant).
    pub name: &'static str,
    /// The arguments.
    pub args: Vec<Arg>,
    /// The block, for `http`, `server`, `location`, `upstream`, `events`.
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// A simple directive with arguments.
    pub fn new(name: &'static str, args: Vec<Arg>) -> Self {
        Self {
            name,
            args,
            block: None,
        }
    }

    /// A block directive.
    pub fn block(name: &'static str, args: Vec<Arg>, children: Vec<Directive>) -> Self {
        Self {
            name,
            args,
            block: Some(children),
        }
    }
}

/// Builds an argument list from constants.
pub(crate) fn consts(args: &[&'static str]) -> Vec<Arg> {
    args.iter().map(|a| Arg::Const(a)).collect()
}

/// Why the writer refused the tree (only possible through a bug in ion's own constants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteError(pub String);

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WriteError {}

/// Writes `directives` as nginx configuration text.
pub fn write(directives: &[Directive]) -> Result<String, WriteError> {
    let mut out = String::new();
    write_level(&mut out, directives, 0)?;
    Ok(out)
}

fn write_level(out: &mut String, directives: &[Directive], depth: usize) -> Result<(), WriteError> {
    for d in directives {
        if d.name.is_empty()
            || !d
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(WriteError(format!("bad directive name {:?}", d.name)));
        }
        out.extend(std::iter::repeat_n("    ", depth));
        out.push_str(d.name);
        for arg in &d.args {
            let text = arg.text();
            if text.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
                return Err(WriteError(format!(
                    "argument of {} has a control or non-ascii character",
                    d.name
                )));
            }
            if let Arg::Value(_) = arg {
                // Value::new already refused '$'; re-checked so a future constructor cannot
                // smuggle one past the writer.
                if text.contains('$') {
                    return Err(WriteError(format!("value argument of {} has '$'", d.name)));
                }
            }
            out.push_str(" \"");
            for ch in text.chars() {
                if ch == '"' || ch == '\\' {
                    out.push('\\');
                }
                out.push(ch);
            }
            out.push('"');
        }
        match &d.block {
            None => out.push_str(";\n"),
            Some(children) => {
                out.push_str(" {\n");
                write_level(out, children, depth + 1)?;
                out.extend(std::iter::repeat_n("    ", depth));
                out.push_str("}\n");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_refuse_control_characters_dollar_and_unicode() {
        for bad in [
            "",
            "a\nb",
            "a\rb",
            "a\0",
            "a\tb",
            "$host",
            "${x}",
            "a；b",
            "a\u{200b}",
        ] {
            assert!(Value::new(bad).is_err(), "{bad:?} accepted");
        }
        for ok in ["a;b", "a}b", "x\" ; return 200 \"p", "a\\", "#c", "a b"] {
            assert!(Value::new(ok).is_ok(), "{ok:?} refused");
        }
    }

    #[test]
    fn writer_quotes_and_escapes_every_argument() {
        let d = vec![Directive::block(
            "server",
            vec![],
            vec![Directive::new(
                "server_name",
                vec![Value::new("a\"b\\c;}").unwrap().into(), Arg::Const("$host")],
            )],
        )];
        assert_eq!(
            write(&d).unwrap(),
            "server {\n    server_name \"a\\\"b\\\\c;}\" \"$host\";\n}\n"
        );
    }
}
