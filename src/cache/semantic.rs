//! Semantic mode: the prompt (the last `messages` messages, the system prompt optionally left
//! out) is embedded by a configured model through its provider, and the nearest stored prompt
//! of the same scope, model, endpoint and stream flag at or above `similarity_threshold` is a
//! hit. The index is in process (`index.rs`: exact cosine over unit vectors, an HNSW graph per
//! group past `ann_above_entries`), bounded by entries and bytes, oldest out first; rebuilt
//! from Redis at start when Redis holds the entries. No vector database is needed, and none
//! that fits is packaged here: a `vector_db` backend would implement `search` and `insert`
//! below.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::SemanticConfig;
use super::index::{BuildJob, VectorIndex};
use super::key::Key;
use crate::metering::Usage;
use crate::metrics::{CacheLabels, Metrics};
use crate::providers::{Endpoint, Provider};

/// Rounding slack of a cosine of f32 unit vectors (of 64 to 3,072 dimensions).
const SIMILARITY_EPSILON: f32 = 1e-5;

/// Why an embedding could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SemanticError {
    /// The embeddings model is not resolved (the gateway did not attach it).
    #[error("no embeddings provider")]
    NoEmbedder,
    /// The call failed or timed out.
    #[error("embeddings call: {0}")]
    Call(String),
    /// The response was not an embedding.
    #[error("embeddings response: {0}")]
    Response(String),
    /// A vector of another dimension than the index's.
    #[error("embedding has {got} dimensions, the index {want}")]
    Dimensions {
        /// Of the new vector.
        got: usize,
        /// Of the index.
        want: usize,
    },
}

/// A prompt's vector, to be added to the index once its response is stored.
pub struct Pending {
    group: [u8; 16],
    vector: Box<[f32]>,
}

impl Pending {
    /// Redis form: the group, then the vector's f32s, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.vector.len() * 4);
        out.extend_from_slice(&self.group);
        for x in &self.vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    fn decode(raw: &[u8]) -> Option<Pending> {
        if raw.len() < 20 || (raw.len() - 16) % 4 != 0 {
            return None;
        }
        let mut group = [0u8; 16];
        group.copy_from_slice(&raw[..16]);
        let vector = raw[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(Pending { group, vector })
    }
}

/// What a search found.
pub struct Found {
    /// The nearest entry's key and its similarity, at or above the threshold.
    pub hit: Option<(Key, f32)>,
    /// The prompt's vector, for the index if this request's response is stored.
    pub pending: Option<Pending>,
}

/// The embeddings model's provider, attached when the gateway is built.
pub struct Embedder {
    /// The provider serving the embeddings model.
    pub provider: Arc<dyn Provider>,
    /// The model name sent upstream.
    pub upstream_model: String,
    client: crate::proxy::upstream::UpstreamClient,
}

/// The semantic index and its embeddings model.
pub struct Semantic {
    cfg: SemanticConfig,
    ttl: Duration,
    index: Arc<Mutex<VectorIndex>>,
    embedder: OnceLock<Embedder>,
    metrics: Arc<Metrics>,
    provider_label: OnceLock<&'static str>,
    model_label: &'static str,
}

/// One embeddings call that was made: what it consumed, for the ledger and the metrics.
pub struct EmbeddingCall {
    /// Tokens the provider reported.
    pub usage: Usage,
    /// How long it took.
    pub duration: Duration,
    /// The status the provider answered (0: no answer).
    pub status: u16,
}

impl Semantic {
    /// An empty index for `cfg`.
    pub fn new(cfg: SemanticConfig, ttl: Duration, metrics: Arc<Metrics>) -> Semantic {
        // Label values live as long as the gateway: one per config.
        let model_label: &'static str = Box::leak(cfg.embeddings_model.clone().into_boxed_str());
        Semantic {
            ttl,
            index: Arc::new(Mutex::new(VectorIndex::new(
                cfg.max_entries,
                cfg.max_bytes,
                cfg.ann_above_entries,
            ))),
            embedder: OnceLock::new(),
            metrics,
            provider_label: OnceLock::new(),
            model_label,
            cfg,
        }
    }

    /// The labels semantic mode adds to `requests_total`.
    pub fn labels(&self) -> CacheLabels<'static> {
        CacheLabels {
            status: "",
            vector_db: "memory",
            embeddings_provider: self.provider_label.get().copied().unwrap_or(""),
            embeddings_model: self.model_label,
        }
    }

    /// The configured embeddings model.
    pub fn model(&self) -> &str {
        &self.cfg.embeddings_model
    }

    /// Attaches the embeddings model's provider (once).
    pub fn attach(&self, provider: Arc<dyn Provider>, upstream_model: String) {
        let name: &'static str = Box::leak(provider.name().to_string().into_boxed_str());
        let _ = self.provider_label.set(name);
        let _ = self.embedder.set(Embedder {
            provider,
            upstream_model,
            client: crate::proxy::upstream::tls_client(),
        });
    }

    /// The attached embedder.
    pub fn embedder(&self) -> Option<&Embedder> {
        self.embedder.get()
    }

    /// Loads vectors read from Redis into the index (at start).
    pub fn rebuild(&self, stored: Vec<(Key, Vec<u8>)>) -> usize {
        let mut n = 0;
        for (key, raw) in stored {
            if let Some(p) = Pending::decode(&raw) {
                self.insert(p, key);
                n += 1;
            }
        }
        n
    }

    /// Adds a stored entry's prompt vector; evicts the oldest past the bounds.
    pub fn insert(&self, p: Pending, key: Key) {
        let vector: Arc<[f32]> = Arc::from(p.vector);
        let (evicted, n, bytes) = {
            let mut ix = self.index.lock();
            let evicted = ix.insert(p.group, key, vector);
            (evicted, ix.len(), ix.bytes())
        };
        let c = &self.metrics.cache;
        c.evictions.add(evicted);
        c.entries.set(i64::try_from(n).unwrap_or(i64::MAX));
        c.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Embeds the prompt of `body` and finds the nearest entry of the same group.
    pub async fn search(
        &self,
        scope: &str,
        model: &str,
        endpoint: Endpoint,
        stream: bool,
        body: &Value,
        on_call: &mut (dyn FnMut(&Embedder, EmbeddingCall) + Send),
    ) -> Result<Found, SemanticError> {
        let text = prompt_text(body, self.cfg.messages, self.cfg.ignore_system);
        if text.is_empty() {
            return Ok(Found {
                hit: None,
                pending: None,
            });
        }
        let embedder = self.embedder.get().ok_or(SemanticError::NoEmbedder)?;
        let t0 = Instant::now();
        let called = tokio::time::timeout(self.cfg.timeout, embedder.embed(&text)).await;
        let duration = t0.elapsed();
        self.metrics
            .cache
            .embeddings(embedder.provider.name(), self.model_label, duration);
        let (vector, usage, status) = match called {
            Ok(r) => r,
            Err(_) => (
                Err(SemanticError::Call("timed out".into())),
                Usage::default(),
                0,
            ),
        };
        on_call(
            embedder,
            EmbeddingCall {
                usage,
                duration,
                status,
            },
        );
        let mut vector = vector?;
        normalise(&mut vector);
        let group = group(scope, model, endpoint, stream);
        let found = {
            let mut ix = self.index.lock();
            if let Some(want) = ix.dims().filter(|d| *d != vector.len()) {
                return Err(SemanticError::Dimensions {
                    got: vector.len(),
                    want,
                });
            }
            ix.nearest(group, &vector, self.ttl)
        };
        if let Some(job) = found.build {
            self.build_graph(job);
        }
        let best = found.best;
        Ok(Found {
            // f32 rounding leaves identical unit vectors at 0.99999994: a threshold of 1 still
            // means "the same prompt".
            hit: best
                .map(|(k, s)| (k, s.min(1.0)))
                .filter(|(_, s)| *s + SIMILARITY_EPSILON >= self.cfg.similarity_threshold),
            pending: Some(Pending {
                group,
                vector: vector.into_boxed_slice(),
            }),
        })
    }
}

impl Semantic {
    /// Builds a group's graph on a blocking thread and installs it (off the request path: a
    /// graph of 10,000 vectors of 1,536 dimensions takes seconds of CPU).
    fn build_graph(&self, job: BuildJob) {
        let index = self.index.clone();
        let metrics = self.metrics.clone();
        let run = move || {
            let (group, ann) = job.build();
            let mut ix = index.lock();
            ix.install(group, ann);
            metrics
                .cache
                .ann_vectors
                .set(i64::try_from(ix.ann_vectors()).unwrap_or(i64::MAX));
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(run)),
            Err(_) => run(),
        }
    }
}

impl Embedder {
    /// One `/v1/embeddings` call: the vector (or why not), the usage and the status.
    async fn embed(&self, text: &str) -> (Result<Vec<f32>, SemanticError>, Usage, u16) {
        let body = serde_json::json!({"model": self.upstream_model, "input": text});
        let target = crate::providers::Target {
            endpoint: Endpoint::Embeddings,
            model: &self.upstream_model,
            query: None,
        };
        let uri = match self.provider.upstream_uri(&target) {
            Ok(u) => u.into_owned(),
            Err(e) => return (Err(SemanticError::Call(e)), Usage::default(), 0),
        };
        let mut req = Request::new(Bytes::from(body.to_string()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.provider.authorize(&mut req);
        let req = req.map(Full::new);
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => return (Err(SemanticError::Call(e.to_string())), Usage::default(), 0),
        };
        let status = resp.status().as_u16();
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return (
                    Err(SemanticError::Call(e.to_string())),
                    Usage::default(),
                    status,
                );
            }
        };
        let usage = self
            .provider
            .body_facts(Endpoint::Embeddings, &body)
            .usage
            .unwrap_or_default();
        if !(200..300).contains(&status) {
            return (
                Err(SemanticError::Call(format!("status {status}"))),
                usage,
                status,
            );
        }
        let v: Result<Value, _> = serde_json::from_slice(&body);
        let vector = v
            .ok()
            .and_then(|v| {
                v.get("data")?
                    .get(0)?
                    .get("embedding")?
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_f64)
                            .map(|x| x as f32)
                            .collect::<Vec<f32>>()
                    })
            })
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SemanticError::Response("no data[0].embedding".into()));
        (vector, usage, status)
    }
}

/// The index partition of a request: only prompts of the same scope, model, endpoint and
/// stream flag are compared.
fn group(scope: &str, model: &str, endpoint: Endpoint, stream: bool) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in [
        scope,
        model,
        endpoint.path(),
        if stream { "s" } else { "j" },
    ] {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d: [u8; 32] = h.finalize().into();
    let mut g = [0u8; 16];
    g.copy_from_slice(&d[..16]);
    g
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        for x in v {
            *x /= n;
        }
    }
}

/// The text embedded for `body`: the last `n` messages (chat, Anthropic messages, Responses
/// `input`), or `prompt` (completions); system messages left out when `ignore_system`.
pub fn prompt_text(body: &Value, n: usize, ignore_system: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(p) = body.get("prompt") {
        parts.push(content_text(p));
    }
    let messages = body
        .get("messages")
        .or_else(|| body.get("input").filter(|i| i.is_array()))
        .and_then(Value::as_array);
    if let Some(ms) = messages {
        let kept: Vec<&Value> = ms
            .iter()
            .filter(|m| {
                !(ignore_system
                    && matches!(
                        m.get("role").and_then(Value::as_str),
                        Some("system" | "developer")
                    ))
            })
            .collect();
        for m in &kept[kept.len().saturating_sub(n)..] {
            if let Some(c) = m.get("content") {
                parts.push(content_text(c));
            }
        }
    } else if let Some(s) = body.get("input").and_then(Value::as_str) {
        parts.push(s.to_string());
    }
    if !ignore_system {
        if let Some(s) = body.get("system") {
            parts.insert(0, content_text(s));
        }
    }
    parts.retain(|p| !p.is_empty());
    parts.join("\n")
}

fn content_text(c: &Value) -> String {
    match c {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).or_else(|| p.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_is_the_last_messages_without_system() {
        let b: Value = serde_json::from_str(
            r#"{"messages":[{"role":"system","content":"be nice"},{"role":"user","content":"a"},
                {"role":"assistant","content":"b"},{"role":"user","content":[{"type":"text","text":"c"}]}]}"#,
        )
        .expect("json");
        assert_eq!(prompt_text(&b, 1, true), "c");
        assert_eq!(prompt_text(&b, 2, true), "b\nc");
        assert_eq!(prompt_text(&b, 9, false), "be nice\na\nb\nc");
    }

    #[test]
    fn vectors_round_trip_through_their_redis_form() {
        let p = Pending {
            group: [7; 16],
            vector: vec![0.5, -0.25, 1.0].into_boxed_slice(),
        };
        let q = Pending::decode(&p.encode()).expect("decodes");
        assert_eq!(q.group, p.group);
        assert_eq!(q.vector, p.vector);
    }
}
