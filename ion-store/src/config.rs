//! `MongoConfig`: where the MongoDB deployment is and how carefully to talk to it.

use std::fmt;
use std::time::Duration;

use ion_core::{Error, Result};
use mongodb::options::{
    Acknowledgment, ClientOptions, ReadConcern, ReadPreference, SelectionCriteria,
};
use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;

/// How many members must acknowledge a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteAcknowledgment {
    /// A majority of the replica set's voting members (the default): an acknowledged write
    /// survives the loss of a minority, including the primary.
    Majority,
    /// This many members (1 = the primary alone; a failover may roll the write back).
    Nodes(u32),
}

/// Which read concern reads use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadConcernLevel {
    /// The node's latest data, which a failover may roll back.
    Local,
    /// Only data acknowledged by a majority (the default): never rolled back.
    Majority,
    /// Majority data that also reflects every write acknowledged before the read began.
    Linearizable,
    /// Like `local`, for sharded clusters without the orphan check.
    Available,
}

/// Which members reads go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPreferenceMode {
    /// The primary only (the default): reads see every acknowledged write.
    Primary,
    /// The primary, or a secondary while there is none.
    PrimaryPreferred,
    /// Secondaries only.
    Secondary,
    /// A secondary, or the primary while there is none.
    SecondaryPreferred,
    /// The member with the lowest latency.
    Nearest,
}

/// Configuration of the MongoDB connection shared by the document and artifact stores.
///
/// Fields left `None` keep the value the connection string sets and otherwise ion's default
/// (shown per field). `Debug` never prints the password in the connection string.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct MongoConfig {
    /// Connection string, e.g. `mongodb://u:p@h1,h2,h3/?replicaSet=rs0` (`ION_MONGO_URL`).
    pub url: String,
    /// Database holding the collections and the GridFS bucket (`ION_MONGO_DATABASE`, default
    /// `ion`).
    pub database: String,
    /// Write acknowledgment (`ION_MONGO_WRITE_CONCERN`: `majority` or a number; default
    /// `majority`).
    pub write_concern: Option<WriteAcknowledgment>,
    /// Whether writes wait for the on-disk journal (`ION_MONGO_JOURNAL`, default `true`).
    pub journal: Option<bool>,
    /// How long a write waits for its acknowledgment before failing (`ION_MONGO_WRITE_TIMEOUT_MS`,
    /// default 10 000).
    pub write_timeout_ms: Option<u64>,
    /// Read concern (`ION_MONGO_READ_CONCERN`, default `majority`).
    pub read_concern: Option<ReadConcernLevel>,
    /// Read preference (`ION_MONGO_READ_PREFERENCE`, default `primary`).
    pub read_preference: Option<ReadPreferenceMode>,
    /// TCP connect timeout (`ION_MONGO_CONNECT_TIMEOUT_MS`, default 10 000).
    pub connect_timeout_ms: Option<u64>,
    /// How long an operation waits for a suitable server, e.g. during an election
    /// (`ION_MONGO_SERVER_SELECTION_TIMEOUT_MS`, default 30 000).
    pub server_selection_timeout_ms: Option<u64>,
    /// Upper bound on one attempt of one operation, server selection included
    /// (`ION_MONGO_OPERATION_TIMEOUT_MS`, default 60 000).
    pub operation_timeout_ms: Option<u64>,
    /// Name reported to the server in its logs (`ION_MONGO_APP_NAME`, default `ion`).
    pub app_name: Option<String>,
    /// Attempts per operation on transient errors, at least 1 (`ION_MONGO_RETRY_ATTEMPTS`,
    /// default 4).
    pub retry_attempts: Option<u32>,
    /// First back-off between attempts, doubled each time (`ION_MONGO_RETRY_BACKOFF_MS`,
    /// default 200).
    pub retry_backoff_ms: Option<u64>,
}

/// The defaults named in [`MongoConfig`]'s field docs.
const DEFAULT_DATABASE: &str = "ion";
const DEFAULT_WRITE_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_SERVER_SELECTION_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_OPERATION_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_RETRY_ATTEMPTS: u32 = 4;
const DEFAULT_RETRY_BACKOFF_MS: u64 = 200;

impl MongoConfig {
    /// A builder; only the URL is required.
    pub fn builder() -> MongoConfigBuilder {
        MongoConfigBuilder::default()
    }

    /// Reads `ION_MONGO_*` variables (see the field docs) and validates them.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`MongoConfig::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let mut b = Self::builder();
        if let Some(v) = get("ION_MONGO_URL") {
            b = b.url(v);
        }
        if let Some(v) = get("ION_MONGO_DATABASE") {
            b = b.database(v);
        }
        if let Some(v) = get("ION_MONGO_WRITE_CONCERN") {
            b = b.write_concern(match v.trim() {
                "majority" => WriteAcknowledgment::Majority,
                n => WriteAcknowledgment::Nodes(parse_num("ION_MONGO_WRITE_CONCERN", n)?),
            });
        }
        if let Some(v) = get("ION_MONGO_JOURNAL") {
            b = b.journal(match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(bad_key("ION_MONGO_JOURNAL", "must be true or false")),
            });
        }
        if let Some(v) = get("ION_MONGO_READ_CONCERN") {
            b = b.read_concern(parse_enum("ION_MONGO_READ_CONCERN", &v)?);
        }
        if let Some(v) = get("ION_MONGO_READ_PREFERENCE") {
            b = b.read_preference(parse_enum("ION_MONGO_READ_PREFERENCE", &v)?);
        }
        let ms = |key: &str| -> Result<Option<u64>> {
            get(key).map(|v| parse_num(key, v.trim())).transpose()
        };
        b.config.write_timeout_ms = ms("ION_MONGO_WRITE_TIMEOUT_MS")?;
        b.config.connect_timeout_ms = ms("ION_MONGO_CONNECT_TIMEOUT_MS")?;
        b.config.server_selection_timeout_ms = ms("ION_MONGO_SERVER_SELECTION_TIMEOUT_MS")?;
        b.config.operation_timeout_ms = ms("ION_MONGO_OPERATION_TIMEOUT_MS")?;
        b.config.retry_backoff_ms = ms("ION_MONGO_RETRY_BACKOFF_MS")?;
        if let Some(v) = get("ION_MONGO_RETRY_ATTEMPTS") {
            b = b.retry_attempts(parse_num("ION_MONGO_RETRY_ATTEMPTS", v.trim())?);
        }
        if let Some(v) = get("ION_MONGO_APP_NAME") {
            b = b.app_name(v);
        }
        b.build()
    }

    /// Checks every field, naming the offending key.
    pub fn validate(&self) -> Result<()> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err(bad_key("url (ION_MONGO_URL)", "must be set"));
        }
        if !(url.starts_with("mongodb://") || url.starts_with("mongodb+srv://")) {
            return Err(bad_key(
                "url (ION_MONGO_URL)",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        // MongoDB forbids these in database names; '.' would also make `db.collection` ambiguous.
        let db = &self.database;
        if db.is_empty()
            || db.len() > 63
            || db
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(bad_key(
                "database (ION_MONGO_DATABASE)",
                "must be 1 to 63 characters of [A-Za-z0-9_-]",
            ));
        }
        if self.write_concern == Some(WriteAcknowledgment::Nodes(0)) {
            return Err(bad_key(
                "write_concern (ION_MONGO_WRITE_CONCERN)",
                "must not be 0: unacknowledged writes cannot be verified or retried",
            ));
        }
        if self.retry_attempts == Some(0) {
            return Err(bad_key(
                "retry_attempts (ION_MONGO_RETRY_ATTEMPTS)",
                "must be at least 1",
            ));
        }
        for (key, v) in [
            (
                "write_timeout_ms (ION_MONGO_WRITE_TIMEOUT_MS)",
                self.write_timeout_ms,
            ),
            (
                "connect_timeout_ms (ION_MONGO_CONNECT_TIMEOUT_MS)",
                self.connect_timeout_ms,
            ),
            (
                "server_selection_timeout_ms (ION_MONGO_SERVER_SELECTION_TIMEOUT_MS)",
                self.server_selection_timeout_ms,
            ),
            (
                "operation_timeout_ms (ION_MONGO_OPERATION_TIMEOUT_MS)",
                self.operation_timeout_ms,
            ),
        ] {
            if v == Some(0) {
                return Err(bad_key(key, "must be greater than 0"));
            }
        }
        if let Some(name) = &self.app_name {
            if name.is_empty() || name.len() > 128 {
                return Err(bad_key(
                    "app_name (ION_MONGO_APP_NAME)",
                    "must be 1 to 128 bytes",
                ));
            }
        }
        Ok(())
    }

    /// The retry policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.retry_attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS).max(1),
            initial_backoff: Duration::from_millis(
                self.retry_backoff_ms.unwrap_or(DEFAULT_RETRY_BACKOFF_MS),
            ),
            max_backoff: Duration::from_secs(5),
            attempt_timeout: self.operation_timeout(),
        }
    }

    /// Upper bound on one attempt of one operation.
    pub fn operation_timeout(&self) -> Duration {
        Duration::from_millis(
            self.operation_timeout_ms
                .unwrap_or(DEFAULT_OPERATION_TIMEOUT_MS),
        )
    }

    /// Applies these settings over options parsed from the connection string: set fields win,
    /// unset fields keep the string's value, then ion's defaults.
    pub(crate) fn apply(&self, options: &mut ClientOptions) {
        if self.write_concern.is_some()
            || self.journal.is_some()
            || self.write_timeout_ms.is_some()
            || options.write_concern.is_none()
        {
            let mut wc = options.write_concern.clone().unwrap_or_default();
            match self.write_concern {
                Some(WriteAcknowledgment::Majority) => wc.w = Some(Acknowledgment::Majority),
                Some(WriteAcknowledgment::Nodes(n)) => wc.w = Some(Acknowledgment::Nodes(n)),
                None => {
                    wc.w.get_or_insert(Acknowledgment::Majority);
                }
            }
            match self.journal {
                Some(j) => wc.journal = Some(j),
                None => {
                    wc.journal.get_or_insert(true);
                }
            }
            match self.write_timeout_ms {
                Some(ms) => wc.w_timeout = Some(Duration::from_millis(ms)),
                None => {
                    wc.w_timeout
                        .get_or_insert(Duration::from_millis(DEFAULT_WRITE_TIMEOUT_MS));
                }
            }
            options.write_concern = Some(wc);
        }
        match self.read_concern {
            Some(level) => options.read_concern = Some(read_concern(level)),
            None => {
                options
                    .read_concern
                    .get_or_insert_with(ReadConcern::majority);
            }
        }
        match self.read_preference {
            Some(mode) => {
                options.selection_criteria =
                    Some(SelectionCriteria::ReadPreference(read_preference(mode)))
            }
            None => {
                options
                    .selection_criteria
                    .get_or_insert(SelectionCriteria::ReadPreference(ReadPreference::Primary));
            }
        }
        let set_ms = |slot: &mut Option<Duration>, v: Option<u64>, default: u64| match v {
            Some(ms) => *slot = Some(Duration::from_millis(ms)),
            None => {
                slot.get_or_insert(Duration::from_millis(default));
            }
        };
        set_ms(
            &mut options.connect_timeout,
            self.connect_timeout_ms,
            DEFAULT_CONNECT_TIMEOUT_MS,
        );
        set_ms(
            &mut options.server_selection_timeout,
            self.server_selection_timeout_ms,
            DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
        );
        match &self.app_name {
            Some(name) => options.app_name = Some(name.clone()),
            None => {
                options.app_name.get_or_insert_with(|| "ion".to_owned());
            }
        }
    }
}

fn read_concern(level: ReadConcernLevel) -> ReadConcern {
    match level {
        ReadConcernLevel::Local => ReadConcern::local(),
        ReadConcernLevel::Majority => ReadConcern::majority(),
        ReadConcernLevel::Linearizable => ReadConcern::linearizable(),
        ReadConcernLevel::Available => ReadConcern::available(),
    }
}

fn read_preference(mode: ReadPreferenceMode) -> ReadPreference {
    match mode {
        ReadPreferenceMode::Primary => ReadPreference::Primary,
        ReadPreferenceMode::PrimaryPreferred => ReadPreference::PrimaryPreferred { options: None },
        ReadPreferenceMode::Secondary => ReadPreference::Secondary { options: None },
        ReadPreferenceMode::SecondaryPreferred => {
            ReadPreference::SecondaryPreferred { options: None }
        }
        ReadPreferenceMode::Nearest => ReadPreference::Nearest { options: None },
    }
}

fn bad_key(key: &str, why: &str) -> Error {
    Error::invalid_config(format!("mongo config {key}: {why}"))
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| bad_key(key, "must be a non-negative integer"))
}

fn parse_enum<T: serde::de::DeserializeOwned>(key: &str, v: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(v.trim().to_owned()))
        .map_err(|_| bad_key(key, "is not one of the documented values"))
}

/// `url` with the password and secret-bearing query values replaced by `<redacted>`.
pub(crate) fn redact_url(url: &str) -> String {
    const SECRET_PARAMS: [&str; 2] = ["authmechanismproperties", "tlscertificatekeyfilepassword"];
    let Some(scheme_end) = url.find("://") else {
        return "<redacted>".to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let user = &authority[..at];
            let user = user.split(':').next().unwrap_or("");
            format!("{user}:<redacted>{}", &authority[at..])
        }
        None => authority.to_owned(),
    };
    let tail = match tail.find('?') {
        Some(q) => {
            let (path, query) = tail.split_at(q + 1);
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                        format!("{k}=<redacted>")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("url", &redact_url(&self.url))
            .field("database", &self.database)
            .field("write_concern", &self.write_concern)
            .field("journal", &self.journal)
            .field("write_timeout_ms", &self.write_timeout_ms)
            .field("read_concern", &self.read_concern)
            .field("read_preference", &self.read_preference)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field(
                "server_selection_timeout_ms",
                &self.server_selection_timeout_ms,
            )
            .field("operation_timeout_ms", &self.operation_timeout_ms)
            .field("app_name", &self.app_name)
            .field("retry_attempts", &self.retry_attempts)
            .field("retry_backoff_ms", &self.retry_backoff_ms)
            .finish()
    }
}

/// Builds a [`MongoConfig`]; [`MongoConfigBuilder::build`] validates it.
#[derive(Debug)]
pub struct MongoConfigBuilder {
    config: MongoConfig,
}

impl Default for MongoConfigBuilder {
    fn default() -> Self {
        Self {
            config: MongoConfig {
                url: String::new(),
                database: DEFAULT_DATABASE.to_owned(),
                write_concern: None,
                journal: None,
                write_timeout_ms: None,
                read_concern: None,
                read_preference: None,
                connect_timeout_ms: None,
                server_selection_timeout_ms: None,
                operation_timeout_ms: None,
                app_name: None,
                retry_attempts: None,
                retry_backoff_ms: None,
            },
        }
    }
}

impl MongoConfigBuilder {
    /// Sets the connection string.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = url.into();
        self
    }
    /// Sets the database.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.config.database = database.into();
        self
    }
    /// Sets the write acknowledgment.
    pub fn write_concern(mut self, w: WriteAcknowledgment) -> Self {
        self.config.write_concern = Some(w);
        self
    }
    /// Sets whether writes wait for the journal.
    pub fn journal(mut self, journal: bool) -> Self {
        self.config.journal = Some(journal);
        self
    }
    /// Sets the write concern timeout.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout_ms = Some(timeout.as_millis() as u64);
        self
    }
    /// Sets the read concern.
    pub fn read_concern(mut self, level: ReadConcernLevel) -> Self {
        self.config.read_concern = Some(level);
        self
    }
    /// Sets the read preference.
    pub fn read_preference(mut self, mode: ReadPreferenceMode) -> Self {
        self.config.read_preference = Some(mode);
        self
    }
    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout_ms = Some(timeout.as_millis() as u64);
        self
    }
    /// Sets the server selection timeout.
    pub fn server_selection_timeout(mut self, timeout: Duration) -> Self {
        self.config.server_selection_timeout_ms = Some(timeout.as_millis() as u64);
        self
    }
    /// Sets the bound on one attempt of one operation.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.config.operation_timeout_ms = Some(timeout.as_millis() as u64);
        self
    }
    /// Sets the app name reported to the server.
    pub fn app_name(mut self, name: impl Into<String>) -> Self {
        self.config.app_name = Some(name.into());
        self
    }
    /// Sets the attempts per operation on transient errors.
    pub fn retry_attempts(mut self, attempts: u32) -> Self {
        self.config.retry_attempts = Some(attempts);
        self
    }
    /// Sets the first back-off between attempts.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.config.retry_backoff_ms = Some(backoff.as_millis() as u64);
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<MongoConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn debug_hides_the_password() {
        let c = MongoConfig::builder()
            .url("mongodb://ion:s3cr3t-pw@h1:27017,h2:27017/?replicaSet=rs0&authMechanismProperties=AWS_SESSION_TOKEN:tok3n")
            .build()
            .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        assert!(!shown.contains("tok3n"), "{shown}");
        assert!(
            shown.contains("ion:<redacted>@h1:27017,h2:27017"),
            "{shown}"
        );
        assert!(shown.contains("replicaSet=rs0"), "{shown}");
    }

    #[test]
    fn redaction_leaves_urls_without_credentials_alone() {
        assert_eq!(
            redact_url("mongodb://127.0.0.1:27018/?serverSelectionTimeoutMS=5000"),
            "mongodb://127.0.0.1:27018/?serverSelectionTimeoutMS=5000"
        );
        // A password containing '@' and ':' is still hidden entirely.
        let r = redact_url("mongodb://u:p@ss:w@rd@host/db");
        assert_eq!(r, "mongodb://u:<redacted>@host/db");
    }

    #[test]
    fn build_names_the_bad_key() {
        let e = MongoConfig::builder().build().unwrap_err();
        assert_eq!(e.kind(), ion_core::ErrorKind::InvalidConfig);
        assert!(e.to_string().contains("ION_MONGO_URL"), "{e}");

        let e = MongoConfig::builder().url("http://x").build().unwrap_err();
        assert!(e.to_string().contains("url"), "{e}");

        let e = MongoConfig::builder()
            .url("mongodb://h")
            .database("a.b")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("ION_MONGO_DATABASE"), "{e}");

        let e = MongoConfig::builder()
            .url("mongodb://h")
            .write_concern(WriteAcknowledgment::Nodes(0))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("ION_MONGO_WRITE_CONCERN"), "{e}");

        let e = MongoConfig::builder()
            .url("mongodb://h")
            .retry_attempts(0)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("ION_MONGO_RETRY_ATTEMPTS"), "{e}");
    }

    #[test]
    fn from_env_reads_every_key() {
        let c = MongoConfig::from_lookup(lookup(&[
            ("ION_MONGO_URL", "mongodb://h1,h2/?replicaSet=rs0"),
            ("ION_MONGO_DATABASE", "platform"),
            ("ION_MONGO_WRITE_CONCERN", "2"),
            ("ION_MONGO_JOURNAL", "false"),
            ("ION_MONGO_READ_CONCERN", "local"),
            ("ION_MONGO_READ_PREFERENCE", "secondary_preferred"),
            ("ION_MONGO_SERVER_SELECTION_TIMEOUT_MS", "1500"),
            ("ION_MONGO_RETRY_ATTEMPTS", "7"),
            ("ION_MONGO_APP_NAME", "ion-test"),
        ]))
        .unwrap();
        assert_eq!(c.database, "platform");
        assert_eq!(c.write_concern, Some(WriteAcknowledgment::Nodes(2)));
        assert_eq!(c.journal, Some(false));
        assert_eq!(c.read_concern, Some(ReadConcernLevel::Local));
        assert_eq!(
            c.read_preference,
            Some(ReadPreferenceMode::SecondaryPreferred)
        );
        assert_eq!(c.server_selection_timeout_ms, Some(1500));
        assert_eq!(c.retry_policy().max_attempts, 7);
        assert_eq!(c.app_name.as_deref(), Some("ion-test"));
    }

    #[test]
    fn from_env_rejects_garbage_naming_the_variable() {
        for (key, value) in [
            ("ION_MONGO_READ_CONCERN", "snapshotty"),
            ("ION_MONGO_JOURNAL", "yes please"),
            ("ION_MONGO_CONNECT_TIMEOUT_MS", "-5"),
            ("ION_MONGO_WRITE_CONCERN", "most"),
        ] {
            let e =
                MongoConfig::from_lookup(lookup(&[("ION_MONGO_URL", "mongodb://h"), (key, value)]))
                    .unwrap_err();
            assert_eq!(e.kind(), ion_core::ErrorKind::InvalidConfig);
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
    }

    #[tokio::test]
    async fn defaults_are_majority_journaled_primary() {
        let c = MongoConfig::builder()
            .url("mongodb://h1:1")
            .build()
            .unwrap();
        let mut o = ClientOptions::parse(&c.url).await.unwrap();
        c.apply(&mut o);
        let wc = o.write_concern.unwrap();
        assert_eq!(wc.w, Some(Acknowledgment::Majority));
        assert_eq!(wc.journal, Some(true));
        assert_eq!(o.read_concern, Some(ReadConcern::majority()));
        assert_eq!(
            o.selection_criteria,
            Some(SelectionCriteria::ReadPreference(ReadPreference::Primary))
        );
        assert_eq!(o.app_name.as_deref(), Some("ion"));
    }

    #[tokio::test]
    async fn url_values_survive_unless_the_config_sets_them() {
        let c = MongoConfig::builder()
            .url("mongodb://h1:1/?w=1&serverSelectionTimeoutMS=5000&replicaSet=rs0")
            .build()
            .unwrap();
        let mut o = ClientOptions::parse(&c.url).await.unwrap();
        c.apply(&mut o);
        assert_eq!(o.write_concern.unwrap().w, Some(Acknowledgment::Nodes(1)));
        assert_eq!(o.server_selection_timeout, Some(Duration::from_secs(5)));
        assert_eq!(o.repl_set_name.as_deref(), Some("rs0"));

        let c = MongoConfig::builder()
            .url("mongodb://h1:1/?w=1&serverSelectionTimeoutMS=5000")
            .write_concern(WriteAcknowledgment::Majority)
            .server_selection_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut o = ClientOptions::parse(&c.url).await.unwrap();
        c.apply(&mut o);
        assert_eq!(o.write_concern.unwrap().w, Some(Acknowledgment::Majority));
        assert_eq!(o.server_selection_timeout, Some(Duration::from_secs(2)));
    }
}
