//! Ingest tokens: bearer token → tenant, kept in a `DocumentStore` as SHA-256 hashes only.
//!
//! A token is `ion_` followed by 64 random hex digits; the store keeps its SHA-256 (the document
//! id) and never the token. Lookups are cached briefly (`cache_ttl`), so a revocation takes
//! effect within that time on every node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ion_core::{
    CollectionName, DocQuery, DocumentBody, DocumentId, DocumentStore, DocumentStoreExt, Error,
    ErrorKind, FieldFilter, FieldPath, Result, Scalar, Sha256Digest, TenantId, Timestamp,
};
use serde::{Deserialize, Serialize};

/// The token collection.
pub const TOKENS: &str = "ion_log_tokens";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TokenDoc {
    tenant: TenantId,
    label: String,
    created: Timestamp,
    revoked: bool,
}

/// What a presented token resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// A live token of this tenant.
    Tenant(TenantId),
    /// A token that was revoked (403).
    Revoked,
    /// Not a token we issued (401).
    Unknown,
}

/// A newly issued token: shown once, never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The secret to give the tenant.
    pub token: String,
    /// Its id (the SHA-256 of the token), for listing and revoking.
    pub id: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("id", &self.id)
            .finish()
    }
}

/// A token as listed (no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// SHA-256 of the token.
    pub id: String,
    /// Owner.
    pub tenant: TenantId,
    /// Free-text label given at issue.
    pub label: String,
    /// When issued.
    pub created: Timestamp,
    /// Whether revoked.
    pub revoked: bool,
}

/// Issues, lists, revokes and checks ingest tokens.
#[derive(Debug)]
pub struct TokenStore {
    docs: Arc<dyn DocumentStore>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (TokenCheck, Instant)>>,
}

fn collection() -> CollectionName {
    CollectionName::parse(TOKENS).expect("literal collection name")
}

/// The id under which a token is stored: its SHA-256 in hex.
pub fn token_id(token: &str) -> String {
    Sha256Digest::of(token.as_bytes()).to_string()
}

impl TokenStore {
    /// A store over `docs`, caching lookups for `cache_ttl`.
    pub fn new(docs: Arc<dyn DocumentStore>, cache_ttl: Duration) -> Self {
        Self {
            docs,
            ttl: cache_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Issues a new token for `tenant`.
    pub async fn issue(&self, tenant: &TenantId, label: &str) -> Result<IssuedToken> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)
            .map_err(|e| Error::unavailable(format!("no randomness for a token: {e}")))?;
        let token = format!("ion_{}", hex::encode(raw));
        let id = token_id(&token);
        self.register_hash(tenant, &id, label).await?;
        Ok(IssuedToken { token, id })
    }

    /// Registers a token by its SHA-256 (bootstrap from configuration); idempotent.
    pub async fn register_hash(&self, tenant: &TenantId, sha256: &str, label: &str) -> Result<()> {
        let digest = Sha256Digest::parse(sha256)?;
        let doc = TokenDoc {
            tenant: tenant.clone(),
            label: label.chars().take(100).collect(),
            created: Timestamp::now(),
            revoked: false,
        };
        let id = DocumentId::parse(&digest.to_string())?;
        match self
            .docs
            .insert(&collection(), &id, &DocumentBody::from_serialize(&doc)?)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let (existing, _) = self.docs.get_json::<TokenDoc>(&collection(), &id).await?;
                if existing.tenant != *tenant {
                    return Err(Error::conflict("token is registered to another tenant"));
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A tenant's tokens.
    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<TokenInfo>> {
        let query = DocQuery {
            filters: vec![FieldFilter {
                path: FieldPath::parse("tenant")?,
                value: Scalar::String(tenant.to_string()),
            }],
            ..DocQuery::default()
        };
        let docs = self.docs.find_all(&collection(), &query).await?;
        docs.into_iter()
            .map(|d| {
                let t: TokenDoc = d.body.to_typed()?;
                Ok(TokenInfo {
                    id: d.id.to_string(),
                    tenant: t.tenant,
                    label: t.label,
                    created: t.created,
                    revoked: t.revoked,
                })
            })
            .collect()
    }

    /// Revokes a token by id; idempotent.
    pub async fn revoke(&self, id: &str) -> Result<()> {
        let id = DocumentId::parse(id)?;
        for _ in 0..5 {
            let (mut doc, rev) = self.docs.get_json::<TokenDoc>(&collection(), &id).await?;
            if doc.revoked {
                break;
            }
            doc.revoked = true;
            match self
                .docs
                .update(
                    &collection(),
                    &id,
                    rev,
                    &DocumentBody::from_serialize(&doc)?,
                )
                .await
            {
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        self.cache.lock().expect("token cache").remove(id.as_str());
        Ok(())
    }

    /// Resolves a presented token.
    pub async fn check(&self, token: &str) -> Result<TokenCheck> {
        if token.len() > 200 {
            return Ok(TokenCheck::Unknown);
        }
        let id = token_id(token);
        if let Some((c, at)) = self.cache.lock().expect("token cache").get(&id) {
            if at.elapsed() < self.ttl {
                return Ok(c.clone());
            }
        }
        let doc_id = DocumentId::parse(&id)?;
        let check = match self.docs.get_json::<TokenDoc>(&collection(), &doc_id).await {
            Ok((doc, _)) if doc.revoked => TokenCheck::Revoked,
            Ok((doc, _)) => TokenCheck::Tenant(doc.tenant),
            Err(e) if e.kind() == ErrorKind::NotFound => TokenCheck::Unknown,
            Err(e) => return Err(e),
        };
        let mut cache = self.cache.lock().expect("token cache");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id, (check.clone(), Instant::now()));
        Ok(check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ion_core::fake::InMemoryDocumentStore;

    #[tokio::test]
    async fn issue_check_list_revoke() {
        let docs = InMemoryDocumentStore::new();
        let store = TokenStore::new(Arc::new(docs.clone()), Duration::ZERO);
        let t = TenantId::parse("acme").unwrap();
        let issued = store.issue(&t, "ci").await.unwrap();
        assert!(issued.token.starts_with("ion_"));
        assert!(!format!("{issued:?}").contains(&issued.token));
        assert_eq!(
            store.check(&issued.token).await.unwrap(),
            TokenCheck::Tenant(t.clone())
        );
        assert_eq!(store.check("ion_nope").await.unwrap(), TokenCheck::Unknown);
        // Only the hash is stored.
        let listed = store.list(&t).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, issued.id);
        let raw = docs
            .get(&collection(), &DocumentId::parse(&issued.id).unwrap())
            .await
            .unwrap();
        assert!(!serde_json::to_string(&raw.body)
            .unwrap()
            .contains(&issued.token));
        store.revoke(&issued.id).await.unwrap();
        store.revoke(&issued.id).await.unwrap();
        assert_eq!(
            store.check(&issued.token).await.unwrap(),
            TokenCheck::Revoked
        );
    }

    #[tokio::test]
    async fn a_hash_cannot_be_claimed_by_a_second_tenant() {
        let store = TokenStore::new(Arc::new(InMemoryDocumentStore::new()), Duration::ZERO);
        let id = token_id("secret");
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        store.register_hash(&a, &id, "x").await.unwrap();
        store.register_hash(&a, &id, "x").await.unwrap();
        assert_eq!(
            store.register_hash(&b, &id, "x").await.unwrap_err().kind(),
            ErrorKind::Conflict
        );
    }
}
