//! Vertex AI access tokens from a service account key: the key signs a JWT (RS256, with
//! `ring`, the signer rustls uses), the token endpoint exchanges it for an OAuth2 access token
//! (RFC 7523's JWT bearer grant, as Google's auth libraries do), and a background task
//! refreshes the token 5 minutes before it expires (Google's tokens last 3,600 s; its own
//! libraries refresh 3 min 45 s early). A request only reads the cached header: it never
//! waits on the token endpoint.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::RwLock;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use tokio::time::Instant;

/// The scope Vertex AI needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, when the key file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// How long a signed assertion is valid: Google accepts at most one hour.
const ASSERTION_SECS: u64 = 3600;
/// Refresh this long before expiry (a token of 3,599 s is refreshed after 3,299 s).
const REFRESH_EARLY: Duration = Duration::from_secs(300);
/// A token this close to its expiry (or a quarter of its life, if shorter) is not sent: it
/// could expire on the way.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// One exchange's deadline, and the longest wait between failed ones (doubling from 1 s).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest token endpoint answer read (Google's are ~1 KB).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The fields of a service account key file that signing needs.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

/// A service account: who signs, with what key, for which token endpoint.
pub struct ServiceAccount {
    email: String,
    key_id: Option<String>,
    key: RsaKeyPair,
    /// The token endpoint, also the assertion's audience.
    token_uri: String,
    token_uri_parsed: Uri,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("email", &self.email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Reads a key file's JSON (`gcloud iam service-accounts keys create` writes it);
    /// `token_uri` replaces the file's.
    pub fn from_json(text: &str, token_uri: Option<&str>) -> Result<ServiceAccount, String> {
        let f: KeyFile = serde_json::from_str(text)
            .map_err(|e| format!("not a service account key file: {e}"))?;
        if let Some(k) = f.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(format!(
                "the key file is of type {k:?}; a \"service_account\" key is needed (user \
                 credentials: set api_key to an access token instead)"
            ));
        }
        let der = PrivatePkcs8KeyDer::from_pem_slice(f.private_key.as_bytes())
            .map_err(|e| format!("private_key is not a PKCS#8 PEM key: {e:?}"))?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| format!("private_key is not a usable RSA key: {e}"))?;
        let token_uri = token_uri
            .map(str::to_string)
            .or(f.token_uri)
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
        let token_uri_parsed: Uri = token_uri
            .parse()
            .ok()
            .filter(|u: &Uri| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            })
            .ok_or_else(|| format!("token_uri {token_uri:?} is not an http(s) URL"))?;
        Ok(ServiceAccount {
            email: f.client_email,
            key_id: f.private_key_id,
            key,
            token_uri,
            token_uri_parsed,
        })
    }

    /// The signed JWT asserting this account at `now` (seconds since the epoch).
    pub fn assertion(&self, now: u64) -> Result<String, String> {
        let mut head = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            head["kid"] = kid.as_str().into();
        }
        let claims = serde_json::json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_SECS,
        });
        let mut jwt = URL_SAFE_NO_PAD.encode(head.to_string());
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "signing the assertion failed".to_string())?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(&sig));
        Ok(jwt)
    }
}

/// An access token and its lifetime in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `ya29....`
    pub access_token: String,
    /// Seconds from now.
    pub expires_in: u64,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// The client for token endpoints: rustls (webpki roots) for Google's, plain HTTP for a test's.
pub type TokenClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for [`exchange`].
pub fn client() -> TokenClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

/// Signs an assertion now and exchanges it at the account's token endpoint.
pub async fn exchange(client: &TokenClient, account: &ServiceAccount) -> Result<Token, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
        account.assertion(now)?
    );
    let req = Request::builder()
        .method(Method::POST)
        .uri(account.token_uri_parsed.clone())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .map_err(|e| e.to_string())?;
    let where_ = &account.token_uri;
    let answer = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("token endpoint {where_} unreachable: {e}"))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("token endpoint {where_}: reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(EXCHANGE_TIMEOUT, answer)
        .await
        .map_err(|_| format!("token endpoint {where_} did not answer within 10 s"))??;
    let a: Answer = serde_json::from_slice(&body).map_err(|_| {
        format!("token endpoint {where_} answered {status} with a body that is not a token")
    })?;
    match (status.is_success(), a.access_token, a.expires_in) {
        (true, Some(t), Some(s)) if !t.is_empty() => Ok(Token {
            access_token: t,
            expires_in: s,
        }),
        _ => Err(format!(
            "token endpoint {where_} refused the service account {}: {status} {} {}",
            account.email,
            a.error.as_deref().unwrap_or(""),
            a.error_description.as_deref().unwrap_or("")
        )),
    }
}

/// When to refresh a token that lasts `expires_in` seconds: 5 minutes early, or at half its
/// life when it is shorter than 10 minutes; at least 1 s.
pub fn refresh_after(expires_in: u64) -> Duration {
    let life = Duration::from_secs(expires_in);
    let early = if life > 2 * REFRESH_EARLY {
        life - REFRESH_EARLY
    } else {
        life / 2
    };
    early.max(Duration::from_secs(1))
}

struct Cached {
    header: HeaderValue,
    usable_until: Instant,
}

/// The current access token of one provider, kept fresh by a background task.
pub struct TokenSource {
    provider: String,
    current: RwLock<Option<Cached>>,
    /// Why the last exchange failed (cleared by a success).
    error: RwLock<Option<String>>,
}

impl TokenSource {
    /// A source with no token yet; [`TokenSource::start`] fetches them.
    pub fn new(provider: &str) -> Arc<TokenSource> {
        Arc::new(TokenSource {
            provider: provider.to_string(),
            current: RwLock::new(None),
            error: RwLock::new(None),
        })
    }

    /// Starts the refresher on the current Tokio runtime (the background one when the
    /// gateway serves); outside a runtime (`tollgate check`) nothing is fetched. The task
    /// ends when the source is dropped.
    pub fn start(self: &Arc<Self>, account: ServiceAccount) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(refresh(Arc::downgrade(self), account, client()));
        }
    }

    /// `Bearer <token>`, or why there is none.
    pub fn header(&self) -> Result<HeaderValue, String> {
        if let Some(c) = &*self.current.read()
            && Instant::now() < c.usable_until
        {
            return Ok(c.header.clone());
        }
        Err(match &*self.error.read() {
            Some(e) => format!("no valid Vertex AI access token: {e}"),
            None => "no Vertex AI access token yet (the first exchange is under way)".into(),
        })
    }

    /// Records why an exchange failed; a token still valid stays in use.
    pub(super) fn failed(&self, reason: String) {
        *self.error.write() = Some(reason);
    }

    /// Takes a freshly issued token.
    pub(super) fn store(&self, token: &Token) -> Result<(), String> {
        let mut header = HeaderValue::try_from(format!("Bearer {}", token.access_token))
            .map_err(|_| "the token endpoint returned a token unfit for a header".to_string())?;
        header.set_sensitive(true);
        let life = Duration::from_secs(token.expires_in);
        let usable = life.saturating_sub(EXPIRY_MARGIN.min(life / 4));
        *self.current.write() = Some(Cached {
            header,
            usable_until: Instant::now() + usable,
        });
        *self.error.write() = None;
        Ok(())
    }
}

async fn refresh(source: Weak<TokenSource>, account: ServiceAccount, client: TokenClient) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(src) = source.upgrade() else { return };
        let stored = match exchange(&client, &account).await {
            Ok(t) => src.store(&t).map(|()| t.expires_in),
            Err(e) => Err(e),
        };
        let wait = match stored {
            Ok(expires_in) => {
                backoff = Duration::from_secs(1);
                tracing::debug!(provider = %src.provider, expires_in, "Vertex AI access token refreshed");
                refresh_after(expires_in)
            }
            Err(e) => {
                tracing::warn!(
                    provider = %src.provider,
                    retry_in_secs = backoff.as_secs(),
                    "Vertex AI token exchange failed: {e}"
                );
                src.failed(e);
                let w = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                w
            }
        };
        drop(src);
        tokio::time::sleep(wait).await;
    }
}
