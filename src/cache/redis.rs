//! The Redis backend: entries shared by replicas, expired by Redis (`PX` = the TTL), stored
//! with `SET NX` so that concurrent misses on several gateways store the first answer only.
//! Every call is bounded by `redis_timeout_ms`; a failure is a bypass, never a client error.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::CacheError;
use super::entry::Entry;
use super::key::{Key, hex};
use super::semantic::Pending;

/// Entries in Redis.
pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    ttl: Duration,
    /// After a failure, Redis is skipped until then (ms since the epoch): while it is down a
    /// request bypasses at once instead of waiting out a connection attempt (2 x the timeout).
    down_until_ms: std::sync::atomic::AtomicU64,
}

/// How long Redis is skipped after a failure.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);

impl RedisStore {
    /// A store at `url` (connected on first use).
    pub fn new(
        url: &str,
        prefix: &str,
        timeout: Duration,
        ttl: Duration,
    ) -> Result<RedisStore, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("cache.backend: invalid Redis URL: {e}"))?;
        Ok(RedisStore {
            client,
            conn: OnceCell::new(),
            prefix: prefix.to_string(),
            timeout,
            ttl,
            down_until_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn failed(&self) {
        let until = super::now_ms() + SKIP_AFTER_FAILURE.as_millis() as u64;
        self.down_until_ms
            .store(until, std::sync::atomic::Ordering::Relaxed);
    }

    async fn connection(&self) -> Result<ConnectionManager, CacheError> {
        if super::now_ms()
            < self
                .down_until_ms
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(CacheError::Backend(
                "Redis failed in the last second: skipped".into(),
            ));
        }
        let make = || async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                .set_number_of_retries(1);
            ConnectionManager::new_with_config(self.client.clone(), config)
                .await
                .map_err(|e| CacheError::Backend(e.to_string()))
        };
        let made = tokio::time::timeout(self.timeout * 2, self.conn.get_or_try_init(make)).await;
        let r = match made {
            Ok(Ok(c)) => Ok(c.clone()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CacheError::Backend("connecting to Redis timed out".into())),
        };
        if r.is_err() {
            self.failed();
        }
        r
    }

    fn entry_key(&self, k: &Key) -> String {
        format!("{}e:{}", self.prefix, hex(k))
    }

    fn vector_key(&self, k: &Key) -> String {
        format!("{}v:{}", self.prefix, hex(k))
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        let r = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CacheError::Backend(e.to_string())),
            Err(_) => Err(CacheError::Backend("Redis call timed out".into())),
        };
        if r.is_err() {
            self.failed();
        }
        r
    }

    /// The entry of `k`, if Redis holds one.
    pub async fn get(&self, k: &Key) -> Result<Option<Entry>, CacheError> {
        let mut c = self.connection().await?;
        let key = self.entry_key(k);
        let raw: Option<Vec<u8>> = self.bounded(c.get(&key)).await?;
        Ok(raw.as_deref().and_then(Entry::decode))
    }

    /// Stores `e` unless an entry holds `k` (`SET NX PX`), and its prompt's vector (semantic
    /// mode) with the same lifetime, for the index of the next start. True: stored.
    pub async fn put(
        &self,
        k: &Key,
        e: &Entry,
        vector: Option<&Pending>,
    ) -> Result<bool, CacheError> {
        let mut c = self.connection().await?;
        let px = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(px));
        let set: Option<String> = self
            .bounded(c.set_options(self.entry_key(k), e.encode(), opts))
            .await?;
        let stored = set.is_some();
        if let (true, Some(v)) = (stored, vector) {
            let opts = redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(px));
            let _: Option<String> = self
                .bounded(c.set_options(self.vector_key(k), v.encode(), opts))
                .await?;
        }
        Ok(stored)
    }

    /// Every stored vector (semantic mode), with its entry's key, for rebuilding the index.
    pub async fn vectors(&self) -> Result<Vec<(Key, Vec<u8>)>, CacheError> {
        let mut c = self.connection().await?;
        let pattern = format!("{}v:*", self.prefix);
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .bounded(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c),
                )
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> = self.bounded(c.mget(&keys)).await?;
                for (name, v) in keys.iter().zip(values) {
                    let (Some(v), Some(k)) = (v, parse_hex(&name[pattern.len() - 1..])) else {
                        continue;
                    };
                    out.push((k, v));
                }
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }
}

fn parse_hex(s: &str) -> Option<Key> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        k[i] = u8::try_from(d(pair[0])? * 16 + d(pair[1])?).ok()?;
    }
    Some(k)
}
