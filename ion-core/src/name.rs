//! Validated names: every identifier that may come from a tenant is parsed here, once.
//!
//! Parsing is an allow-list with an anchored full match: a value either consists entirely of
//! permitted characters in a permitted shape, or it does not parse. A value that could break a
//! file path, an index name, a URL, a database operator or an nginx configuration (`;`, `{`,
//! whitespace, control characters, quotes, `$`, `#`, `\`, `..`, `/`, upper case, non-ASCII,
//! over-long) is rejected with a [`ValidationError`] naming the field and the rule.

use std::fmt;

/// Why a value did not parse into a validated name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {rule}")]
pub struct ValidationError {
    /// The field being parsed, e.g. `"tenant id"`.
    pub field: &'static str,
    /// The rule the value broke.
    pub rule: Rule,
}

/// A rule of the allow-list that a value broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// The value is empty.
    Empty,
    /// The value is longer than `max` bytes.
    TooLong {
        /// The maximum length in bytes.
        max: usize,
    },
    /// A character outside the allow-list, at byte offset `at`.
    ForbiddenChar {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// The first character is not allowed in first position.
    BadStart,
    /// The last character is not allowed in last position.
    BadEnd,
    /// An empty, `.` or `..` segment (path traversal, doubled separators).
    BadSegment,
    /// A reserved value or prefix.
    Reserved,
    /// Any other shape rule, described in words.
    Shape(&'static str),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Empty => f.write_str("must not be empty"),
            Rule::TooLong { max } => write!(f, "must be at most {max} bytes"),
            Rule::ForbiddenChar { ch, at } => {
                write!(f, "character {ch:?} at offset {at} is not allowed")
            }
            Rule::BadStart => f.write_str("starts with a character that is not allowed first"),
            Rule::BadEnd => f.write_str("ends with a character that is not allowed last"),
            Rule::BadSegment => f.write_str("contains an empty, '.' or '..' segment"),
            Rule::Reserved => f.write_str("is reserved"),
            Rule::Shape(what) => f.write_str(what),
        }
    }
}

/// The allow-list of one kind of name.
struct Spec {
    field: &'static str,
    max: usize,
    body: fn(u8) -> bool,
    first: fn(u8) -> bool,
    last: fn(u8) -> bool,
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}
fn lower_alpha(b: u8) -> bool {
    b.is_ascii_lowercase()
}
fn slug(b: u8) -> bool {
    lower_alnum(b) || b == b'-'
}
fn snake(b: u8) -> bool {
    lower_alnum(b) || b == b'_'
}
fn dotted_slug(b: u8) -> bool {
    slug(b) || b == b'.' || b == b'_'
}
fn token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}
fn any_token(b: u8) -> bool {
    token(b)
}

impl Spec {
    fn check(&self, s: &str) -> Result<(), ValidationError> {
        let err = |rule| ValidationError {
            field: self.field,
            rule,
        };
        if s.is_empty() {
            return Err(err(Rule::Empty));
        }
        // Report a forbidden character before the length, so a huge hostile value names its
        // first bad byte rather than only its size.
        for (at, ch) in s.char_indices() {
            if !ch.is_ascii() || !(self.body)(ch as u8) {
                return Err(err(Rule::ForbiddenChar { ch, at }));
            }
        }
        if s.len() > self.max {
            return Err(err(Rule::TooLong { max: self.max }));
        }
        let bytes = s.as_bytes();
        if !(self.first)(bytes[0]) {
            return Err(err(Rule::BadStart));
        }
        if !(self.last)(bytes[bytes.len() - 1]) {
            return Err(err(Rule::BadEnd));
        }
        Ok(())
    }
}

/// Defines a validated string newtype with parsing, `Display`, serde and `AsRef<str>`.
macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses `s`, returning a typed error naming the field and the broken rule.
            pub fn parse(s: &str) -> Result<Self, ValidationError> {
                let check: fn(&str) -> Result<(), ValidationError> = $check;
                check(s)?;
                Ok(Self(s.to_owned()))
            }

            /// The validated value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                let check: fn(&str) -> Result<(), ValidationError> = $check;
                check(&s)?;
                Ok(Self(s))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValidationError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

const TENANT: Spec = Spec {
    field: "tenant id",
    max: 32,
    body: slug,
    first: lower_alpha,
    last: lower_alnum,
};
const APP: Spec = Spec {
    field: "app id",
    max: 40,
    body: slug,
    first: lower_alpha,
    last: lower_alnum,
};
const ZONE: Spec = Spec {
    field: "zone",
    max: 32,
    body: slug,
    first: lower_alnum,
    last: lower_alnum,
};
const INSTANCE: Spec = Spec {
    field: "instance id",
    max: 64,
    body: slug,
    first: lower_alnum,
    last: lower_alnum,
};
const ARTIFACT: Spec = Spec {
    field: "artifact id",
    max: 64,
    body: slug,
    first: lower_alnum,
    last: lower_alnum,
};
const IDEMPOTENCY: Spec = Spec {
    field: "idempotency key",
    max: 64,
    body: slug,
    first: lower_alnum,
    last: lower_alnum,
};
const DOCUMENT: Spec = Spec {
    field: "document id",
    max: 128,
    body: dotted_slug,
    first: lower_alnum,
    last: lower_alnum,
};
const COLLECTION: Spec = Spec {
    field: "collection name",
    max: 64,
    body: snake,
    first: lower_alpha,
    last: lower_alnum,
};
const FIELD: Spec = Spec {
    field: "field name",
    max: 64,
    body: snake,
    first: lower_alpha,
    last: snake,
};
const RECORD: Spec = Spec {
    field: "record id",
    max: 128,
    body: token,
    first: any_token,
    last: any_token,
};
const INDEX: Spec = Spec {
    field: "index name",
    max: 200,
    body: dotted_slug,
    first: lower_alnum,
    last: lower_alnum,
};
const LABEL: Spec = Spec {
    field: "hostname",
    max: 63,
    body: slug,
    first: lower_alnum,
    last: lower_alnum,
};

fn check_no_dot_dot(field: &'static str, s: &str) -> Result<(), ValidationError> {
    if s.contains("..") {
        return Err(ValidationError {
            field,
            rule: Rule::BadSegment,
        });
    }
    Ok(())
}

name_type!(
    /// A tenant: `[a-z][a-z0-9-]{0,31}`, not ending in `-`. Safe in paths, index names and URLs.
    TenantId,
    |s| TENANT.check(s)
);
name_type!(
    /// A tenant's application: `[a-z][a-z0-9-]{0,39}`, not ending in `-`.
    AppId,
    |s| APP.check(s)
);
name_type!(
    /// An availability zone, e.g. `us-east-1a`: `[a-z0-9][a-z0-9-]{0,31}`.
    Zone,
    |s| ZONE.check(s)
);
name_type!(
    /// An instance id issued by a compute backend, e.g. `i-0abc123`: `[a-z0-9][a-z0-9-]{0,63}`.
    InstanceId,
    |s| INSTANCE.check(s)
);
name_type!(
    /// An artifact id issued by an artifact store: `[a-z0-9][a-z0-9-]{0,63}`.
    ArtifactId,
    |s| ARTIFACT.check(s)
);
name_type!(
    /// The key that makes a launch idempotent: `[a-z0-9][a-z0-9-]{0,63}` (fits an EC2 ClientToken).
    IdempotencyKey,
    |s| IDEMPOTENCY.check(s)
);
name_type!(
    /// A document id: `[a-z0-9][a-z0-9._-]{0,127}` without `..`, not ending in `.`, `-` or `_`.
    DocumentId,
    |s| {
        DOCUMENT.check(s)?;
        check_no_dot_dot("document id", s)
    }
);
name_type!(
    /// A document collection: `[a-z][a-z0-9_]{0,63}`, not starting with `system`.
    CollectionName,
    |s| {
        COLLECTION.check(s)?;
        if s.starts_with("system") {
            return Err(ValidationError {
                field: "collection name",
                rule: Rule::Reserved,
            });
        }
        Ok(())
    }
);
name_type!(
    /// A field name in a log record or document filter: `[a-z][a-z0-9_]{0,63}`. No `.`, no `$`,
    /// no leading `_` (reserved for metadata in Elasticsearch and MongoDB).
    FieldName,
    |s| FIELD.check(s)
);
name_type!(
    /// A log record id, used as the search index's document id: `[A-Za-z0-9_-]{1,128}`.
    RecordId,
    |s| RECORD.check(s)
);
name_type!(
    /// A search index name: `[a-z0-9][a-z0-9._-]{0,199}` without `..`.
    IndexName,
    |s| {
        INDEX.check(s)?;
        check_no_dot_dot("index name", s)
    }
);
name_type!(
    /// A DNS hostname a route answers for: lowercase LDH labels of 1–63 bytes joined by `.`, at
    /// most 253 bytes, at least two labels, no trailing dot, no wildcard, no IP literal, no
    /// `xn--` (IDN) label: internationalised names are refused rather than risk homographs.
    Hostname,
    check_hostname
);

fn check_hostname(s: &str) -> Result<(), ValidationError> {
    let err = |rule| ValidationError {
        field: "hostname",
        rule,
    };
    if s.is_empty() {
        return Err(err(Rule::Empty));
    }
    for (at, ch) in s.char_indices() {
        if !ch.is_ascii() || !(slug(ch as u8) || ch == '.') {
            return Err(err(Rule::ForbiddenChar { ch, at }));
        }
    }
    if s.len() > 253 {
        return Err(err(Rule::TooLong { max: 253 }));
    }
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return Err(err(Rule::Shape("needs at least two labels")));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(err(Rule::BadSegment));
        }
        LABEL.check(label)?;
        if label.starts_with("xn--") {
            return Err(err(Rule::Reserved));
        }
    }
    if labels[labels.len() - 1].bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(Rule::Shape("the last label must not be numeric")));
    }
    Ok(())
}

/// Checks a `/`-separated path of segments made of `seg` characters.
fn check_segments(
    field: &'static str,
    s: &str,
    max: usize,
    seg: fn(u8) -> bool,
) -> Result<(), ValidationError> {
    let err = |rule| ValidationError { field, rule };
    for (at, ch) in s.char_indices() {
        if !ch.is_ascii() || !(seg(ch as u8) || ch == '/') {
            return Err(err(Rule::ForbiddenChar { ch, at }));
        }
    }
    if s.len() > max {
        return Err(err(Rule::TooLong { max }));
    }
    for part in s.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(err(Rule::BadSegment));
        }
    }
    Ok(())
}

fn blob_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b'='
}

name_type!(
    /// A blob key: `/`-separated segments of `[A-Za-z0-9._=-]`, no empty, `.` or `..` segment, no
    /// leading or trailing `/`, at most 1024 bytes. Safe as an S3 key and as a relative file path.
    BlobKey,
    |s| {
        if s.is_empty() {
            return Err(ValidationError {
                field: "blob key",
                rule: Rule::Empty,
            });
        }
        check_segments("blob key", s, 1024, blob_char)
    }
);

name_type!(
    /// A blob key prefix for listing: empty (everything), or a [`BlobKey`]-shaped value that may
    /// end with `/`.
    BlobPrefix,
    |s| {
        if s.is_empty() {
            return Ok(());
        }
        check_segments("blob prefix", s.strip_suffix('/').unwrap_or(s), 1024, blob_char)
    }
);

impl BlobPrefix {
    /// The prefix that matches every key.
    pub fn all() -> Self {
        Self(String::new())
    }

    /// True when `key` starts with this prefix.
    pub fn matches(&self, key: &BlobKey) -> bool {
        key.as_str().starts_with(&self.0)
    }
}

impl BlobKey {
    /// This key with `suffix` (a relative key) appended after a `/`.
    pub fn join(&self, suffix: &str) -> Result<Self, ValidationError> {
        Self::parse(&format!("{}/{}", self.0, suffix))
    }
}

fn path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

name_type!(
    /// An absolute HTTP path such as a readiness probe path: `/` or `/`-separated segments of
    /// `[A-Za-z0-9._~-]`, no empty, `.` or `..` segment, at most 256 bytes.
    HttpPath,
    |s| {
        let err = |rule| ValidationError {
            field: "http path",
            rule,
        };
        let Some(rest) = s.strip_prefix('/') else {
            return Err(err(if s.is_empty() {
                Rule::Empty
            } else {
                Rule::BadStart
            }));
        };
        if rest.is_empty() {
            return Ok(());
        }
        check_segments("http path", rest, 255, path_char)
    }
);

/// A document field path for filters: [`FieldName`] segments joined by `.`, at most 5.
#[derive(
    Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct FieldPath(Vec<FieldName>);

impl FieldPath {
    /// Parses `a.b.c`.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let parts = s
            .split('.')
            .map(|p| {
                FieldName::parse(p).map_err(|e| ValidationError {
                    field: "field path",
                    rule: e.rule,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if parts.len() > 5 {
            return Err(ValidationError {
                field: "field path",
                rule: Rule::Shape("at most 5 segments"),
            });
        }
        Ok(Self(parts))
    }

    /// The segments.
    pub fn segments(&self) -> &[FieldName] {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(p.as_str())?;
        }
        Ok(())
    }
}

impl TryFrom<String> for FieldPath {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<FieldPath> for String {
    fn from(p: FieldPath) -> String {
        p.to_string()
    }
}

impl std::str::FromStr for FieldPath {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
