//! The `LogIndex` trait: tenant log records in a search index, and how indices are named.

use std::fmt::{self, Debug};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{LogLevel, LogRecord};
use crate::name::{AppId, IndexName, InstanceId, RecordId, TenantId};
use crate::time::Timestamp;

/// Index settings applied through templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSettings {
    /// Primary shards per index (the seed ran 5).
    pub shards: u32,
    /// Replicas per shard (the seed ran 1).
    pub replicas: u32,
    /// How soon written records become searchable.
    pub refresh_interval: Duration,
}

impl Default for IndexSettings {
    fn default() -> Self {
        Self {
            shards: 5,
            replicas: 1,
            refresh_interval: Duration::from_secs(1),
        }
    }
}

/// How log records map to indices: shared, daily indices named `<prefix>-YYYY.MM.DD`.
///
/// Tenants share time-based indices and are isolated by a `tenant` keyword field that every
/// search filters on (and by routing on the tenant), so the shard count grows with days kept,
/// not with the number of tenants. Pure: no I/O.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexLayout {
    prefix: String,
}

impl IndexLayout {
    /// A layout with `prefix` (`[a-z][a-z0-9-]{0,40}`).
    pub fn new(prefix: &str) -> Result<Self> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 40
            && prefix.as_bytes()[0].is_ascii_lowercase()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(Error::invalid_config(
                "index prefix must match [a-z][a-z0-9-]{0,40}",
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The index a record logged at `time` belongs to.
    pub fn index_for(&self, time: Timestamp) -> IndexName {
        let (y, m, d) = time.date();
        IndexName::parse(&format!("{}-{y:04}.{m:02}.{d:02}", self.prefix))
            .expect("layout prefixes and dates always form valid index names")
    }

    /// The wildcard pattern matching every index of this layout.
    pub fn pattern(&self) -> String {
        format!("{}-*", self.prefix)
    }

    /// The UTC day (`(year, month, day)`) an index of this layout holds, or `None` when the name
    /// is not one of this layout's.
    pub fn day_of(&self, index: &IndexName) -> Option<(i64, u32, u32)> {
        let rest = index
            .as_str()
            .strip_prefix(&self.prefix)?
            .strip_prefix('-')?;
        let mut parts = rest.split('.');
        let y = parts.next()?.parse().ok()?;
        let m = parts.next()?.parse().ok()?;
        let d = parts.next()?.parse().ok()?;
        if parts.next().is_some() || rest.len() != 10 {
            return None;
        }
        Some((y, m, d))
    }
}

impl Default for IndexLayout {
    fn default() -> Self {
        Self {
            prefix: "ion-logs".to_owned(),
        }
    }
}

/// The outcome of one record in a bulk write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BulkOutcome {
    /// Newly indexed.
    Created,
    /// A record with this id was already indexed: delivered, not duplicated.
    AlreadyExists,
    /// Failed for now (429, 5xx, unavailable shard); retry this item.
    Retryable {
        /// HTTP-style status.
        status: u16,
        /// The server's reason.
        reason: String,
    },
    /// Refused for good (mapping error, forbidden index); do not retry unchanged.
    Rejected {
        /// HTTP-style status (400 mapping, 401/403 auth, ...).
        status: u16,
        /// The server's reason.
        reason: String,
    },
}

impl BulkOutcome {
    /// Created or already there.
    pub fn is_delivered(&self) -> bool {
        matches!(self, BulkOutcome::Created | BulkOutcome::AlreadyExists)
    }
}

/// Where a search page ends: the sort key of its last record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchCursor {
    /// Time of the last record.
    pub time: Timestamp,
    /// Id of the last record (tie-break).
    pub id: RecordId,
}

impl fmt::Display for SearchCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.time.as_millis(), self.id)
    }
}

impl std::str::FromStr for SearchCursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid_input("malformed search cursor");
        let (t, id) = s.split_once('_').ok_or_else(bad)?;
        Ok(Self {
            time: Timestamp::from_millis(t.parse().map_err(|_| bad())?),
            id: RecordId::parse(id)?,
        })
    }
}

/// A tenant-scoped log search. Results are newest first (time, then id, descending).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Words that must all occur in the message (case-insensitive, split on non-alphanumerics).
    /// Plain text: never interpreted as query syntax.
    pub text: Option<String>,
    /// Only records at or after this time.
    pub from: Option<Timestamp>,
    /// Only records before this time.
    pub to: Option<Timestamp>,
    /// Only these levels (empty: all).
    pub levels: Vec<LogLevel>,
    /// Only this app.
    pub app: Option<AppId>,
    /// Only this instance.
    pub instance: Option<InstanceId>,
    /// Continue after this cursor.
    pub after: Option<SearchCursor>,
    /// Page size (1..=1000; 0 means 100).
    pub limit: usize,
}

impl LogQuery {
    /// The effective page size.
    pub fn page_size(&self) -> usize {
        if self.limit == 0 {
            100
        } else {
            self.limit.min(1000)
        }
    }

    /// The query's words, as matched against message words.
    pub fn words(&self) -> Vec<String> {
        self.text.as_deref().map(tokenize).unwrap_or_default()
    }

    /// True when `record` (already known to be the tenant's) passes every filter except paging.
    pub fn matches(&self, record: &LogRecord) -> bool {
        if self.from.is_some_and(|f| record.time < f) || self.to.is_some_and(|t| record.time >= t) {
            return false;
        }
        if !self.levels.is_empty() && !self.levels.contains(&record.level) {
            return false;
        }
        if self.app.as_ref().is_some_and(|a| *a != record.app) {
            return false;
        }
        if self.instance.is_some() && self.instance != record.instance {
            return false;
        }
        let words = self.words();
        if words.is_empty() {
            return true;
        }
        let have = tokenize(&record.message);
        words.iter().all(|w| have.contains(w))
    }
}

/// Splits text into lowercase words at every non-alphanumeric character (close to the
/// Elasticsearch standard analyzer for plain words).
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// One page of search results.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogPage {
    /// Records, newest first.
    pub records: Vec<LogRecord>,
    /// Pass as `after` for the next page; `None` when this page is the last.
    pub next: Option<SearchCursor>,
}

/// An index and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexInfo {
    /// Name.
    pub name: IndexName,
    /// Documents in it.
    pub docs: u64,
}

/// Which search server a log index talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchFlavour {
    /// The in-memory fake.
    InMemory,
    /// Elasticsearch of this major version.
    Elasticsearch(u32),
    /// OpenSearch of this major version.
    OpenSearch(u32),
}

/// What a log index can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogIndexCapabilities {
    /// The server behind it.
    pub flavour: SearchFlavour,
}

/// Stores and searches tenants' log records (Elasticsearch or OpenSearch in production).
///
/// # Contract
///
/// - `ensure_templates` installs the index settings and mappings for the layout; idempotent.
/// - `bulk` writes records into the layout's index for each record's time and returns one
///   outcome per record, in order. A record whose id is already indexed is `AlreadyExists` and is
///   not duplicated. An `Err` means the whole request failed and nothing can be assumed.
/// - After `refresh`, every delivered record is searchable.
/// - `search` returns only the given tenant's records, whatever the query contains; text matches
///   whole words case-insensitively; results are newest first with stable cursor paging that
///   visits each match exactly once.
/// - `list_indices` lists the layout's indices; `delete_index` is idempotent.
#[async_trait]
pub trait LogIndex: Send + Sync + Debug + 'static {
    /// What this index can do.
    fn capabilities(&self) -> LogIndexCapabilities;

    /// The naming of the indices this log index writes.
    fn layout(&self) -> &IndexLayout;

    /// Installs templates (settings and mappings); idempotent.
    async fn ensure_templates(&self, settings: &IndexSettings) -> Result<()>;

    /// Writes records; one outcome per record, in order.
    async fn bulk(&self, records: &[LogRecord]) -> Result<Vec<BulkOutcome>>;

    /// Makes every delivered record searchable now.
    async fn refresh(&self) -> Result<()>;

    /// Searches one tenant's records.
    async fn search(&self, tenant: &TenantId, query: &LogQuery) -> Result<LogPage>;

    /// Lists the layout's indices.
    async fn list_indices(&self) -> Result<Vec<IndexInfo>>;

    /// Deletes an index; idempotent.
    async fn delete_index(&self, name: &IndexName) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_daily_indices_and_reads_them_back() {
        let layout = IndexLayout::default();
        let t = Timestamp::parse_rfc3339("2026-11-26T23:59:59Z").unwrap();
        let name = layout.index_for(t);
        assert_eq!(name.as_str(), "ion-logs-2026.11.26");
        assert_eq!(layout.day_of(&name), Some((2026, 11, 26)));
        assert_eq!(
            layout.day_of(&IndexName::parse("other-2026.11.26").unwrap()),
            None
        );
        assert!(IndexLayout::new("Bad").is_err());
        assert!(IndexLayout::new("a/b").is_err());
    }

    #[test]
    fn cursor_round_trips() {
        let c = SearchCursor {
            time: Timestamp::from_millis(42),
            id: RecordId::parse("ab_c-1").unwrap(),
        };
        assert_eq!(c.to_string().parse::<SearchCursor>().unwrap(), c);
        assert!("x".parse::<SearchCursor>().is_err());
    }

    #[test]
    fn tokenize_splits_on_punctuation() {
        assert_eq!(
            tokenize("GET /api/v1 failed: Timeout"),
            ["get", "api", "v1", "failed", "timeout"]
        );
    }
}
