//! A metric family: label values to a shared cell, with a series cap.
//!
//! Lookups take a read lock on a hash map keyed by the label values, without allocating; a
//! new series takes the write lock once. When a family holds `cap` series, a new label set has
//! its `model` (the one label whose values come from outside: clients and providers) replaced
//! by `__other__`, so junk model names cannot exhaust memory while spend stays attributed to
//! its team and key. Should that still pass twice the cap, every label becomes `__other__`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::{Equivalent, HashMap};
use parking_lot::RwLock;

/// Label value of the overflow series.
pub const OVERFLOW_VALUE: &str = "__other__";

/// Owned label values, the map key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelKey(Box<[Box<str>]>);

impl Hash for LabelKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_values(self.0.iter().map(|s| &**s), state);
    }
}

/// Borrowed label values, for lookups without allocation.
struct LabelRef<'a>(&'a [&'a str]);

impl Hash for LabelRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_values(self.0.iter().copied(), state);
    }
}

impl Equivalent<LabelKey> for LabelRef<'_> {
    fn equivalent(&self, key: &LabelKey) -> bool {
        self.0.len() == key.0.len() && self.0.iter().zip(key.0.iter()).all(|(a, b)| *a == &**b)
    }
}

fn hash_values<'a, H: Hasher>(values: impl Iterator<Item = &'a str>, state: &mut H) {
    for v in values {
        state.write(v.as_bytes());
        state.write_u8(0xff);
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
            series: RwLock::new(HashMap::new()),
            overflowed: AtomicU64::new(0),
        }
    }

    /// The cell for `values` (one per label name, in order), created on first use.
    pub fn get(&self, values: &[&str]) -> Arc<T> {
        debug_assert_eq!(values.len(), self.label_names.len(), "{}", self.name);
        let mut buf = [""; 8];
        let n = values.len().min(buf.len());
        for (i, v) in values.iter().take(n).enumerate() {
            buf[i] = if self.enabled[i] { v } else { "" };
        }
        let values = &buf[..n];
        if let Some(cell) = self.series.read().get(&LabelRef(values)) {
            return cell.clone();
        }
        let mut map = self.series.write();
        if let Some(cell) = map.get(&LabelRef(values)) {
            return cell.clone();
        }
        let key: Box<[Box<str>]> = if map.len() >= self.cap {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            let fold_all = map.len() >= self.cap.saturating_mul(2);
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let fold = fold_all || self.label_names[i] == "model";
                    match (self.enabled[i], fold) {
                        (false, _) => "",
                        (true, true) => OVERFLOW_VALUE,
                        (true, false) => v,
                    }
                    .into()
                })
                .collect()
        } else {
            values.iter().map(|v| (*v).into()).collect()
        };
        map.entry(LabelKey(key)).or_default().clone()
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
                    .zip(k.0.iter())
                    .zip(self.enabled.iter())
                    .filter(|(_, on)| **on)
                    .map(|((name, value), _)| (*name, value.clone()))
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
