//! An index-based view of a closure graph for whole-graph algorithms (closure sizes, layering):
//! dense node numbers in path order, reference lists without self-references, a topological
//! order, and sums of a per-path weight over everything a path reaches or is reached from,
//! computed with 64-wide bitset sweeps instead of one traversal per path.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use num_bigint::BigUint;

use super::closure::ClosureError;
use super::path_info::PathInfo;
use super::store_path::AbsStorePath;

/// A number that weights can be summed in; `try_add` reports overflow instead of wrapping so
/// that a caller can start again with a wider type.
pub trait Tally: Clone {
    fn zero() -> Self;
    /// Add `other` to `self`; `false` (and `self` unspecified) if the result does not fit.
    fn try_add(&mut self, other: &Self) -> bool;
}

/// The machine integers add with overflow detection.
macro_rules! checked_tally {
    ($($t:ty),*) => {$(
        impl Tally for $t {
            fn zero() -> Self {
                0
            }
            fn try_add(&mut self, other: &Self) -> bool {
                match self.checked_add(*other) {
                    Some(sum) => {
                        *self = sum;
                        true
                    }
                    None => false,
                }
            }
        }
    )*};
}

checked_tally!(u64, u128);

impl Tally for BigUint {
    fn zero() -> Self {
        BigUint::ZERO
    }
    fn try_add(&mut self, other: &Self) -> bool {
        *self += other;
        true
    }
}

/// Which way a sum over reachable paths looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The path and every path it references, directly or not (its closure).
    Closure,
    /// The path and every path that references it, directly or not.
    Referrers,
}

/// The edges of a closure graph over node numbers, with a topological order: what
/// [`ClosureGraph`](super::closure::ClosureGraph) keeps so that they are built once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adjacency {
    references: Vec<Vec<u32>>,
    referrers: Vec<Vec<u32>>,
    /// Every path after all paths that refer to it: a depth-first order from the roots.
    /// (The order the other way, [`bottom_up_order`], is made when a sum needs it: most
    /// callers never do.)
    topological: Vec<u32>,
}

/// A closure graph reduced to what whole-graph algorithms look at: the paths in path order,
/// their NAR sizes and the edges. What [`graph_json`](super::graph_json) reads a graph into
/// for layering, without the rest of each path's info.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathGraph {
    paths: Vec<AbsStorePath>,
    nar_sizes: Vec<u64>,
    adjacency: Adjacency,
}

impl PathGraph {
    /// `paths` (sorted, without duplicates), their sizes and the edges between them.
    pub(crate) fn from_parts(
        paths: Vec<AbsStorePath>,
        nar_sizes: Vec<u64>,
        adjacency: Adjacency,
    ) -> PathGraph {
        PathGraph {
            paths,
            nar_sizes,
            adjacency,
        }
    }

    /// The graph with its paths numbered, for the algorithms.
    pub fn indexed(&self) -> IndexedGraph<'_> {
        IndexedGraph::from_parts(
            self.paths.iter().collect(),
            self.nar_sizes.clone(),
            &self.adjacency,
        )
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// Hashes a store path's hash part, which is already uniformly distributed: folds it 8 bytes
/// at a time with a multiply (FxHash's mix), much cheaper than SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HashPartHasher(u64);

impl Hasher for HashPartHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

impl Adjacency {
    /// Number the paths of `infos`, which must be sorted by path without duplicates, checking
    /// that every reference is among them and that there is no cycle other than a
    /// self-reference.
    pub fn build(infos: &[&PathInfo]) -> Result<Adjacency, ClosureError> {
        // Look paths up by hash part, kept inline in a compact table: a binary search over
        // the scattered path infos would miss the cache at every step. Hash parts shared by
        // two paths (not in a real store) or of unusual length fall back to that search.
        type HashPart = [u8; 32];
        const SHARED: u32 = u32::MAX;
        let key = |path: &AbsStorePath| HashPart::try_from(path.path.hash_part().as_bytes()).ok();
        let mut by_hash: HashMap<HashPart, u32, BuildHasherDefault<HashPartHasher>> =
            HashMap::with_capacity_and_hasher(infos.len(), Default::default());
        let mut all_keyed = true;
        for (index, info) in infos.iter().enumerate() {
            match key(&info.path) {
                Some(hash) => {
                    by_hash
                        .entry(hash)
                        .and_modify(|i| *i = SHARED)
                        .or_insert(index as u32);
                }
                None => all_keyed = false,
            }
        }
        let search = |path: &AbsStorePath| infos.binary_search_by(|i| i.path.cmp(path)).ok();
        let index_of = |path: &AbsStorePath| match key(path).and_then(|k| by_hash.get(&k)) {
            Some(&SHARED) => search(path),
            // The hash parts are equal: compare the rest.
            Some(&i) => {
                let found = &infos[i as usize].path;
                (found.path.name() == path.path.name() && found.store_dir == path.store_dir)
                    .then_some(i as usize)
            }
            None if !all_keyed => search(path),
            None => None,
        };
        let mut references = Vec::with_capacity(infos.len());
        let mut referrers = vec![Vec::new(); infos.len()];
        for (index, info) in infos.iter().enumerate() {
            let mut refs = Vec::with_capacity(info.references.len());
            for reference in &info.references {
                let target =
                    index_of(reference).ok_or_else(|| ClosureError::DanglingReference {
                        referrer: info.path.to_string(),
                        missing: reference.to_string(),
                    })?;
                if target != index {
                    refs.push(target as u32);
                    referrers[target].push(index as u32);
                }
            }
            references.push(refs);
        }
        let paths: Vec<&AbsStorePath> = infos.iter().map(|i| &i.path).collect();
        Self::with_referrers(&paths, references, referrers)
    }

    /// The edges of `paths` (sorted without duplicates) from each path's references as node
    /// numbers, ascending, without itself; checks that there is no cycle.
    pub(crate) fn from_references(
        paths: &[&AbsStorePath],
        references: Vec<Vec<u32>>,
    ) -> Result<Adjacency, ClosureError> {
        // Counted first, so that each list is allocated once at its size.
        let mut counts = vec![0usize; paths.len()];
        for &target in references.iter().flatten() {
            counts[target as usize] += 1;
        }
        let mut referrers: Vec<Vec<u32>> = counts.into_iter().map(Vec::with_capacity).collect();
        for (index, targets) in references.iter().enumerate() {
            for &target in targets {
                referrers[target as usize].push(index as u32);
            }
        }
        Self::with_referrers(paths, references, referrers)
    }

    /// Both directions of the edges, with the orders computed from them.
    fn with_referrers(
        paths: &[&AbsStorePath],
        references: Vec<Vec<u32>>,
        referrers: Vec<Vec<u32>>,
    ) -> Result<Adjacency, ClosureError> {
        let topological = depth_first_order(paths, &references)?;
        Ok(Adjacency {
            references,
            referrers,
            topological,
        })
    }
}

/// Reverse post-order of a depth-first search along `edges` from the paths no edge leads to:
/// every path comes after all paths with an edge to it, and paths reached from the same
/// starts stay close together, which makes the batches of [`IndexedGraph::reach_sums`] touch
/// few paths. Names a path on a cycle if there is one.
fn depth_first_order(
    paths: &[&AbsStorePath],
    edges: &[Vec<u32>],
) -> Result<Vec<u32>, ClosureError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let n = paths.len();
    let mut referred = vec![false; n];
    for &child in edges.iter().flatten() {
        referred[child as usize] = true;
    }
    let mut marks = vec![Mark::New; n];
    let mut post = Vec::with_capacity(n);
    let mut stack: Vec<(u32, usize)> = Vec::new();
    // Roots first; anything left unvisited afterwards hangs below a cycle.
    let starts = (0..n).filter(|&v| !referred[v]).chain(0..n);
    for start in starts {
        if marks[start] != Mark::New {
            continue;
        }
        marks[start] = Mark::Open;
        stack.push((start as u32, 0));
        while let Some((v, next)) = stack.last_mut() {
            let node = *v as usize;
            match edges[node].get(*next) {
                Some(&child) => {
                    *next += 1;
                    match marks[child as usize] {
                        Mark::New => {
                            marks[child as usize] = Mark::Open;
                            stack.push((child, 0));
                        }
                        Mark::Open => {
                            let path = paths[child as usize];
                            return Err(ClosureError::Cycle(path.to_string()));
                        }
                        Mark::Done => {}
                    }
                }
                None => {
                    marks[node] = Mark::Done;
                    post.push(node as u32);
                    stack.pop();
                }
            }
        }
    }
    post.reverse();
    Ok(post)
}

/// An order with every path after all paths it refers to, the most widely used first: by
/// decreasing number of reference chains from the roots (as a float, which keeps the order
/// of the exact counts or ties them), then children before parents in `topological`.
///
/// A path referred to by `p` has at least as many chains as `p`, so this is an order in which
/// references come first. Putting heavily shared paths together makes the few batches of
/// [`IndexedGraph::reach_sums`] that hold them, which touch most of the graph, few.
fn bottom_up_order(topological: &[u32], references: &[Vec<u32>]) -> Vec<u32> {
    let n = topological.len();
    let mut chains = vec![0f64; n];
    let mut position = vec![0u32; n];
    for (at, &v) in topological.iter().enumerate() {
        let v = v as usize;
        position[v] = at as u32;
        if chains[v] == 0.0 {
            // Nothing refers to it (it would have a chain count already): a root.
            chains[v] = 1.0;
        }
        for &child in &references[v] {
            chains[child as usize] += chains[v];
        }
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        chains[b]
            .total_cmp(&chains[a])
            .then(position[b].cmp(&position[a]))
    });
    order
}

/// A closure graph with paths numbered `0..len()` in path order: the paths, their NAR sizes
/// and the edges, which is all that whole-graph algorithms look at.
#[derive(Debug, Clone)]
pub struct IndexedGraph<'g> {
    paths: Vec<&'g AbsStorePath>,
    nar_sizes: Vec<u64>,
    adjacency: Cow<'g, Adjacency>,
}

impl<'g> IndexedGraph<'g> {
    /// Number the paths of `infos`, which must be sorted by path without duplicates, checking
    /// that every reference is among them and that there is no cycle other than a
    /// self-reference.
    pub fn new(infos: &[&'g PathInfo]) -> Result<IndexedGraph<'g>, ClosureError> {
        let adjacency = Adjacency::build(infos)?;
        Ok(IndexedGraph {
            paths: infos.iter().map(|i| &i.path).collect(),
            nar_sizes: infos.iter().map(|i| i.nar_size).collect(),
            adjacency: Cow::Owned(adjacency),
        })
    }

    /// `infos` (sorted by path) with the edges [`Adjacency::build`] computed for them.
    pub fn with_adjacency(infos: &'g [PathInfo], adjacency: &'g Adjacency) -> Self {
        Self::from_parts(
            infos.iter().map(|i| &i.path).collect(),
            infos.iter().map(|i| i.nar_size).collect(),
            adjacency,
        )
    }

    /// `paths` (sorted, without duplicates) with their NAR sizes and the edges between them.
    pub fn from_parts(
        paths: Vec<&'g AbsStorePath>,
        nar_sizes: Vec<u64>,
        adjacency: &'g Adjacency,
    ) -> Self {
        assert_eq!(paths.len(), nar_sizes.len(), "a size per path");
        assert_eq!(
            paths.len(),
            adjacency.references.len(),
            "edges of these paths"
        );
        IndexedGraph {
            paths,
            nar_sizes,
            adjacency: Cow::Borrowed(adjacency),
        }
    }

    /// The graph without the paths `drop` selects and without the references to them (what
    /// they refer to stays), renumbered in path order.
    pub fn without(&self, drop: impl Fn(usize) -> bool) -> IndexedGraph<'g> {
        let mut renumbered = vec![u32::MAX; self.len()];
        let (mut paths, mut nar_sizes) = (Vec::new(), Vec::new());
        let nodes = self.paths.iter().zip(&self.nar_sizes);
        for (v, (slot, (path, size))) in renumbered.iter_mut().zip(nodes).enumerate() {
            if !drop(v) {
                *slot = paths.len() as u32;
                paths.push(*path);
                nar_sizes.push(*size);
            }
        }
        let kept = |edges: &[Vec<u32>]| -> Vec<Vec<u32>> {
            edges
                .iter()
                .enumerate()
                .filter(|&(v, _)| renumbered[v] != u32::MAX)
                .map(|(_, targets)| {
                    targets
                        .iter()
                        .map(|&w| renumbered[w as usize])
                        .filter(|&w| w != u32::MAX)
                        .collect()
                })
                .collect()
        };
        let references = kept(&self.adjacency.references);
        let referrers = kept(&self.adjacency.referrers);
        // Dropping paths keeps a topological order topological.
        let topological: Vec<u32> = self
            .adjacency
            .topological
            .iter()
            .map(|&v| renumbered[v as usize])
            .filter(|&v| v != u32::MAX)
            .collect();
        IndexedGraph {
            paths,
            nar_sizes,
            adjacency: Cow::Owned(Adjacency {
                references,
                referrers,
                topological,
            }),
        }
    }

    /// The edges, to keep for [`with_adjacency`](Self::with_adjacency).
    pub fn into_adjacency(self) -> Adjacency {
        self.adjacency.into_owned()
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The store path of `node`.
    pub fn path(&self, node: usize) -> &'g AbsStorePath {
        self.paths[node]
    }

    /// The NAR size of `node`.
    pub fn nar_size(&self, node: usize) -> u64 {
        self.nar_sizes[node]
    }

    /// The node of `path`, if it is in the graph.
    pub fn find(&self, path: &AbsStorePath) -> Option<usize> {
        self.paths.binary_search_by(|p| (*p).cmp(path)).ok()
    }

    /// The paths `node` refers to, without itself.
    pub fn references(&self, node: usize) -> &[u32] {
        &self.adjacency.references[node]
    }

    /// The paths that refer to `node`, without itself.
    pub fn referrers(&self, node: usize) -> &[u32] {
        &self.adjacency.referrers[node]
    }

    /// Paths no other path refers to.
    pub fn is_root(&self, node: usize) -> bool {
        self.adjacency.referrers[node].is_empty()
    }

    /// Every path, each after all the paths that refer to it.
    pub fn topological(&self) -> &[u32] {
        &self.adjacency.topological
    }

    /// Every path reachable from `starts` in direction `reach`, the starts included, each once.
    /// `seen` must be `len()` long; it is left marked with `stamp` for the paths returned.
    pub fn reachable(
        &self,
        starts: &[u32],
        reach: Reach,
        seen: &mut [u32],
        stamp: u32,
    ) -> Vec<u32> {
        let edges = match reach {
            Reach::Closure => &self.adjacency.references,
            Reach::Referrers => &self.adjacency.referrers,
        };
        let mut out = Vec::new();
        let mut todo: Vec<u32> = Vec::new();
        for &s in starts {
            if seen[s as usize] != stamp {
                seen[s as usize] = stamp;
                todo.push(s);
            }
        }
        while let Some(v) = todo.pop() {
            out.push(v);
            for &w in &edges[v as usize] {
                if seen[w as usize] != stamp {
                    seen[w as usize] = stamp;
                    todo.push(w);
                }
            }
        }
        out
    }

    /// For every path, the sum of `weights` over the path itself and every other path in
    /// direction `reach`, each counted once; `None` if a sum overflows `T`.
    ///
    /// Paths are taken 64 at a time in a depth-first topological order; one sweep per batch
    /// carries a bitmask "which of the 64 are in my sum" along the edges, visiting only the
    /// paths that the batch touches, and adds the weight of each member its mask names (a
    /// handful per visit on closures of real shape: fewer additions than building a table of
    /// subset sums per batch would take).
    pub fn reach_sums<T: Tally>(&self, weights: &[T], reach: Reach) -> Option<Vec<T>> {
        assert_eq!(weights.len(), self.len(), "one weight per path");
        // Masks flow from each batch member to the paths whose sum it belongs to, in an order
        // where a path is handled after every path that flows into it.
        let (flow, order): (&[Vec<u32>], Vec<u32>) = match reach {
            Reach::Closure => (
                &self.adjacency.referrers,
                bottom_up_order(&self.adjacency.topological, &self.adjacency.references),
            ),
            Reach::Referrers => (
                &self.adjacency.references,
                self.adjacency.topological.clone(),
            ),
        };
        let n = self.len();
        let (starts, targets) = ranked_edges(&order, flow);
        let mut sums_by_rank = vec![T::zero(); n];
        let mut mask = vec![0u64; n];
        // Paths waiting to be handled, as a bitset over ranks: every path a batch reaches is
        // ranked after the paths that reach it, so one forward scan handles them in order.
        let mut waiting = vec![0u64; n.div_ceil(64)];
        let mut members: Vec<T> = Vec::with_capacity(64);
        for (batch_index, batch) in order.chunks(64).enumerate() {
            let first = batch_index * 64;
            members.clear();
            members.extend(batch.iter().map(|&v| weights[v as usize].clone()));
            for bit in 0..batch.len() {
                mask[first + bit] |= 1 << bit;
                waiting[(first + bit) / 64] |= 1 << ((first + bit) % 64);
            }
            let mut last = first + batch.len() - 1;
            let mut word = first / 64;
            while word <= last / 64 {
                let pending = waiting[word];
                if pending == 0 {
                    word += 1;
                    continue;
                }
                waiting[word] = pending & (pending - 1);
                let position = word * 64 + pending.trailing_zeros() as usize;
                let bits = std::mem::take(&mut mask[position]);
                for &r in &targets[starts[position]..starts[position + 1]] {
                    let r = r as usize;
                    if mask[r] == 0 {
                        waiting[r / 64] |= 1 << (r % 64);
                        last = last.max(r);
                    }
                    mask[r] |= bits;
                }
                let sum = &mut sums_by_rank[position];
                let mut rest = bits;
                while rest != 0 {
                    let member = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    if !sum.try_add(&members[member]) {
                        return None;
                    }
                }
            }
        }
        let mut sums = vec![T::zero(); n];
        for (position, sum) in sums_by_rank.into_iter().enumerate() {
            sums[order[position] as usize] = sum;
        }
        Some(sums)
    }
}

/// `order`'s edges in rank space (a path's rank is its position in `order`), in one flat
/// array with the targets of each path ascending, so a sweep walks memory mostly forwards:
/// path at rank `r` flows to `targets[starts[r]..starts[r + 1]]`.
fn ranked_edges(order: &[u32], flow: &[Vec<u32>]) -> (Vec<usize>, Vec<u32>) {
    let mut rank = vec![0u32; order.len()];
    for (position, &v) in order.iter().enumerate() {
        rank[v as usize] = position as u32;
    }
    let mut starts = Vec::with_capacity(order.len() + 1);
    let mut targets = Vec::with_capacity(flow.iter().map(Vec::len).sum());
    starts.push(0usize);
    for &v in order {
        let from = targets.len();
        targets.extend(flow[v as usize].iter().map(|&w| rank[w as usize]));
        targets[from..].sort_unstable();
        starts.push(targets.len());
    }
    (starts, targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::closure::ClosureGraph;

    fn info(name: &str, refs: &[&str], size: u64) -> PathInfo {
        let path = |n: &str| format!("/nix/store/{}-{n}", "0".repeat(31) + &n[..1]);
        let json = serde_json::json!({
            "narHash": "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky",
            "narSize": size,
            "path": path(name),
            "references": refs.iter().map(|r| path(r)).collect::<Vec<_>>(),
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn sums_count_shared_paths_once() {
        // a -> b, a -> c, b -> d, c -> d, d -> d (self-reference)
        let g = ClosureGraph::from_infos([
            info("a", &["b", "c"], 1),
            info("b", &["d"], 10),
            info("c", &["d"], 100),
            info("d", &["d"], 1000),
        ])
        .unwrap();
        let ig = IndexedGraph::new(&g.infos().collect::<Vec<_>>()).unwrap();
        let ones = vec![1u64; 4];
        assert_eq!(ig.reach_sums(&ones, Reach::Closure).unwrap(), [4, 2, 2, 1]);
        assert_eq!(
            ig.reach_sums(&ones, Reach::Referrers).unwrap(),
            [1, 2, 2, 4]
        );
        let sizes: Vec<u64> = g.infos().map(|i| i.nar_size).collect();
        assert_eq!(
            ig.reach_sums(&sizes, Reach::Closure).unwrap(),
            [1111, 1010, 1100, 1000]
        );
        assert!(
            ig.reach_sums(&[u64::MAX, 1, 1, 1], Reach::Referrers)
                .is_none()
        );
        let position = |v: u32| ig.topological().iter().position(|&w| w == v).unwrap();
        for v in 0..4 {
            for &w in ig.references(v as usize) {
                assert!(position(v) < position(w));
            }
        }
    }

    #[test]
    fn sums_over_more_than_one_batch() {
        // A chain of 150 paths: each reaches all paths after it.
        let names: Vec<String> = (0..150).map(|i| format!("p{i:03}")).collect();
        let infos: Vec<PathInfo> = (0..150)
            .map(|i| {
                let path = |k: usize| {
                    format!(
                        "/nix/store/{}-{}",
                        crate::nix::nix32::encode(&[k as u8; 20]),
                        names[k]
                    )
                };
                let refs: Vec<String> = if i + 1 < 150 {
                    vec![path(i + 1)]
                } else {
                    vec![]
                };
                serde_json::from_value(serde_json::json!({
                    "narHash": "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky",
                    "narSize": 1, "path": path(i), "references": refs,
                }))
                .unwrap()
            })
            .collect();
        let g = ClosureGraph::from_infos(infos).unwrap();
        let ig = IndexedGraph::new(&g.infos().collect::<Vec<_>>()).unwrap();
        let by_name = |sums: Vec<u64>| -> Vec<u64> {
            let mut pairs: Vec<(&str, u64)> = (0..150)
                .map(|v| (ig.path(v).path.name(), sums[v]))
                .collect();
            pairs.sort();
            pairs.into_iter().map(|(_, s)| s).collect()
        };
        let ones = vec![1u64; 150];
        let closure = by_name(ig.reach_sums(&ones, Reach::Closure).unwrap());
        let referrers = by_name(ig.reach_sums(&ones, Reach::Referrers).unwrap());
        assert_eq!(closure, (1..=150).rev().collect::<Vec<u64>>());
        assert_eq!(referrers, (1..=150).collect::<Vec<u64>>());
    }
}
