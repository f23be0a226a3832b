//! The Redis backend: state shared by replicas. Check-and-reserve is one Lua script and settle
//! another, each atomic on the server and timed by the server's clock, so replicas never
//! read-then-write and never disagree about time.
//!
//! While Redis is away a circuit breaker ([`super::breaker`]) fails calls at once. A settle
//! that fails is kept and retried once Redis answers again: a parallel slot would otherwise
//! stay taken until its 15-minute lease ran out (and the reservations with it). A settle that
//! was never sent is retried whole; one that was sent and went unanswered may have run, so
//! only its idempotent part (freeing the parallel slots) is retried.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};

use super::breaker::Breaker;
use super::{BackendError, BudgetAction, Demand, LimitKind, Overshoot, Quota, Rejection, Rule};

const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local member = ARGV[2]
local levels = {}
for i = 1, n do
  local b = 2 + (i - 1) * 5
  local kind = tonumber(ARGV[b + 1])
  local cap = tonumber(ARGV[b + 2])
  local period = tonumber(ARGV[b + 3])
  local key = KEYS[i]
  if kind == 1 or kind == 2 then
    local s = redis.call('HMGET', key, 'l', 't')
    local level = tonumber(s[1]) or cap
    local ts = tonumber(s[2]) or now
    if now > ts then level = math.min(cap, level + (now - ts) * cap / period) end
    levels[i] = level
    if (kind == 1 and level < 1) or (kind == 2 and level <= 0) then
      return {0, i, tostring(level)}
    end
  elseif kind == 3 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local c = redis.call('ZCARD', key)
    levels[i] = c
    if c >= cap then return {0, i, tostring(c)} end
  else
    local v = redis.call('HMGET', key, 's', 'r')
    local used = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
    levels[i] = used
    if kind == 4 and used >= cap then return {0, i, tostring(used)} end
    if kind == 7 and used + tonumber(ARGV[b + 4]) > cap then return {0, i, tostring(used)} end
  end
end
local out = {1, 0}
for i = 1, n do
  local b = 2 + (i - 1) * 5
  local kind = tonumber(ARGV[b + 1])
  local period = tonumber(ARGV[b + 3])
  local cost = tonumber(ARGV[b + 4])
  local ttl = tonumber(ARGV[b + 5])
  local key = KEYS[i]
  if kind == 1 or kind == 2 then
    local level = levels[i] - cost
    redis.call('HSET', key, 'l', tostring(level), 't', tostring(now))
    redis.call('PEXPIRE', key, period * 2)
    table.insert(out, tostring(level))
  elseif kind == 3 then
    redis.call('ZADD', key, now + ttl, member)
    redis.call('PEXPIRE', key, ttl)
    table.insert(out, tostring(levels[i] + 1))
  else
    redis.call('HINCRBY', key, 'r', cost)
    redis.call('PEXPIRE', key, ttl)
    table.insert(out, tostring(levels[i] + cost))
  end
end
return out
"#;

const SETTLE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local member = ARGV[2]
local out = {}
for i = 1, n do
  local b = 2 + (i - 1) * 5
  local kind = tonumber(ARGV[b + 1])
  local cap = tonumber(ARGV[b + 2])
  local period = tonumber(ARGV[b + 3])
  local a = tonumber(ARGV[b + 4])
  local c = tonumber(ARGV[b + 5])
  local key = KEYS[i]
  if kind == 2 then
    local s = redis.call('HMGET', key, 'l', 't')
    local level = tonumber(s[1]) or cap
    local ts = tonumber(s[2]) or now
    if now > ts then level = math.min(cap, level + (now - ts) * cap / period) end
    level = math.min(cap, level + a - c)
    redis.call('HSET', key, 'l', tostring(level), 't', tostring(now))
    redis.call('PEXPIRE', key, period * 2)
    table.insert(out, '')
  elseif kind == 3 then
    redis.call('ZREM', key, member)
    table.insert(out, '')
  elseif kind == 4 then
    if redis.call('EXISTS', key) == 1 then redis.call('HINCRBY', key, 'r', -a) end
    table.insert(out, '')
  elseif kind == 6 then
    local s = redis.call('HINCRBY', key, 's', a)
    redis.call('PEXPIRE', key, c)
    table.insert(out, tostring(s))
  end
end
return out
"#;

/// How long a request may stay in a parallel set if its replica dies before settling.
const PARALLEL_STALE_MS: u64 = 15 * 60 * 1000;

/// Failed settles kept for retry at most (~200 bytes each); the oldest go first.
const MAX_UNSETTLED: usize = 10_000;

/// The arguments of one settle script call: per key, `[kind, cap, period, a, c]`.
type SettleArgs = Vec<(String, [u64; 5])>;

/// A settle to retry.
struct Unsettled {
    member: String,
    args: SettleArgs,
}

/// A failed call, and whether it reached Redis (then it may have run).
struct Failed {
    error: BackendError,
    sent: bool,
}

impl Failed {
    fn unsent(error: BackendError) -> Failed {
        Failed { error, sent: false }
    }
}

/// One limit as the scripts see it.
#[derive(Debug, Clone)]
struct Entry {
    /// 1 request bucket, 2 token bucket, 3 parallel set, 4 blocking budget, 5 alerting budget.
    kind: u8,
    key: String,
    cap: u64,
    period_ms: u64,
    limit: LimitKind,
    rule: usize,
}

/// What settle needs to undo: the entries and this request's member id.
#[derive(Debug)]
pub(crate) struct Reserved {
    entries: Vec<Entry>,
    member: String,
}

/// The Redis limiter.
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    /// Serialises connection attempts; held only while connecting, never on the hot path.
    connecting: tokio::sync::Mutex<Option<Instant>>,
    admit: Script,
    settle: Script,
    prefix: String,
    seq: AtomicU64,
    instance: u64,
    timeout: Duration,
    breaker: Breaker,
    unsettled: Mutex<VecDeque<Unsettled>>,
    has_unsettled: AtomicBool,
    draining: AtomicBool,
}

impl RedisLimiter {
    /// A limiter on the Redis at `url`; connects lazily, so a Redis that is down at start-up
    /// is handled like one that goes down later.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisLimiter, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let instance = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Ok(RedisLimiter {
            inner: Arc::new(Inner {
                client,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(None),
                admit: Script::new(ADMIT),
                settle: Script::new(SETTLE),
                prefix: prefix.to_string(),
                seq: AtomicU64::new(0),
                instance,
                timeout,
                breaker: Breaker::default(),
                unsettled: Mutex::new(VecDeque::new()),
                has_unsettled: AtomicBool::new(false),
                draining: AtomicBool::new(false),
            }),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, BackendError> {
        if let Some(c) = self.inner.conn.lock().clone() {
            return Ok(c);
        }
        // Requests arriving while a connection is being made wait for it (bounded by the
        // timeout); after a failed attempt only the breaker's probe comes here.
        let mut last = self.inner.connecting.lock().await;
        if let Some(c) = self.inner.conn.lock().clone() {
            return Ok(c);
        }
        if last.is_some_and(|t| t.elapsed() < super::breaker::PROBE_EVERY / 2) {
            return Err(BackendError::new("not connected to Redis"));
        }
        *last = Some(Instant::now());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(self.inner.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            self.inner.timeout * 2,
            ConnectionManager::new_with_config(self.inner.client.clone(), config),
        )
        .await
        .map_err(|_| BackendError::new("timed out connecting to Redis"))?
        .map_err(|e| BackendError::new(e.to_string()))?;
        *self.inner.conn.lock() = Some(conn.clone());
        Ok(conn)
    }

    /// Redis is away: open the breaker, drop the connection (the probe connects afresh instead
    /// of waiting on its retries) and start the probe if none runs: a `PING` every
    /// [`PROBE_EVERY`](super::breaker::PROBE_EVERY), on a task of its own, so that no request
    /// waits on it.
    fn trip(&self) {
        *self.inner.conn.lock() = None;
        if !self.inner.breaker.failed() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.inner.breaker.reset();
            return;
        };
        let this = self.clone();
        handle.spawn(async move {
            loop {
                tokio::time::sleep(super::breaker::PROBE_EVERY).await;
                if this.ping().await.is_ok() {
                    break;
                }
                *this.inner.conn.lock() = None;
            }
            // In this order: a failure between the two starts a new probe.
            this.inner.breaker.probe_ended();
            this.inner.breaker.succeeded();
            if this.inner.has_unsettled.load(Ordering::Relaxed) {
                this.retry_unsettled();
            }
        });
    }

    async fn ping(&self) -> Result<(), BackendError> {
        let mut conn = self.connection().await?;
        let ping = redis::cmd("PING");
        let pong = tokio::time::timeout(self.inner.timeout, ping.query_async::<String>(&mut conn));
        match pong.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BackendError::new(e.to_string())),
            Err(_) => Err(BackendError::new("Redis did not answer in time")),
        }
    }

    /// Runs one script call through the breaker, within the timeout.
    async fn call<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, Failed> {
        let inner = &self.inner;
        inner.breaker.gate().map_err(Failed::unsent)?;
        let mut conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => {
                self.trip();
                return Err(Failed::unsent(e));
            }
        };
        let reply = tokio::time::timeout(inner.timeout, inv.invoke_async::<T>(&mut conn)).await;
        let error = match reply {
            Ok(Ok(v)) => {
                inner.breaker.succeeded();
                if inner.has_unsettled.load(Ordering::Relaxed) {
                    self.retry_unsettled();
                }
                return Ok(v);
            }
            Ok(Err(e)) => {
                let away = e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout();
                if !away {
                    // Redis answered (a script error): it is up.
                    return Err(Failed {
                        error: BackendError::new(e.to_string()),
                        sent: true,
                    });
                }
                BackendError::new(e.to_string())
            }
            Err(_) => BackendError::new("Redis did not answer in time"),
        };
        self.trip();
        Err(Failed { error, sent: true })
    }

    /// Keeps a failed settle for retry: whole when it never reached Redis, else only the
    /// parallel slots it frees (removing a member twice is harmless; refunding tokens or
    /// adding spend twice is not).
    fn keep_unsettled(&self, member: &str, mut args: SettleArgs, sent: bool) {
        if sent {
            args.retain(|(_, a)| a[0] == 3);
        }
        if args.is_empty() {
            return;
        }
        let mut q = self.inner.unsettled.lock();
        if q.len() >= MAX_UNSETTLED {
            q.pop_front();
        }
        q.push_back(Unsettled {
            member: member.to_string(),
            args,
        });
        self.inner.has_unsettled.store(true, Ordering::Relaxed);
    }

    /// Retries the kept settles on a task of their own, one drain at a time.
    fn retry_unsettled(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let drain: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(async move {
                this.drain_unsettled().await;
                this.inner.draining.store(false, Ordering::Release);
            });
        handle.spawn(drain);
    }

    async fn drain_unsettled(&self) {
        let mut retried = 0usize;
        loop {
            let job = {
                let mut q = self.inner.unsettled.lock();
                let job = q.pop_front();
                if job.is_none() {
                    self.inner.has_unsettled.store(false, Ordering::Relaxed);
                }
                job
            };
            let Some(job) = job else { break };
            let inv = self.settle_invocation(&job.member, &job.args);
            match self.call::<Vec<String>>(&inv).await {
                Ok(_) => retried += 1,
                Err(f) => {
                    // Unsent: kept whole; sent: it may have run, keep only the slots.
                    let Unsettled { member, args } = job;
                    self.keep_unsettled(&member, args, f.sent);
                    break;
                }
            }
        }
        if retried > 0 {
            tracing::info!(
                settles = retried,
                "limit settles that had failed are now applied in Redis"
            );
        }
    }

    fn settle_invocation<'a>(&'a self, member: &str, args: &SettleArgs) -> ScriptInvocation<'a> {
        let mut inv = self.inner.settle.prepare_invoke();
        inv.arg(args.len()).arg(member);
        for (key, a) in args {
            inv.key(key)
                .arg(a[0])
                .arg(a[1])
                .arg(a[2])
                .arg(a[3])
                .arg(a[4]);
        }
        inv
    }

    fn entries(&self, rules: &[Arc<Rule>], now: i64, offset: i64) -> Vec<Entry> {
        let p = &self.inner.prefix;
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let scope = format!("{}:{}", rule.kind.as_str(), rule.name);
            for (limit, cap, period) in rule.buckets() {
                out.push(Entry {
                    kind: if limit == LimitKind::Requests { 1 } else { 2 },
                    key: format!("{p}:bucket:{scope}:{}:{}", limit.as_str(), period.as_secs()),
                    cap,
                    period_ms: period.as_millis() as u64,
                    limit,
                    rule: i,
                });
            }
            if let Some(max) = rule.limits.max_parallel_requests {
                out.push(Entry {
                    kind: 3,
                    key: format!("{p}:parallel:{scope}"),
                    cap: max,
                    period_ms: PARALLEL_STALE_MS,
                    limit: LimitKind::Parallel,
                    rule: i,
                });
            }
            if let Some(b) = rule.budget {
                let (_, end) = b.period.bounds(now, offset);
                out.push(Entry {
                    // 7: a blocking budget that also refuses a request whose maximum
                    // cost does not fit (overshoot = "none").
                    kind: match (b.action, b.overshoot) {
                        (BudgetAction::Block, Overshoot::Bounded) => 4,
                        (BudgetAction::Block, Overshoot::None) => 7,
                        (BudgetAction::Alert, _) => 5,
                    },
                    key: format!("{p}:budget:{scope}:{}", b.period.id(now, offset)),
                    cap: b.limit_nanos,
                    // Keep a period's spend a day past its end.
                    period_ms: ((end - now).max(0) as u64 + 86_400) * 1000,
                    limit: LimitKind::Budget,
                    rule: i,
                });
            }
        }
        out
    }

    /// Check-and-reserve in one script call.
    pub(super) async fn admit(
        &self,
        rules: &[Arc<Rule>],
        demand: Demand,
        now: i64,
        offset: i64,
    ) -> Result<Result<(Quota, Option<Reserved>), Rejection>, BackendError> {
        let entries = self.entries(rules, now, offset);
        if entries.is_empty() {
            return Ok(Ok((Quota::default(), None)));
        }
        let member = format!(
            "{:x}-{:x}",
            self.inner.instance,
            self.inner.seq.fetch_add(1, Ordering::Relaxed)
        );
        let mut inv = self.inner.admit.prepare_invoke();
        inv.arg(entries.len()).arg(&member);
        for e in &entries {
            let cost = match e.kind {
                1 => 1,
                2 => demand.tokens,
                4 | 5 | 7 => demand.cost_nanos,
                _ => 0,
            };
            inv.key(&e.key)
                .arg(e.kind)
                .arg(e.cap)
                .arg(e.period_ms)
                .arg(cost)
                .arg(e.period_ms);
        }
        let reply: Vec<redis::Value> = match self.call(&inv).await {
            Ok(r) => r,
            Err(f) => {
                // Sent and unanswered, it may still run and take parallel slots that no
                // settle would free: free them once Redis answers.
                let slots = entries
                    .iter()
                    .filter(|e| e.kind == 3)
                    .map(|e| (e.key.clone(), [3, e.cap, e.period_ms, 0, 0]))
                    .collect();
                if f.sent {
                    self.keep_unsettled(&member, slots, true);
                }
                return Err(f.error);
            }
        };
        let num = |v: Option<&redis::Value>| -> f64 {
            match v {
                Some(redis::Value::Int(i)) => *i as f64,
                Some(redis::Value::BulkString(b)) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.0),
                Some(redis::Value::SimpleString(s)) => s.parse().unwrap_or(0.0),
                _ => 0.0,
            }
        };
        let allowed = num(reply.first()) == 1.0;
        let mut quota = Quota::default();
        if allowed {
            for (e, level) in entries.iter().zip(reply.iter().skip(2)) {
                let level = num(Some(level));
                if e.kind == 1 || e.kind == 2 {
                    let rate = e.cap as f64 / (e.period_ms as f64 / 1000.0);
                    let slot = if e.kind == 1 {
                        &mut quota.requests
                    } else {
                        &mut quota.tokens
                    };
                    Quota::merge(
                        slot,
                        e.cap,
                        level.floor() as i64,
                        ((e.cap as f64 - level) / rate).max(0.0),
                    );
                }
            }
            return Ok(Ok((quota, Some(Reserved { entries, member }))));
        }
        let idx = (num(reply.get(1)) as usize).saturating_sub(1);
        let level = num(reply.get(2));
        let e = &entries[idx.min(entries.len() - 1)];
        let rule = &rules[e.rule];
        let rate = e.cap as f64 / (e.period_ms as f64 / 1000.0);
        let (retry_after, budget) = match e.kind {
            1 => (((1.0 - level) / rate).max(0.0), None),
            2 => (((1.0 - level) / rate).max(0.0), None),
            3 => (1.0, None),
            _ => {
                let b = rule
                    .budget
                    .ok_or_else(|| BackendError::new("budget entry without budget"))?;
                let (_, end) = b.period.bounds(now, offset);
                ((end - now) as f64, Some((b, end)))
            }
        };
        if e.kind == 1 || e.kind == 2 {
            let slot = if e.kind == 1 {
                &mut quota.requests
            } else {
                &mut quota.tokens
            };
            Quota::merge(
                slot,
                e.cap,
                level.floor() as i64,
                ((e.cap as f64 - level) / rate).max(0.0),
            );
        }
        Ok(Err(Rejection {
            limit: e.limit,
            scope: rule.kind,
            name: rule.name.clone(),
            retry_after,
            budget,
            quota,
        }))
    }

    /// Settles a request; returns, per rule, the budget spend of the current period.
    pub(super) async fn settle(
        &self,
        admission: super::Admission,
        tokens: u64,
        cost_nanos: u64,
        now: i64,
        offset: i64,
    ) -> Result<Vec<Option<u64>>, BackendError> {
        let Some(reserved) = admission.redis else {
            return Ok(vec![None; admission.rules.len()]);
        };
        let mut spend_rules = Vec::new();
        let mut args: SettleArgs = Vec::new();
        for e in &reserved.entries {
            match e.kind {
                2 => args.push((
                    e.key.clone(),
                    [2, e.cap, e.period_ms, admission.demand.tokens, tokens],
                )),
                3 => args.push((e.key.clone(), [3, e.cap, e.period_ms, 0, 0])),
                4 | 5 | 7 => {
                    args.push((
                        e.key.clone(),
                        [4, e.cap, e.period_ms, admission.demand.cost_nanos, 0],
                    ));
                    // Spend goes to the period the request finished in.
                    let rule = &admission.rules[e.rule];
                    if let Some(b) = rule.budget {
                        let (_, end) = b.period.bounds(now, offset);
                        let scope = format!("{}:{}", rule.kind.as_str(), rule.name);
                        let key = format!(
                            "{}:budget:{scope}:{}",
                            self.inner.prefix,
                            b.period.id(now, offset)
                        );
                        let ttl = ((end - now).max(0) as u64 + 86_400) * 1000;
                        args.push((key, [6, e.cap, e.period_ms, cost_nanos, ttl]));
                        spend_rules.push(e.rule);
                    }
                }
                _ => {}
            }
        }
        let mut out = vec![None; admission.rules.len()];
        if args.is_empty() {
            return Ok(out);
        }
        let inv = self.settle_invocation(&reserved.member, &args);
        let reply: Vec<String> = match self.call(&inv).await {
            Ok(r) => r,
            Err(f) => {
                drop(inv);
                self.keep_unsettled(&reserved.member, args, f.sent);
                return Err(f.error);
            }
        };
        let spent: Vec<u64> = reply
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        for (rule, s) in spend_rules.into_iter().zip(spent) {
            out[rule] = Some(s);
        }
        Ok(out)
    }

    /// The current period's spend of `rule`'s budget, read from Redis (for the gauges at
    /// start-up).
    pub async fn budget_spent(
        &self,
        rule: &Rule,
        now: i64,
        offset: i64,
    ) -> Result<u64, BackendError> {
        let Some(b) = rule.budget else { return Ok(0) };
        let key = format!(
            "{}:budget:{}:{}:{}",
            self.inner.prefix,
            rule.kind.as_str(),
            rule.name,
            b.period.id(now, offset)
        );
        self.inner.breaker.gate()?;
        let mut conn = self.connection().await?;
        let v: Option<u64> = redis::cmd("HGET")
            .arg(key)
            .arg("s")
            .query_async(&mut conn)
            .await
            .map_err(|e| BackendError::new(e.to_string()))?;
        Ok(v.unwrap_or(0))
    }
}
