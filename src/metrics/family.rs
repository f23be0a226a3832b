//! A metric family: label values to a shared cell, with a series cap.
//!
//! Lookups take a read lock on a hash map keyed by the label values, without allocating; a
//! new series takes the write lock once. When a family holds `cap` series, a new label set has
//! its `model` (the one label whose values come from outside: clients and providers) replaced
//! by `__other__`, so junk model names cannot exhaust memory while spend stays attributed to
//! its team and key. Should that still pass twice the cap, every label becomes `__other__`.
//!
//! Independently of the cap, a label value longer than [`ValueBound`]'s limit is replaced by
//! `__other__` and counted: one 1 MB model name would otherwise be kept in memory and written
//! into every scrape, in every family that carries it.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::{Equivalent, HashMap};
use parking_lot::RwLock;

/// Label value of the overflow series.
pub const OVERFLOW_VALUE: &str = "__other__";

/// Label names whose folded values are counted separately, in
/// `llm_gateway_label_values_folded_total{label}`; any other name counts as `other`.
pub const BOUNDED_LABELS: &[&str] = &[
    "provider",
    "model",
    "team",
    "key",
    "endpoint",
    "status_code",
    "error_type",
    "tool",
    "other",
];

/// The longest label value kept, and how many longer values were folded into `__other__`, per
/// label name. Shared by every family of a registry.
#[derive(Debug)]
pub struct ValueBound {
    max_bytes: usize,
    folded: [AtomicU64; BOUNDED_LABELS.len()],
}

impl ValueBound {
    /// Values longer than `max_bytes` bytes are folded.
    pub fn new(max_bytes: usize) -> ValueBound {
        ValueBound {
            max_bytes,
            folded: Default::default(),
        }
    }

    /// The longest value kept, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// `value`, or `__other__` (counted against `label`) when it is too long.
    pub fn fold<'a>(&self, label: &str, value: &'a str) -> &'a str {
        if value.len() <= self.max_bytes {
            return value;
        }
        self.folded[slot(label)].fetch_add(1, Ordering::Relaxed);
        OVERFLOW_VALUE
    }

    /// Values of `label` folded so far.
    pub fn folded(&self, label: &str) -> u64 {
        self.folded[slot(label)].load(Ordering::Relaxed)
    }
}

fn slot(label: &str) -> usize {
    BOUNDED_LABELS
        .iter()
        .position(|l| *l == label)
        .unwrap_or(BOUNDED_LABELS.len() - 1)
}

/// Owned label values, the map key: each value followed by `0xff`, a byte that never occurs
/// in UTF-8, in one allocation, so that comparing a key on lookup reads one place in memory
/// rather than one per label (with 10,000 keys in a family those reads miss the cache).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelKey(Box<[u8]>);

const SEP: u8 = 0xff;

impl LabelKey {
    fn new<'a>(values: impl Iterator<Item = &'a str>) -> LabelKey {
        let mut bytes = Vec::new();
        for v in values {
            bytes.extend_from_slice(v.as_bytes());
            bytes.push(SEP);
        }
        LabelKey(bytes.into_boxed_slice())
    }

    fn values(&self) -> impl Iterator<Item = &[u8]> {
        // Every value ends with SEP: split what comes before the last one (nothing: no values).
        let n = self.0.len().saturating_sub(1);
        (!self.0.is_empty())
            .then(|| self.0[..n].split(|b| *b == SEP))
            .into_iter()
            .flatten()
    }
}

impl Hash for LabelKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for v in self.values() {
            state.write(v);
            state.write_u8(SEP);
        }
    }
}

/// Borrowed label values, for lookups without allocation.
struct LabelRef<'a>(&'a [&'a str]);

impl Hash for LabelRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for v in self.0 {
            state.write(v.as_bytes());
            state.write_u8(SEP);
        }
    }
}

impl Equivalent<LabelKey> for LabelRef<'_> {
    fn equivalent(&self, key: &LabelKey) -> bool {
        let mut rest = &key.0[..];
        for v in self.0 {
            let v = v.as_bytes();
            match rest.get(..v.len() + 1) {
                Some(head) if head[..v.len()] == *v && head[v.len()] == SEP => {
                    rest = &rest[v.len() + 1..];
                }
                _ => return false,
            }
        }
        rest.is_empty()
    }
}

/// Rendered label pairs of one series.
pub type Labels = Vec<(&'static str, Box<str>)>;

/// A family of series of cell type `T`.
pub struct Family<T> {
    /// Full metric name, e.g. `llm_gateway_requests_total`.
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// All label names this family can carry, in order.
    pub label_names: &'static [&'static str],
    /// Which of `label_names` are rendered (configurable); disabled ones are folded together.
    enabled: Box<[bool]>,
    cap: usize,
    bound: Arc<ValueBound>,
    series: RwLock<HashMap<LabelKey, Arc<T>>>,
    overflowed: AtomicU64,
}

impl<T: Default> Family<T> {
    /// A family whose label `i` is on when `is_enabled(label_names[i])`.
    pub fn new(
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
        is_enabled: &dyn Fn(&str) -> bool,
        cap: usize,
    ) -> Family<T> {
        Family {
            name,
            help,
            label_names,
            enabled: label_names.iter().map(|l| is_enabled(l)).collect(),
            cap: cap.max(1),
            bound: Arc::new(ValueBound::new(usize::MAX)),
            series: RwLock::new(HashMap::new()),
            overflowed: AtomicU64::new(0),
        }
    }

    /// This family with its label values bounded (and folds counted) by `bound`.
    pub fn with_value_bound(mut self, bound: &Arc<ValueBound>) -> Family<T> {
        self.bound = bound.clone();
        self
    }

    /// Calls `f` with the cell for `values`, created on first use. Cheaper than [`get`]
    /// for a single update: no reference count is touched (a cache line both workers write).
    ///
    /// [`get`]: Family::get
    pub fn with<R>(&self, values: &[&str], f: impl FnOnce(&T) -> R) -> R {
        let mut buf = [""; 12];
        let values = self.masked(values, &mut buf);
        if let Some(cell) = self.series.read().get(&LabelRef(values)) {
            return f(cell);
        }
        f(&self.get_masked(values))
    }

    /// `values` with disabled labels blanked and values over the bound folded, in `buf`.
    fn masked<'a>(&self, values: &[&'a str], buf: &'a mut [&'a str; 12]) -> &'a [&'a str] {
        debug_assert_eq!(values.len(), self.label_names.len(), "{}", self.name);
        let n = values.len().min(buf.len());
        for (i, v) in values.iter().take(n).enumerate() {
            buf[i] = if self.enabled[i] {
                self.bound.fold(self.label_names[i], v)
            } else {
                ""
            };
        }
        &buf[..n]
    }

    /// The cell for `values` (one per label name, in order), created on first use.
    pub fn get(&self, values: &[&str]) -> Arc<T> {
        let mut buf = [""; 12];
        let values = self.masked(values, &mut buf);
        self.get_masked(values)
    }

    /// [`get`](Family::get) of values already masked (so a fold is counted once).
    fn get_masked(&self, values: &[&str]) -> Arc<T> {
        if let Some(cell) = self.series.read().get(&LabelRef(values)) {
            return cell.clone();
        }
        let mut map = self.series.write();
        if let Some(cell) = map.get(&LabelRef(values)) {
            return cell.clone();
        }
        let key = if map.len() >= self.cap {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            let fold_all = map.len() >= self.cap.saturating_mul(2);
            LabelKey::new(values.iter().enumerate().map(|(i, v)| {
                // `tool` (MCP tool names) comes from outside as `model` does.
                let fold = fold_all || matches!(self.label_names[i], "model" | "tool");
                match (self.enabled[i], fold) {
                    (false, _) => "",
                    (true, true) => OVERFLOW_VALUE,
                    (true, false) => v,
                }
            }))
        } else {
            LabelKey::new(values.iter().copied())
        };
        map.entry(key).or_default().clone()
    }

    /// How many label sets were folded into the overflow series.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.read().len()
    }

    /// True without series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The series sorted by label values, with only the enabled labels, for rendering.
    pub fn snapshot(&self) -> Vec<(Labels, Arc<T>)> {
        let map = self.series.read();
        let mut out: Vec<_> = map
            .iter()
            .map(|(k, v)| {
                let labels = self
                    .label_names
                    .iter()
                    .zip(k.values())
                    .zip(self.enabled.iter())
                    .filter(|(_, on)| **on)
                    .map(|((name, value), _)| (*name, String::from_utf8_lossy(value).into()))
                    .collect::<Vec<_>>();
                (labels, v.clone())
            })
            .collect();
        drop(map);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Cell(AtomicU64);

    #[test]
    fn keys_compare_value_by_value() {
        let k = LabelKey::new(["ab", "", "c"].into_iter());
        assert!(LabelRef(&["ab", "", "c"]).equivalent(&k));
        assert!(!LabelRef(&["a", "b", "c"]).equivalent(&k));
        assert!(!LabelRef(&["ab", "c"]).equivalent(&k));
        assert!(!LabelRef(&["ab", "", "c", ""]).equivalent(&k));
        assert!(!LabelRef(&["ab", "", ""]).equivalent(&k));
        let hash = |h: &dyn Fn(&mut std::hash::DefaultHasher)| {
            let mut s = std::hash::DefaultHasher::new();
            h(&mut s);
            s.finish()
        };
        assert_eq!(
            hash(&|s| k.hash(s)),
            hash(&|s| LabelRef(&["ab", "", "c"]).hash(s))
        );
        let values: Vec<&[u8]> = k.values().collect();
        assert_eq!(values, vec![&b"ab"[..], &b""[..], &b"c"[..]]);
        assert_eq!(LabelKey::new(["", ""].into_iter()).values().count(), 2);
        assert_eq!(LabelKey::new([].into_iter()).values().count(), 0);
    }

    #[test]
    fn same_labels_share_a_cell() {
        let f: Family<Cell> = Family::new("x_total", "x", &["a", "b"], &|_| true, 10);
        f.get(&["1", "2"]).0.fetch_add(1, Ordering::Relaxed);
        f.get(&["1", "2"]).0.fetch_add(1, Ordering::Relaxed);
        f.get(&["1", "3"]).0.fetch_add(1, Ordering::Relaxed);
        assert_eq!(f.len(), 2);
        assert_eq!(f.get(&["1", "2"]).0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn series_cap_folds_into_overflow() {
        let f: Family<Cell> = Family::new("x_total", "x", &["model"], &|_| true, 3);
        for i in 0..100 {
            f.get(&[&format!("junk-{i}")])
                .0
                .fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(f.len(), 4, "three real series and the overflow one");
        assert_eq!(f.overflowed(), 97);
        let snap = f.snapshot();
        let other = snap
            .iter()
            .find(|(l, _)| &*l[0].1 == OVERFLOW_VALUE)
            .expect("overflow series");
        assert_eq!(other.1.0.load(Ordering::Relaxed), 97);
    }

    #[test]
    fn overflow_keeps_the_team_label() {
        let f: Family<Cell> = Family::new("x_total", "x", &["team", "model"], &|_| true, 3);
        for i in 0..10 {
            let team = if i % 2 == 0 { "a" } else { "b" };
            f.get(&[team, &format!("m{i}")])
                .0
                .fetch_add(1, Ordering::Relaxed);
        }
        let snap = f.snapshot();
        let other = |team: &str| {
            snap.iter()
                .find(|(l, _)| &*l[0].1 == team && &*l[1].1 == OVERFLOW_VALUE)
                .map(|(_, c)| c.0.load(Ordering::Relaxed))
        };
        // m0, m1, m2 fill the cap; later models fold per team.
        assert_eq!(other("a"), Some(3));
        assert_eq!(other("b"), Some(4));
        assert_eq!(f.len(), 5);
    }

    #[test]
    fn long_values_fold_into_other_and_are_counted() {
        let bound = Arc::new(ValueBound::new(16));
        let f: Family<Cell> =
            Family::new("x_total", "x", &["team", "model"], &|_| true, 10).with_value_bound(&bound);
        let long = "m".repeat(1 << 20);
        for _ in 0..3 {
            f.with(&["t", &long], |c| c.0.fetch_add(1, Ordering::Relaxed));
        }
        f.get(&["t", "0123456789abcdef"])
            .0
            .fetch_add(1, Ordering::Relaxed);
        let snap = f.snapshot();
        assert_eq!(snap.len(), 2);
        let other = snap
            .iter()
            .find(|(l, _)| &*l[1].1 == OVERFLOW_VALUE)
            .expect("folded series");
        assert_eq!(other.1.0.load(Ordering::Relaxed), 3);
        assert_eq!(&*other.0[0].1, "t", "short labels are kept");
        assert_eq!(bound.folded("model"), 3);
        assert_eq!(bound.folded("team"), 0);
        assert_eq!(bound.folded("no-such-label"), 0);
    }

    #[test]
    fn disabled_labels_are_folded_and_hidden() {
        let f: Family<Cell> = Family::new("x_total", "x", &["team", "key"], &|l| l != "key", 10);
        f.get(&["t", "k1"]).0.fetch_add(1, Ordering::Relaxed);
        f.get(&["t", "k2"]).0.fetch_add(1, Ordering::Relaxed);
        let snap = f.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].0, vec![("team", "t".into())]);
        assert_eq!(snap[0].1.0.load(Ordering::Relaxed), 2);
    }
}
