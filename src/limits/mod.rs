//! Rate limits and USD budgets per virtual key, per team and per (team, model).
//!
//! Each configured scope is a [`Rule`]. Before forwarding, [`Limiter::admit`] checks every rule
//! that applies to a request and, only if all pass, takes one request from each request
//! bucket, reserves an estimate of the tokens (prompt size plus `max_tokens`) and of the cost,
//! and counts the request as in flight. When the request ends, [`Limiter::settle`] replaces the
//! reservations with what was actually used. Concurrent requests therefore cannot overshoot a
//! limit by more than the reservations in flight.
//!
//! Request and token limits are token buckets that refill continuously (capacity = the limit,
//! refilled over the period, as OpenAI's limits behave); token buckets may go into debt when a
//! response used more than reserved. Budgets are calendar periods (UTC or a fixed offset).
//!
//! Two backends: in memory (one replica) and Redis, where check-and-reserve and settle are
//! each one Lua script, atomic on the server, using the Redis clock.

mod breaker;
pub mod calendar;
mod memory;
mod redis;

pub use redis::RedisLimiter;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};

pub use calendar::Period;
use memory::RuleState;
use parking_lot::Mutex;

use crate::metrics::{Metrics, SeriesCache};

/// What a scope's limits apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    /// One virtual key.
    Key,
    /// A team.
    Team,
    /// A team's use of one model.
    TeamModel,
    /// Every call to one MCP server (`[[mcp_servers]] limits`), named `server`.
    McpServer,
    /// Calls of one tool of an MCP server (`[[mcp_servers.tools]] limits`), named `server/tool`.
    McpTool,
}

impl ScopeKind {
    /// The `scope` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Key => "key",
            ScopeKind::Team => "team",
            ScopeKind::TeamModel => "team_model",
            ScopeKind::McpServer => "mcp_server",
            ScopeKind::McpTool => "mcp_tool",
        }
    }
}

/// What happens when a budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetAction {
    /// Answer 429 until the period ends.
    Block,
    /// Let requests through; alerting reads the budget gauges.
    Alert,
}

/// How far a blocking budget may be overshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overshoot {
    /// A request is admitted while spend plus reservations is under the limit; the request
    /// that crosses it finishes, so spend ends at most the reservations in flight plus one
    /// request per replica over the limit.
    #[default]
    Bounded,
    /// A request is admitted only when its maximum cost (prompt bytes / 4 tokens, plus
    /// `max_tokens` or `default_max_tokens` at the output price) fits what is left: the limit
    /// is never exceeded, and the last few cents of a budget may go unused.
    None,
}

/// A USD budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The limit in nano-USD.
    pub limit_nanos: u64,
    /// The calendar period.
    pub period: Period,
    /// Block or alert.
    pub action: BudgetAction,
    /// For blocking budgets: whether the request that crosses the limit may pass.
    pub overshoot: Overshoot,
}

impl Budget {
    /// Whether a request reserving `cost` nano-USD is refused, with `used` (spent plus
    /// reserved) already counted.
    pub fn refuses(&self, used: u64, cost: u64) -> bool {
        self.action == BudgetAction::Block
            && match self.overshoot {
                Overshoot::Bounded => used >= self.limit_nanos,
                Overshoot::None => used.saturating_add(cost) > self.limit_nanos,
            }
    }
}

/// The limits of one scope, as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Requests per day (rolling 24 h bucket).
    pub requests_per_day: Option<u64>,
    /// Tokens per day (rolling 24 h bucket).
    pub tokens_per_day: Option<u64>,
    /// Requests in flight at once.
    pub max_parallel_requests: Option<u64>,
}

/// One kind of limit, the `limit` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Request rate.
    Requests,
    /// Token rate.
    Tokens,
    /// Requests in flight.
    Parallel,
    /// USD budget.
    Budget,
}

impl LimitKind {
    /// Every kind, in the order of their numbers.
    pub const ALL: [LimitKind; 4] = [
        LimitKind::Requests,
        LimitKind::Tokens,
        LimitKind::Parallel,
        LimitKind::Budget,
    ];

    /// The kind in a set of kinds as bits.
    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The `limit` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Parallel => "parallel",
            LimitKind::Budget => "budget",
        }
    }
}

/// A scope with its limits and, for the in-memory backend, its state.
#[derive(Debug)]
pub struct Rule {
    /// Key, team or team-model.
    pub kind: ScopeKind,
    /// The key name, team name, or `team/model`.
    pub name: Arc<str>,
    /// The team the scope belongs to (the `team` label of the budget gauges).
    pub team: Arc<str>,
    /// Rate and concurrency limits.
    pub limits: Limits,
    /// Budget, if any.
    pub budget: Option<Budget>,
    state: Mutex<RuleState>,
}

impl Rule {
    /// A rule for a scope; a key's team is not known from its name, see [`Rule::for_team`].
    pub fn new(kind: ScopeKind, name: &str, limits: Limits, budget: Option<Budget>) -> Arc<Rule> {
        let team = match kind {
            ScopeKind::Key => "",
            ScopeKind::Team => name,
            ScopeKind::TeamModel => name.split_once('/').map_or(name, |(t, _)| t),
            ScopeKind::McpServer | ScopeKind::McpTool => "",
        };
        Rule::for_team(kind, name, team, limits, budget)
    }

    /// A rule for a scope of `team`.
    pub fn for_team(
        kind: ScopeKind,
        name: &str,
        team: &str,
        limits: Limits,
        budget: Option<Budget>,
    ) -> Arc<Rule> {
        Arc::new(Rule {
            kind,
            name: name.into(),
            team: team.into(),
            state: Mutex::new(RuleState::new(&limits, budget.as_ref())),
            limits,
            budget,
        })
    }

    /// Sets this rule's budget gauges, if it has a budget.
    fn publish_budget(&self, metrics: &Metrics, spent_nanos: u64) {
        if let Some(b) = self.budget {
            let (scope, period) = (self.kind.as_str(), b.period.as_str());
            metrics.budget(
                scope,
                &self.name,
                &self.team,
                period,
                b.limit_nanos,
                spent_nanos,
            );
        }
    }

    /// The bucket limits of this rule: (kind, capacity, period).
    fn buckets(&self) -> impl Iterator<Item = (LimitKind, u64, Duration)> + '_ {
        bucket_specs(&self.limits)
    }
}

/// The token buckets a set of limits defines: (kind, capacity, refill period).
fn bucket_specs(l: &Limits) -> impl Iterator<Item = (LimitKind, u64, Duration)> + '_ {
    const MINUTE: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);
    [
        (LimitKind::Requests, l.requests_per_minute, MINUTE),
        (LimitKind::Tokens, l.tokens_per_minute, MINUTE),
        (LimitKind::Requests, l.requests_per_day, DAY),
        (LimitKind::Tokens, l.tokens_per_day, DAY),
    ]
    .into_iter()
    .filter_map(|(k, v, p)| v.map(|v| (k, v, p)))
}

/// What a request is expected to consume, reserved before forwarding.
#[derive(Debug, Clone, Copy, Default)]
pub struct Demand {
    /// Estimated input plus maximum output tokens.
    pub tokens: u64,
    /// Estimated cost in nano-USD.
    pub cost_nanos: u64,
}

/// Quota state for the `x-ratelimit-*` headers: the tightest bucket of each kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quota {
    /// (limit, remaining, seconds until full) of the tightest request bucket.
    pub requests: Option<(u64, i64, f64)>,
    /// Same for tokens.
    pub tokens: Option<(u64, i64, f64)>,
}

impl Quota {
    fn merge(slot: &mut Option<(u64, i64, f64)>, limit: u64, remaining: i64, reset: f64) {
        if slot.is_none_or(|(_, r, _)| remaining < r) {
            *slot = Some((limit, remaining, reset));
        }
    }

    /// Adds the conventional headers.
    pub fn write_headers(&self, h: &mut HeaderMap) {
        // Static names and integer values: formatting and parsing twelve strings here was
        // 3 % of the gateway's CPU at 1k requests/s.
        // A static, not a const: a const array is made and dropped (six names) on every use.
        static NAMES: [[HeaderName; 3]; 2] = [
            [
                HeaderName::from_static("x-ratelimit-limit-requests"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                HeaderName::from_static("x-ratelimit-reset-requests"),
            ],
            [
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                HeaderName::from_static("x-ratelimit-reset-tokens"),
            ],
        ];
        // All six values are written into one buffer and each header value is a slice of it:
        // two allocations (the buffer, and its shared count at the first slice) instead of one
        // per value (4,200 instructions a request under callgrind, 1,200 of them malloc and
        // free).
        let mut buf = BytesMut::with_capacity(2 * (20 + 20 + DURATION_BYTES));
        let mut spans = [(0, 0); 6];
        let (mut limits, mut remainings) = (itoa::Buffer::new(), itoa::Buffer::new());
        for (i, q) in [self.requests, self.tokens].into_iter().enumerate() {
            let Some((limit, remaining, reset)) = q else {
                continue;
            };
            let mut duration = [0u8; DURATION_BYTES];
            let values: [&[u8]; 3] = [
                limits.format(limit).as_bytes(),
                remainings.format(remaining.max(0)).as_bytes(),
                write_duration(reset, &mut duration),
            ];
            for (j, v) in values.into_iter().enumerate() {
                let start = buf.len();
                buf.extend_from_slice(v);
                spans[i * 3 + j] = (start, buf.len());
            }
        }
        if buf.is_empty() {
            return;
        }
        let all = buf.freeze();
        // Room for all six at once: the upstream's header map would otherwise grow (rehash)
        // while they go in.
        h.reserve(6);
        for (i, q) in [self.requests, self.tokens].into_iter().enumerate() {
            if q.is_none() {
                continue;
            }
            for (j, name) in NAMES[i].iter().enumerate() {
                let (start, end) = spans[i * 3 + j];
                if let Ok(v) = HeaderValue::from_maybe_shared(all.slice(start..end)) {
                    h.insert(name.clone(), v);
                }
            }
        }
    }
}

/// Room for the longest duration `write_duration` writes: three u64s and their units.
const DURATION_BYTES: usize = 3 * 20 + 4;

/// Writes OpenAI's reset format (`20ms`, `1s`, `6m0s`, `1h2m3s`) into `buf`, without the
/// formatting machinery (it runs for every admitted request).
fn write_duration(secs: f64, buf: &mut [u8; DURATION_BYTES]) -> &[u8] {
    let secs = secs.max(0.0);
    let total = secs.ceil() as u64;
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    let parts: &[(u64, &str)] = match (h, m) {
        _ if secs < 1.0 => &[((secs * 1000.0).ceil() as u64, "ms")],
        (0, 0) => &[(s, "s")],
        (0, _) => &[(m, "m"), (s, "s")],
        _ => &[(h, "h"), (m, "m"), (s, "s")],
    };
    let mut len = 0;
    let mut digits = itoa::Buffer::new();
    for &(n, unit) in parts {
        for piece in [digits.format(n).as_bytes(), unit.as_bytes()] {
            buf[len..len + piece.len()].copy_from_slice(piece);
            len += piece.len();
        }
    }
    &buf[..len]
}

/// OpenAI's reset format: `20ms`, `1s`, `6m0s`, `1h2m3s`.
pub fn format_duration(secs: f64) -> String {
    let mut buf = [0u8; DURATION_BYTES];
    String::from_utf8_lossy(write_duration(secs, &mut buf)).into_owned()
}

/// Why a request was refused.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The limit that refused.
    pub limit: LimitKind,
    /// The scope kind and name of the rule.
    pub scope: ScopeKind,
    /// Its name.
    pub name: Arc<str>,
    /// Seconds until a retry can pass.
    pub retry_after: f64,
    /// For budgets: the period, and its end (Unix seconds).
    pub budget: Option<(Budget, i64)>,
    /// Headers describing the quota.
    pub quota: Quota,
}

impl Rejection {
    /// The message for the client.
    pub fn message(&self) -> String {
        match (self.limit, &self.budget) {
            (LimitKind::Budget, Some((b, end))) => format!(
                "budget exceeded: the {} budget of {} `{}` ({} USD per {}) is spent{}; it resets at {}",
                b.period.as_str(),
                self.scope.as_str().replace('_', " "),
                self.name,
                b.limit_nanos as f64 / 1e9,
                b.period.as_str(),
                if b.overshoot == Overshoot::None {
                    ", or what is left is less than this request's maximum cost"
                } else {
                    ""
                },
                calendar::rfc3339(*end),
            ),
            (LimitKind::Parallel, _) => format!(
                "rate limit reached: too many requests in flight for {} `{}`",
                self.scope.as_str().replace('_', " "),
                self.name
            ),
            (kind, _) => format!(
                "rate limit reached for {} `{}` on {}; retry after {}",
                self.scope.as_str().replace('_', " "),
                self.name,
                kind.as_str(),
                format_duration(self.retry_after)
            ),
        }
    }
}

/// What to do when the limit backend cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackendError {
    /// Let the request through (counted).
    Allow,
    /// Refuse it with 503.
    Deny,
}

/// The outcome of an admission check that the backend could not make.
#[derive(Debug, thiserror::Error)]
#[error("limit backend unavailable: {message}")]
pub struct BackendError {
    /// What failed.
    pub message: String,
    /// True when the backend was not asked: it is known to be down (the circuit breaker is
    /// open).
    pub short_circuited: bool,
}

impl BackendError {
    /// The backend failed with `message`.
    pub fn new(message: impl Into<String>) -> BackendError {
        BackendError {
            message: message.into(),
            short_circuited: false,
        }
    }

    fn short_circuited() -> BackendError {
        BackendError {
            message: "known to be down; not asked (it is probed every second)".into(),
            short_circuited: true,
        }
    }
}

/// A request's reservations, handed back at settle time.
#[derive(Debug)]
pub struct Admission {
    rules: Vec<Arc<Rule>>,
    demand: Demand,
    admitted_at: i64,
    /// Quota after this request, for the response headers.
    pub quota: Quota,
    /// Redis: the request id in the parallel sets, and the keys used.
    pub(crate) redis: Option<redis::Reserved>,
}

/// Where limit state lives.
pub enum Backend {
    /// This process.
    Memory,
    /// A Redis server shared by replicas.
    Redis(redis::RedisLimiter),
}

/// The limiter of a gateway.
pub struct Limiter {
    backend: Backend,
    on_error: OnBackendError,
    offset_secs: i64,
    metrics: Arc<Metrics>,
}

impl Limiter {
    /// A limiter on `backend`.
    pub fn new(
        backend: Backend,
        on_error: OnBackendError,
        offset_secs: i64,
        metrics: Arc<Metrics>,
    ) -> Limiter {
        Limiter {
            backend,
            on_error,
            offset_secs,
            metrics,
        }
    }

    /// True for the in-memory backend, whose state a restart loses.
    pub fn is_memory(&self) -> bool {
        matches!(self.backend, Backend::Memory)
    }

    /// Budget time zone, seconds east of UTC.
    pub fn offset_secs(&self) -> i64 {
        self.offset_secs
    }

    /// What the gateway does when the backend fails.
    pub fn on_backend_error(&self) -> OnBackendError {
        self.on_error
    }

    /// Checks `rules` and reserves `demand` in all of them, or refuses without changing any.
    /// `series` is the key's cache of its metric series.
    pub async fn admit(
        &self,
        rules: Vec<Arc<Rule>>,
        demand: Demand,
        team: &str,
        key: &str,
        series: &SeriesCache,
    ) -> Result<Result<Admission, Rejection>, BackendError> {
        let now = unix_now();
        let result = match &self.backend {
            Backend::Memory => Ok(memory::admit(&rules, demand, now, self.offset_secs)),
            Backend::Redis(r) => r.admit(&rules, demand, now, self.offset_secs).await,
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                self.metrics.limit_backend_error();
                if e.short_circuited {
                    self.metrics.limit_short_circuited();
                }
                return Err(e);
            }
        };
        match &result {
            Ok((_, _)) => {
                let applied = applied_kinds(&rules);
                for kind in LimitKind::ALL {
                    if applied & kind.bit() != 0 {
                        self.metrics.rate_limit_allowed_for_key(
                            series,
                            kind as usize,
                            team,
                            key,
                            kind.as_str(),
                        );
                    }
                }
            }
            Err(rej) => self
                .metrics
                .rate_limit_blocked(team, key, rej.limit.as_str()),
        }
        Ok(result.map(|(quota, redis)| Admission {
            rules,
            demand,
            admitted_at: now,
            quota,
            redis,
        }))
    }

    /// Replaces the reservations of `admission` with the tokens and cost actually used.
    pub fn settle(self: &Arc<Self>, admission: Admission, tokens: u64, cost_nanos: u64) {
        let now = unix_now();
        match &self.backend {
            Backend::Memory => {
                memory::settle(
                    &admission.rules,
                    admission.demand,
                    admission.admitted_at,
                    tokens,
                    cost_nanos,
                    now,
                    self.offset_secs,
                );
                self.publish_budgets(&admission.rules);
            }
            Backend::Redis(r) => {
                let limiter = self.clone();
                let r = r.clone();
                // Settle off the request path; the response is already on its way. (A request
                // dropped while the runtime shuts down has no runtime left to settle on.)
                let Ok(handle) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                handle.spawn(async move {
                    let rules = admission.rules.clone();
                    match r
                        .settle(admission, tokens, cost_nanos, now, limiter.offset_secs)
                        .await
                    {
                        Ok(spent) => {
                            for (rule, spent) in rules.iter().zip(spent) {
                                if let Some(spent) = spent {
                                    rule.publish_budget(&limiter.metrics, spent);
                                }
                            }
                        }
                        Err(e) => {
                            // Kept by the Redis limiter and retried once Redis answers.
                            limiter.metrics.limit_backend_error();
                            if e.short_circuited {
                                limiter.metrics.limit_short_circuited();
                            } else {
                                tracing::warn!(error = %e, "could not settle limits in Redis; retried once it answers");
                            }
                        }
                    }
                });
            }
        }
    }

    /// Sets the budget gauges of `rules` from memory state.
    fn publish_budgets(&self, rules: &[Arc<Rule>]) {
        for rule in rules {
            let spent = rule.state.lock().budget_spent();
            rule.publish_budget(&self.metrics, spent);
        }
    }

    /// Publishes every budget's limit and current spend at start-up; with Redis, the spend
    /// of the current period is read from it (it survives restarts there).
    pub fn publish_all(&self, rules: &[Arc<Rule>]) {
        self.publish_budgets(rules);
        if let (Backend::Redis(r), Ok(handle)) =
            (&self.backend, tokio::runtime::Handle::try_current())
        {
            let (r, metrics, offset) = (r.clone(), self.metrics.clone(), self.offset_secs);
            let rules: Vec<Arc<Rule>> = rules
                .iter()
                .filter(|r| r.budget.is_some())
                .cloned()
                .collect();
            handle.spawn(async move {
                for rule in rules {
                    match r.budget_spent(&rule, unix_now(), offset).await {
                        Ok(spent) => rule.publish_budget(&metrics, spent),
                        Err(e) => {
                            metrics.limit_backend_error();
                            tracing::warn!(error = %e, "could not read budget spend from Redis");
                            return;
                        }
                    }
                }
            });
        }
    }

    /// Sets the current period's spend of `rule` (restored at start-up from the ledger).
    pub fn restore_spend(&self, rule: &Rule, spent_nanos: u64) {
        if matches!(self.backend, Backend::Memory) {
            rule.state.lock().restore_spend(
                spent_nanos,
                unix_now(),
                self.offset_secs,
                rule.budget.as_ref(),
            );
        }
    }
}

/// The kinds of limit `rules` check, as bits ([`LimitKind::bit`]).
fn applied_kinds(rules: &[Arc<Rule>]) -> u8 {
    let mut kinds = 0;
    for r in rules {
        for (k, _, _) in r.buckets() {
            kinds |= k.bit();
        }
        if r.limits.max_parallel_requests.is_some() {
            kinds |= LimitKind::Parallel.bit();
        }
        if r.budget.is_some() {
            kinds |= LimitKind::Budget.bit();
        }
    }
    kinds
}

/// Wall-clock seconds, for calendar periods.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests;
