//! The in-memory backend: state lives in each [`Rule`], behind a mutex held only for the few
//! arithmetic operations of a check (never across an await). Buckets use `tokio::time` so tests
//! can pause and advance time.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::MutexGuard;
use tokio::time::Instant;

use super::{Budget, BudgetAction, Demand, LimitKind, Limits, Quota, Rejection, Rule};

#[derive(Debug)]
struct Bucket {
    kind: LimitKind,
    capacity: f64,
    period: Duration,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn rate(&self) -> f64 {
        self.capacity / self.period.as_secs_f64()
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + elapsed * self.rate()).min(self.capacity);
        self.last = now;
    }

    /// Requests need one whole request left; tokens only a positive balance (debt allowed).
    fn exhausted(&self) -> bool {
        match self.kind {
            LimitKind::Requests => self.level < 1.0,
            _ => self.level <= 0.0,
        }
    }

    fn seconds_until_available(&self) -> f64 {
        let need = match self.kind {
            LimitKind::Requests => 1.0 - self.level,
            _ => -self.level + 1.0,
        };
        (need / self.rate()).max(0.0)
    }

    fn seconds_until_full(&self) -> f64 {
        ((self.capacity - self.level) / self.rate()).max(0.0)
    }
}

#[derive(Debug, Default)]
struct BudgetState {
    period_start: i64,
    spent: u64,
    reserved: u64,
}

/// The mutable state of one rule.
#[derive(Debug)]
pub(super) struct RuleState {
    buckets: Vec<Bucket>,
    parallel: u64,
    budget: Option<BudgetState>,
}

impl RuleState {
    pub(super) fn new(limits: &Limits, budget: Option<&Budget>) -> RuleState {
        let now = Instant::now();
        RuleState {
            buckets: super::bucket_specs(limits)
                .map(|(kind, cap, period)| Bucket {
                    kind,
                    capacity: cap as f64,
                    period,
                    level: cap as f64,
                    last: now,
                })
                .collect(),
            parallel: 0,
            budget: budget.map(|_| BudgetState::default()),
        }
    }

    fn roll(&mut self, budget: &Budget, now: i64, offset: i64) -> Option<&mut BudgetState> {
        let start = budget.period.bounds(now, offset).0;
        let b = self.budget.as_mut()?;
        if b.period_start != start {
            *b = BudgetState {
                period_start: start,
                spent: 0,
                reserved: 0,
            };
        }
        Some(b)
    }

    pub(super) fn budget_spent(&self) -> u64 {
        self.budget.as_ref().map_or(0, |b| b.spent)
    }

    pub(super) fn restore_spend(
        &mut self,
        spent: u64,
        now: i64,
        offset: i64,
        budget: Option<&Budget>,
    ) {
        if let Some(budget) = budget
            && let Some(b) = self.roll(budget, now, offset)
        {
            b.spent = spent;
        }
    }
}

type Admitted = (Quota, Option<super::redis::Reserved>);

fn quota_of(states: &[MutexGuard<'_, RuleState>]) -> Quota {
    let mut q = Quota::default();
    for s in states {
        for b in &s.buckets {
            let slot = match b.kind {
                LimitKind::Requests => &mut q.requests,
                _ => &mut q.tokens,
            };
            Quota::merge(
                slot,
                b.capacity as u64,
                b.level.floor() as i64,
                b.seconds_until_full(),
            );
        }
    }
    q
}

/// Checks every rule and reserves `demand` in all of them, or changes nothing.
pub(super) fn admit(
    rules: &[Arc<Rule>],
    demand: Demand,
    now_unix: i64,
    offset: i64,
) -> Result<Admitted, Rejection> {
    // Locks are always taken in the order key, team, team-model: no cycles.
    let mut states: Vec<MutexGuard<'_, RuleState>> = rules.iter().map(|r| r.state.lock()).collect();
    let now = Instant::now();
    for (state, rule) in states.iter_mut().zip(rules) {
        for b in &mut state.buckets {
            b.refill(now);
        }
        let blocked = state
            .buckets
            .iter()
            .find(|b| b.exhausted())
            .map(|b| (b.kind, b.seconds_until_available(), None))
            .or_else(|| {
                rule.limits
                    .max_parallel_requests
                    .filter(|max| state.parallel >= *max)
                    .map(|_| (LimitKind::Parallel, 1.0, None))
            });
        let blocked = match (blocked, rule.budget) {
            (Some(b), _) => Some(b),
            (None, Some(budget)) if budget.action == BudgetAction::Block => {
                let (_, end) = budget.period.bounds(now_unix, offset);
                state
                    .roll(&budget, now_unix, offset)
                    .filter(|b| {
                        budget.refuses(b.spent.saturating_add(b.reserved), demand.cost_nanos)
                    })
                    .map(|_| {
                        (
                            LimitKind::Budget,
                            (end - now_unix) as f64,
                            Some((budget, end)),
                        )
                    })
            }
            _ => None,
        };
        if let Some((limit, retry_after, budget)) = blocked {
            let quota = quota_of(&states);
            return Err(Rejection {
                limit,
                scope: rule.kind,
                name: rule.name.clone(),
                retry_after,
                budget,
                quota,
            });
        }
    }
    for (state, rule) in states.iter_mut().zip(rules) {
        for b in &mut state.buckets {
            b.level -= match b.kind {
                LimitKind::Requests => 1.0,
                _ => demand.tokens as f64,
            };
        }
        if rule.limits.max_parallel_requests.is_some() {
            state.parallel += 1;
        }
        if let Some(budget) = rule.budget
            && let Some(b) = state.roll(&budget, now_unix, offset)
        {
            b.reserved = b.reserved.saturating_add(demand.cost_nanos);
        }
    }
    Ok((quota_of(&states), None))
}

/// Replaces the reservation of `demand` with `tokens` and `cost_nanos` actually used.
pub(super) fn settle(
    rules: &[Arc<Rule>],
    demand: Demand,
    admitted_at: i64,
    tokens: u64,
    cost_nanos: u64,
    now_unix: i64,
    offset: i64,
) {
    let now = Instant::now();
    for rule in rules {
        let mut state = rule.state.lock();
        for b in &mut state.buckets {
            if b.kind == LimitKind::Tokens {
                b.refill(now);
                b.level = (b.level + demand.tokens as f64 - tokens as f64).min(b.capacity);
            }
        }
        if rule.limits.max_parallel_requests.is_some() {
            state.parallel = state.parallel.saturating_sub(1);
        }
        if let Some(budget) = rule.budget {
            let admitted_period = budget.period.bounds(admitted_at, offset).0;
            if let Some(b) = state.roll(&budget, now_unix, offset) {
                if b.period_start == admitted_period {
                    b.reserved = b.reserved.saturating_sub(demand.cost_nanos);
                }
                b.spent = b.spent.saturating_add(cost_nanos);
            }
        }
    }
}
