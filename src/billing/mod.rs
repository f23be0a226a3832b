//! The provider's bill beside the meter: `[[billing]]` sources are polled on the background
//! runtime (never on the request path), their lines stored in the ledger database, and
//! reconciled with the ledger per provider, model and UTC day.
//!
//! - [`source`]: the [`source::BillingSource`] trait, one file per provider: [`openai`],
//!   [`anthropic`] (Azure Cost Management and a Google billing export would each be a file);
//! - [`money`]: exact amounts (OpenAI's float USD, Anthropic's cents strings) to nano-USD;
//! - [`fetch`]: pagination, `Retry-After`, backoff and the bounded error reasons;
//! - [`store`]: tables `tollgate_billing` (a fetch replaces its days) and
//!   `tollgate_billing_fetches` (history);
//! - [`reconcile`]: billed vs metered, capture ratio, explanations;
//! - [`config`]: the `[[billing]]` sections.
//!
//! The poller of a source fetches at start and then every `interval_secs` (jittered by up to a
//! tenth, so replicas and sources do not call at the same second) the last `lookback_days`
//! UTC days, today included.

pub mod anthropic;
pub mod config;
pub mod fetch;
pub mod money;
pub mod openai;
pub mod reconcile;
pub mod source;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use parking_lot::Mutex;
use tokio::sync::watch;

pub use config::{RawBilling, SourceConfig, SourceKind};
pub use fetch::FetchError;
pub use reconcile::{ReconKey, Reconciliation};

use crate::ledger::window::{MetricsWindow, Window};
use crate::ledger::{Ledger, LedgerError, ReportQuery, Store};
use crate::metering::PriceTable;
use crate::metrics::{BillingGauges, Metrics};
use crate::proxy::upstream::{UpstreamClient, tls_client};

/// A failed fetch is logged at most this often per source (a key revoked at night would
/// otherwise log every retry until morning).
const LOG_EVERY: Duration = Duration::from_secs(600);
/// How long the billed gauges are cached: a scrape costs at most a query this often.
const GAUGE_CACHE: Duration = Duration::from_secs(30);
/// How long a scrape waits for the gauges' queries.
const GAUGE_TIMEOUT: Duration = Duration::from_secs(2);

/// The billing handle: cheap to clone; off when no `[[billing]]` is configured.
#[derive(Clone, Default)]
pub struct Billing {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    sources: Vec<SourceConfig>,
    ledger: Ledger,
    metrics: Arc<Metrics>,
    client: UpstreamClient,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    gauges: tokio::sync::Mutex<Option<(Window, Instant, Arc<BillingGauges>)>>,
}

fn source_impl(c: &SourceConfig) -> Box<dyn source::BillingSource> {
    match c.kind {
        SourceKind::OpenAi => Box::new(openai::OpenAiBilling {
            admin_key: c.admin_key.clone(),
        }),
        SourceKind::Anthropic => Box::new(anthropic::AnthropicBilling {
            admin_key: c.admin_key.clone(),
        }),
    }
}

/// The UTC days `[from, to)` of a fetch at `now`: the last `lookback` days, today included.
pub fn lookback_days(now: DateTime<Utc>, lookback: u32) -> (NaiveDate, NaiveDate) {
    let today = now.date_naive();
    (
        today - chrono::Duration::days(i64::from(lookback) - 1),
        today + chrono::Duration::days(1),
    )
}

/// `interval` plus or minus up to a tenth, from the random bits of a UUIDv7.
fn jittered(interval: Duration) -> Duration {
    let r = (uuid::Uuid::now_v7().as_u128() & 0xffff) as f64 / 65535.0; // 0..=1
    interval.mul_f64(0.9 + 0.2 * r)
}

impl Billing {
    /// No billing sources.
    pub fn disabled() -> Billing {
        Billing { inner: None }
    }

    /// The sources of `cfg`, storing into `ledger`'s database. Starts nothing: see
    /// [`Billing::start`].
    pub fn new(sources: &[SourceConfig], ledger: &Ledger, metrics: Arc<Metrics>) -> Billing {
        if sources.is_empty() || !ledger.is_enabled() {
            return Billing::disabled();
        }
        for s in sources {
            metrics.billing.register(&s.name, fetch::REASONS);
        }
        let (stop, _) = watch::channel(false);
        Billing {
            inner: Some(Arc::new(Inner {
                sources: sources.to_vec(),
                ledger: ledger.clone(),
                metrics,
                client: tls_client(),
                stop,
                tasks: Mutex::new(Vec::new()),
                gauges: tokio::sync::Mutex::new(None),
            })),
        }
    }

    /// True when sources are configured.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The configured sources.
    pub fn sources(&self) -> &[SourceConfig] {
        self.inner.as_ref().map_or(&[], |i| &i.sources)
    }

    /// Starts one poller per source on the current runtime (the background one).
    pub fn start(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        let mut tasks = inner.tasks.lock();
        for (i, s) in inner.sources.iter().enumerate() {
            tracing::info!(
                source = %s.name, kind = s.kind.as_str(), base_url = %s.base_url,
                interval_secs = s.interval.as_secs(), lookback_days = s.lookback_days,
                "billing: polling"
            );
            tasks.push(tokio::spawn(poll(inner.clone(), i)));
        }
    }

    /// Stops the pollers (a fetch in flight is abandoned: the next start fetches again).
    pub async fn close(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        let _ = inner.stop.send(true);
        let tasks = std::mem::take(&mut *inner.tasks.lock());
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }

    /// Fetches the days `[from, to)` of source `name` now, stores them (replacing those days)
    /// and records the fetch; the number of lines stored.
    pub async fn fetch_days(
        &self,
        name: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<usize, FetchError> {
        let inner = self
            .inner
            .as_ref()
            .ok_or_else(|| FetchError::Store("billing is off".into()))?;
        let i = inner
            .sources
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| FetchError::Store(format!("no billing source named {name:?}")))?;
        fetch_once(inner, i, from, to).await
    }

    /// The reconciliation of the UTC days `[from, to)`.
    pub async fn reconcile(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        group_by: Vec<ReconKey>,
        prices: Option<&PriceTable>,
    ) -> Result<Reconciliation, LedgerError> {
        let inner = self.inner.as_ref().ok_or(LedgerError::Disabled)?;
        reconcile_in(
            inner.ledger.store()?,
            &inner.sources,
            from,
            to,
            group_by,
            prices,
        )
        .await
    }

    /// The billed gauges for `[from, to)` or, when `None`, the ledger's metrics window (the
    /// current month when that is `none`); cached for 30 s. `None` when off or the database
    /// does not answer within 2 s.
    pub async fn gauges(
        &self,
        window: Option<Window>,
        prices: Option<&PriceTable>,
    ) -> Option<Arc<BillingGauges>> {
        self.gauges_at(window, Utc::now(), prices).await
    }

    /// [`Billing::gauges`] as at `now` (the capture ratio is that of the UTC day before it).
    pub async fn gauges_at(
        &self,
        window: Option<Window>,
        now: DateTime<Utc>,
        prices: Option<&PriceTable>,
    ) -> Option<Arc<BillingGauges>> {
        let inner = self.inner.as_ref()?;
        let window = window.or_else(|| {
            let w = inner
                .ledger
                .config()
                .map_or(MetricsWindow::Month, |c| c.metrics_window);
            w.around(now).or_else(|| MetricsWindow::Month.around(now))
        })?;
        let mut cache = inner.gauges.lock().await;
        let fresh = (now - Utc::now()).num_seconds().abs() < 60;
        if let Some((w, at, g)) = &*cache
            && fresh
            && *w == window
            && at.elapsed() < GAUGE_CACHE
        {
            return Some(g.clone());
        }
        let store = inner.ledger.store().ok()?;
        let computed = tokio::time::timeout(
            GAUGE_TIMEOUT,
            compute_gauges(store, &inner.sources, window, now, prices),
        )
        .await;
        match computed {
            Ok(Ok(g)) => {
                let g = Arc::new(g);
                if fresh {
                    *cache = Some((window, Instant::now(), g.clone()));
                }
                Some(g)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "billing: gauges not computed");
                cache.as_ref().map(|c| c.2.clone())
            }
            Err(_) => cache.as_ref().map(|c| c.2.clone()),
        }
    }
}

/// Reconciles the stored bill of `sources` with the ledger of `store`.
pub async fn reconcile_in(
    store: &Store,
    sources: &[SourceConfig],
    from: NaiveDate,
    to: NaiveDate,
    group_by: Vec<ReconKey>,
    prices: Option<&PriceTable>,
) -> Result<Reconciliation, LedgerError> {
    use crate::ledger::report::GroupKey;
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let (Some(f), Some(t)) = (midnight(from), midnight(to)) else {
        return Err(LedgerError::Timeout(Duration::ZERO));
    };
    let metered = store
        .report(&ReportQuery {
            from: f,
            to: t,
            group_by: vec![GroupKey::Provider, GroupKey::Model, GroupKey::Day],
        })
        .await?;
    let lines = store::lines(store, from, to).await?;
    Ok(reconcile::reconcile(
        from, to, group_by, sources, &lines, &metered, prices,
    ))
}

async fn compute_gauges(
    store: &Store,
    sources: &[SourceConfig],
    (from, to): Window,
    now: DateTime<Utc>,
    prices: Option<&PriceTable>,
) -> Result<BillingGauges, LedgerError> {
    use std::collections::BTreeMap;
    let first = from.date_naive();
    // A window ending inside a day includes that day.
    let last = (to - chrono::Duration::nanoseconds(1)).date_naive() + chrono::Duration::days(1);
    let lines = store::lines(store, first, last).await?;
    let mut cost: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    let mut tokens: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for s in &lines {
        let Some(src) = sources.iter().find(|c| c.name == s.source) else {
            continue;
        };
        let l = &s.line;
        let provider = src
            .provider_of(&l.project, &l.api_key)
            .unwrap_or("unmapped")
            .to_string();
        match l.dataset {
            source::Dataset::Cost => {
                *cost
                    .entry((provider, l.model.clone(), s.source.clone()))
                    .or_default() += l.cost_nanos;
            }
            source::Dataset::Usage => {
                *tokens
                    .entry((provider, l.model.clone(), l.item.clone()))
                    .or_default() += l.quantity;
            }
        }
    }
    let today = now.date_naive();
    let yesterday = today - chrono::Duration::days(1);
    let day = reconcile_in(
        store,
        sources,
        yesterday,
        today,
        vec![ReconKey::Provider, ReconKey::Model],
        prices,
    )
    .await?;
    let capture = day
        .rows
        .iter()
        .filter_map(|r| {
            let ratio = r.capture_ratio()?;
            Some((r.groups[0].clone(), r.groups[1].clone(), ratio))
        })
        .collect();
    Ok(BillingGauges {
        cost: cost
            .into_iter()
            .map(|((p, m, s), n)| (p, m, s, n))
            .collect(),
        tokens: tokens
            .into_iter()
            .map(|((p, m, t), n)| (p, m, t, n))
            .collect(),
        capture,
        last_success: store::last_success(store).await?,
    })
}

async fn fetch_once(
    inner: &Inner,
    i: usize,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<usize, FetchError> {
    let cfg = &inner.sources[i];
    let store = inner
        .ledger
        .store()
        .map_err(|e| FetchError::Store(e.to_string()))?;
    let started = Utc::now().timestamp_micros();
    let src = source_impl(cfg);
    let fetcher = fetch::Fetcher {
        client: &inner.client,
        base_url: &cfg.base_url,
        name: &cfg.name,
        timeout: cfg.timeout,
        metrics: &inner.metrics,
    };
    let result = match fetcher.fetch(src.as_ref(), from, to).await {
        Ok(lines) => {
            let lines = store::aggregate(lines);
            let at = Utc::now().timestamp_micros();
            match store::replace_days(store, &cfg.name, from, to, &lines, at).await {
                Ok(()) => Ok(lines.len()),
                Err(e) => {
                    inner.metrics.billing.fetch_error(&cfg.name, "store");
                    Err(FetchError::Store(e.to_string()))
                }
            }
        }
        Err(e) => Err(e),
    };
    let record = store::FetchRecord {
        source: cfg.name.clone(),
        started_at: started,
        finished_at: Utc::now().timestamp_micros(),
        from,
        to,
        outcome: match &result {
            Ok(_) => "ok".into(),
            Err(e) => e.reason().into(),
        },
        lines: result.as_ref().map_or(0, |n| *n as i64),
        message: result
            .as_ref()
            .err()
            .map_or(String::new(), |e| e.to_string()),
    };
    if let Err(e) = store::record_fetch(store, &record).await {
        tracing::debug!(error = %e, "billing: fetch history not written");
    }
    // The gauges show the new bill at the next scrape.
    *inner.gauges.lock().await = None;
    result
}

async fn poll(inner: Arc<Inner>, i: usize) {
    let name = inner.sources[i].name.clone();
    let mut stop = inner.stop.subscribe();
    // The tables come with the ledger's migrations.
    while !inner.ledger.wait_migrated(Duration::from_secs(5)).await {
        if *stop.borrow() {
            return;
        }
    }
    let mut last_log: Option<Instant> = None;
    loop {
        let cfg = &inner.sources[i];
        let (from, to) = lookback_days(Utc::now(), cfg.lookback_days);
        match fetch_once(&inner, i, from, to).await {
            Ok(n) => {
                if last_log.take().is_some() {
                    tracing::info!(source = %name, lines = n, "billing: fetching again");
                }
                tracing::debug!(source = %name, lines = n, %from, %to, "billing: fetched");
            }
            Err(e) => {
                if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    tracing::warn!(
                        source = %name, reason = e.reason(), error = %e,
                        "billing: fetch failed; retrying at the next interval (llm_gateway_billing_fetch_errors_total)"
                    );
                    last_log = Some(Instant::now());
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(jittered(cfg.interval)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_only_configs_need_the_ledger() {
        use crate::config::Config;
        let vars = std::collections::HashMap::<String, String>::new();
        let billing = "[[billing]]\nname = \"oa\"\nkind = \"openai\"\nadmin_key = \"sk-admin-1\"\n";
        let cfg = Config::from_toml(billing, &vars).expect("billing alone is a valid config");
        assert!(cfg.providers.is_empty());
        assert_eq!(cfg.billing.len(), 1);
        let off = format!("[ledger]\nenabled = false\n{billing}");
        let err = Config::from_toml(&off, &vars)
            .err()
            .expect("needs the ledger");
        assert!(
            err.to_string()
                .contains("billing: [[billing]] keeps the bill"),
            "{err}"
        );
        let none = Config::from_toml("", &vars)
            .err()
            .expect("nothing configured");
        assert!(
            none.to_string().contains("[[billing]] sources alone"),
            "{none}"
        );
    }

    #[test]
    fn lookback_ends_after_today() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T19:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let (f, t) = lookback_days(now, 3);
        assert_eq!(
            (f.to_string(), t.to_string()),
            ("2026-11-30".into(), "2026-12-03".into())
        );
        let j = jittered(Duration::from_secs(3600));
        assert!(
            j >= Duration::from_secs(3240) && j <= Duration::from_secs(3960),
            "{j:?}"
        );
    }
}
