//! The semantic cache's vector index, in process: unit vectors partitioned by group (scope,
//! model, endpoint, stream flag), bounded by entries and bytes, oldest out first.
//!
//! A group is searched exactly (a cosine against every vector) while it is small; past
//! `ann_above_entries` an HNSW graph (`instant-distance`) is built over a snapshot of it, off
//! the request path, and searches read the graph's nearest candidates plus an exact scan of
//! the vectors added since the snapshot. The graph is rebuilt when that tail outgrows a quarter
//! of the snapshot. Evicted vectors stay in a graph until its rebuild but are never returned:
//! a candidate is checked against the group's live items.
//!
//! Why the graph is off by default: measured with `tollgate cache measure-index` (release
//! build, this 2-core machine, 1,536 dimensions, random unit vectors, near-duplicate queries),
//! an HNSW search was slower than the exact scan at 500 vectors (0.87 ms vs 0.66 ms) and at
//! 2,000 (3.7 ms vs 2.7 ms), and building the graph took 9 s and 82 s of CPU; with the scan in
//! eight lanes, at 500 vectors: exact 0.18 ms, graph 0.20 ms, build 2.2 s. Random vectors are HNSW's worst case (real embeddings cluster), but nothing here
//! shows a size below the default `max_entries` (10,000) where the graph pays, so
//! `ann_above_entries` defaults to 50,000: set it lower only where `measure-index` on your
//! vectors says so.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use instant_distance::{Builder, HnswMap, Point, Search};

use super::key::Key;

/// Nearest candidates read from the graph before the exact check.
const CANDIDATES: usize = 8;

/// A unit vector, shared between the live items and a graph's snapshot.
#[derive(Clone)]
pub struct Unit(pub Arc<[f32]>);

impl Point for Unit {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

/// The dot product (the cosine of unit vectors), in eight independent sums: a single running
/// sum is a chain the compiler may not reorder (float addition is not associative), so it was
/// not vectorised (1 ns a multiply-add measured); eight lanes are.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

struct Item {
    seq: u64,
    key: Key,
    vector: Unit,
    added: tokio::time::Instant,
}

/// An HNSW graph over a group's items up to `upto` (their sequence numbers as values).
pub struct Ann {
    map: HnswMap<Unit, u64>,
    upto: u64,
    len: usize,
}

#[derive(Default)]
struct Group {
    items: VecDeque<Item>,
    ann: Option<Arc<Ann>>,
    building: bool,
}

impl Group {
    /// Items added after the graph's snapshot, from their index in `items`.
    fn tail_start(&self) -> usize {
        match &self.ann {
            Some(a) => self.items.partition_point(|i| i.seq <= a.upto),
            None => 0,
        }
    }
}

/// A graph to build off the request path: the snapshot of one group.
pub struct BuildJob {
    group: [u8; 16],
    points: Vec<Unit>,
    seqs: Vec<u64>,
    upto: u64,
}

impl BuildJob {
    /// Builds the graph (CPU work: run it on a blocking thread).
    pub fn build(self) -> ([u8; 16], Ann) {
        let len = self.points.len();
        let map = Builder::default()
            .seed(0x70_11_6a_7e)
            .build(self.points, self.seqs);
        (
            self.group,
            Ann {
                map,
                upto: self.upto,
                len,
            },
        )
    }
}

/// The whole index.
pub struct VectorIndex {
    groups: HashMap<[u8; 16], Group>,
    /// Insertion order across groups, for eviction.
    order: VecDeque<[u8; 16]>,
    bytes: usize,
    next_seq: u64,
    dims: Option<usize>,
    max_entries: usize,
    max_bytes: usize,
    ann_above: usize,
}

/// The nearest live entry found, and a graph to build if the group has outgrown its own.
pub struct Nearest {
    /// Key and similarity of the nearest live entry of the group, if any.
    pub best: Option<(Key, f32)>,
    /// Set when the caller should build a graph (then [`VectorIndex::install`] it).
    pub build: Option<BuildJob>,
}

impl VectorIndex {
    /// An empty index bounded by `max_entries` and `max_bytes`, with graphs for groups above
    /// `ann_above` vectors.
    pub fn new(max_entries: usize, max_bytes: usize, ann_above: usize) -> VectorIndex {
        VectorIndex {
            groups: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            dims: None,
            max_entries,
            max_bytes,
            ann_above: ann_above.max(2),
        }
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// No vectors held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Bytes held (vectors and their bookkeeping; graphs not counted).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The dimension of the vectors held, once one is.
    pub fn dims(&self) -> Option<usize> {
        self.dims
    }

    /// Vectors covered by graphs.
    pub fn ann_vectors(&self) -> usize {
        self.groups
            .values()
            .filter_map(|g| g.ann.as_ref().map(|a| a.len))
            .sum()
    }

    fn size(dims: usize) -> usize {
        dims * 4 + std::mem::size_of::<Item>()
    }

    /// Adds `vector` (a unit vector) under `key`; returns how many old vectors it evicted.
    pub fn insert(&mut self, group: [u8; 16], key: Key, vector: Arc<[f32]>) -> u64 {
        let size = Self::size(vector.len());
        let mut evicted = 0;
        while !self.order.is_empty()
            && (self.order.len() >= self.max_entries || self.bytes + size > self.max_bytes)
        {
            self.evict_oldest();
            evicted += 1;
        }
        if self.order.is_empty() {
            self.dims = None;
        }
        self.dims.get_or_insert(vector.len());
        self.bytes += size;
        self.next_seq += 1;
        self.order.push_back(group);
        self.groups.entry(group).or_default().items.push_back(Item {
            seq: self.next_seq,
            key,
            vector: Unit(vector),
            added: tokio::time::Instant::now(),
        });
        evicted
    }

    fn evict_oldest(&mut self) {
        let Some(g) = self.order.pop_front() else {
            return;
        };
        // The oldest vector overall is the oldest of its group.
        if let Some(group) = self.groups.get_mut(&g) {
            if let Some(old) = group.items.pop_front() {
                self.bytes -= Self::size(old.vector.0.len());
            }
            if group.items.is_empty() {
                self.groups.remove(&g);
            }
        }
    }

    /// The nearest live (younger than `ttl`) entry of `group` to `query`.
    pub fn nearest(&mut self, group: [u8; 16], query: &[f32], ttl: Duration) -> Nearest {
        let ann_above = self.ann_above;
        let Some(g) = self.groups.get_mut(&group) else {
            return Nearest {
                best: None,
                build: None,
            };
        };
        let now = tokio::time::Instant::now();
        let live = |i: &Item| now.saturating_duration_since(i.added) < ttl;
        let mut best: Option<(Key, f32)> = None;
        let mut consider = |key: Key, s: f32| {
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((key, s));
            }
        };
        if let Some(ann) = &g.ann {
            let mut search = Search::default();
            let q = Unit(Arc::from(query));
            for found in ann.map.search(&q, &mut search).take(CANDIDATES) {
                let seq = *found.value;
                if let Ok(i) = g.items.binary_search_by_key(&seq, |i| i.seq) {
                    let item = &g.items[i];
                    if live(item) {
                        consider(item.key, dot(&item.vector.0, query));
                    }
                }
            }
        }
        let tail = g.tail_start();
        for item in g.items.range(tail..) {
            if live(item) {
                consider(item.key, dot(&item.vector.0, query));
            }
        }
        let covered = g.ann.as_ref().map_or(0, |a| a.len);
        let uncovered = g.items.len() - tail;
        let build = if g.items.len() >= ann_above && !g.building && uncovered * 4 > covered {
            g.building = true;
            Some(BuildJob {
                group,
                points: g.items.iter().map(|i| i.vector.clone()).collect(),
                seqs: g.items.iter().map(|i| i.seq).collect(),
                upto: g.items.back().map_or(0, |i| i.seq),
            })
        } else {
            None
        };
        Nearest { best, build }
    }

    /// Installs a graph built from a [`BuildJob`] (dropped if its group has gone).
    pub fn install(&mut self, group: [u8; 16], ann: Ann) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.building = false;
            g.ann = Some(Arc::new(ann));
        }
    }

    /// A build that could not run: the group may ask again.
    pub fn abandon(&mut self, group: [u8; 16]) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.building = false;
        }
    }
}

/// One row of [`measure`]: the cost of a search at `entries` vectors.
pub struct Measured {
    /// Vectors in the group.
    pub entries: usize,
    /// Mean exact scan, microseconds.
    pub exact_us: f64,
    /// Mean graph search (candidates and their exact check), microseconds.
    pub ann_us: f64,
    /// Graph build, milliseconds.
    pub build_ms: f64,
    /// Share of queries whose graph answer equals the exact one.
    pub recall: f64,
}

/// Measures exact scans against graph searches in one group of `dims`-dimensional random unit
/// vectors, at each size of `sizes`, with `queries` near-duplicate queries (`tollgate cache
/// measure-index`; the numbers behind the `ann_above_entries` default).
pub fn measure(dims: usize, sizes: &[usize], queries: usize) -> Vec<Measured> {
    let mut rng = 0x5eed_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 20_001) as f32 / 10_000.0 - 1.0
    };
    let mut unit_vector = |jitter: Option<&[f32]>| {
        let mut v: Vec<f32> = match jitter {
            Some(base) => base.iter().map(|x| x + 0.02 * next()).collect(),
            None => (0..dims).map(|_| next()).collect(),
        };
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    };
    let group = [1u8; 16];
    let ttl = Duration::from_secs(3_600);
    let mut out = Vec::new();
    for &entries in sizes {
        let mut exact = VectorIndex::new(entries + 1, usize::MAX, usize::MAX);
        let mut graph = VectorIndex::new(entries + 1, usize::MAX, 2);
        let mut stored = Vec::with_capacity(entries);
        for i in 0..entries {
            let v: Arc<[f32]> = Arc::from(unit_vector(None));
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            exact.insert(group, k, v.clone());
            graph.insert(group, k, v.clone());
            stored.push(v);
        }
        let t = std::time::Instant::now();
        let build_ms = match graph.nearest(group, &stored[0], ttl).build {
            Some(job) => {
                let (g, ann) = job.build();
                graph.install(g, ann);
                t.elapsed().as_secs_f64() * 1e3
            }
            None => 0.0,
        };
        let qs: Vec<Vec<f32>> = (0..queries)
            .map(|i| unit_vector(Some(&stored[(i * 7_919) % entries])))
            .collect();
        let t = std::time::Instant::now();
        let want: Vec<_> = qs
            .iter()
            .map(|q| exact.nearest(group, q, ttl).best.map(|b| b.0))
            .collect();
        let exact_us = t.elapsed().as_secs_f64() * 1e6 / queries as f64;
        let t = std::time::Instant::now();
        let got: Vec<_> = qs
            .iter()
            .map(|q| graph.nearest(group, q, ttl).best.map(|b| b.0))
            .collect();
        let ann_us = t.elapsed().as_secs_f64() * 1e6 / queries as f64;
        let same = want.iter().zip(&got).filter(|(a, b)| a == b).count();
        out.push(Measured {
            entries,
            exact_us,
            ann_us,
            build_ms,
            recall: same as f64 / queries as f64,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic unit vector near `base` (`noise` small) in `dims` dimensions.
    fn vector(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        unit(&mut v);
        v
    }

    fn unit(v: &mut [f32]) {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
    }

    fn key(i: u64) -> Key {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_le_bytes());
        k
    }

    const G: [u8; 16] = [7; 16];
    const TTL: Duration = Duration::from_secs(3600);

    #[test]
    fn exact_and_graph_find_the_same_nearest_and_never_an_evicted_one() {
        let dims = 16;
        let mut ix = VectorIndex::new(200, usize::MAX, 100);
        for i in 0..200 {
            ix.insert(G, key(i), Arc::from(vector(i, dims)));
        }
        // A query near entry 121: exact while no graph is built.
        let near = |i: u64| {
            let mut q = vector(i, dims);
            q[0] += 0.05;
            unit(&mut q);
            q
        };
        let q = near(121);
        let first = ix.nearest(G, &q, TTL);
        assert_eq!(first.best.map(|b| b.0), Some(key(121)));
        let job = first
            .build
            .expect("200 vectors are above the bound: a graph is asked for");
        assert!(
            ix.nearest(G, &q, TTL).build.is_none(),
            "one build at a time"
        );
        let (g, ann) = job.build();
        ix.install(g, ann);
        assert_eq!(ix.ann_vectors(), 200);
        // Through the graph, the same answers; no second build while the tail is small.
        for i in [0, 121, 199] {
            let found = ix.nearest(G, &near(i), TTL);
            assert_eq!(found.best.map(|b| b.0), Some(key(i)));
            assert!(found.build.is_none());
        }
        // 100 new entries evict the 100 oldest (121 is not among them; 21 is): the new ones are found by
        // the exact scan of the tail, and the graph, which still holds 21's vector, must not
        // return it.
        for i in 1_000..1_100 {
            ix.insert(G, key(i), Arc::from(vector(i, dims)));
        }
        assert_eq!(ix.len(), 200);
        let after = ix.nearest(G, &near(21), TTL);
        assert!(
            after.best.is_some_and(|(k, _)| k != key(21)),
            "an evicted entry was returned"
        );
        assert_eq!(
            ix.nearest(G, &near(1_034), TTL).best.map(|b| b.0),
            Some(key(1_034))
        );
        // The tail (100) outgrew a quarter of the graph (200): a rebuild is asked for.
        let rebuild = after.build.expect("rebuild");
        let (g, ann) = rebuild.build();
        ix.install(g, ann);
        assert_eq!(
            ix.nearest(G, &near(1_034), TTL).best.map(|b| b.0),
            Some(key(1_034))
        );
        assert_eq!(
            ix.nearest(G, &near(150), TTL).best.map(|b| b.0),
            Some(key(150))
        );
    }

    #[test]
    fn groups_are_apart_and_bounds_hold() {
        let mut ix = VectorIndex::new(3, usize::MAX, 1_000);
        let other = [9u8; 16];
        ix.insert(G, key(1), Arc::from(vector(1, 8)));
        ix.insert(other, key(2), Arc::from(vector(1, 8)));
        let q = vector(1, 8);
        assert_eq!(ix.nearest(G, &q, TTL).best.map(|b| b.0), Some(key(1)));
        assert_eq!(ix.nearest(other, &q, TTL).best.map(|b| b.0), Some(key(2)));
        ix.insert(G, key(3), Arc::from(vector(3, 8)));
        assert_eq!(ix.insert(G, key(4), Arc::from(vector(4, 8))), 1);
        assert_eq!(ix.len(), 3);
        // The oldest (key 1) went; the other group's entry stays.
        assert_ne!(ix.nearest(G, &q, TTL).best.map(|b| b.0), Some(key(1)));
        assert_eq!(ix.nearest(other, &q, TTL).best.map(|b| b.0), Some(key(2)));
        let mut by_bytes = VectorIndex::new(100, 2 * VectorIndex::size(8), 1_000);
        for i in 0..5 {
            by_bytes.insert(G, key(i), Arc::from(vector(i, 8)));
        }
        assert_eq!(by_bytes.len(), 2);
        assert!(by_bytes.bytes() <= 2 * VectorIndex::size(8));
    }
}
