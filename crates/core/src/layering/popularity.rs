//! The popularity contest of nixpkgs' `references-by-popularity`: every path gets a score that
//! grows with how many ways the roots lead to it, paths are listed most popular first, and the
//! list is cut into layers one path each, the remainder sharing the last layer.
//!
//! The score, restated from what the nixpkgs script computes by expanding the graph into
//! trees: let `routes(w)` be the number of distinct chains of references from any root to
//! `w` (1 for a root; self-references ignored). The popularity of `p` is the sum of
//! `routes(w)` over `p` itself and every path `w` that refers to `p`, directly or not. Both
//! parts are computed on the graph as it is (one topological pass, then one bitset sweep),
//! never by expanding it, in exact integers.

use num_bigint::BigUint;

use crate::nix::dag::{IndexedGraph, Reach, Tally};
use crate::nix::store_path::AbsStorePath;

/// Every path's popularity, indexed like `graph`.
pub fn popularity(graph: &IndexedGraph<'_>) -> Vec<BigUint> {
    match Scores::of(graph) {
        Scores::Machine(scores) => scores.into_iter().map(BigUint::from).collect(),
        Scores::Big(scores) => scores,
    }
}

/// Every path's popularity, indexed like a graph: in machine integers when they all fit
/// (nearly always), which sort and compare without an allocation per path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scores {
    Machine(Vec<u128>),
    Big(Vec<BigUint>),
}

impl Scores {
    /// The scores of `graph`, falling back to big integers when machine ones overflow.
    pub fn of(graph: &IndexedGraph<'_>) -> Scores {
        // 64-bit sums first, which move half the memory of 128-bit ones; they nearly always
        // fit.
        if let Some(scores) = scores::<u64>(graph) {
            return Scores::Machine(scores.into_iter().map(u128::from).collect());
        }
        match scores::<u128>(graph) {
            Some(scores) => Scores::Machine(scores),
            None => Scores::Big(scores::<BigUint>(graph).expect("big integers do not overflow")),
        }
    }

    /// The score of path `node`.
    pub fn get(&self, node: usize) -> BigUint {
        match self {
            Scores::Machine(scores) => BigUint::from(scores[node]),
            Scores::Big(scores) => scores[node].clone(),
        }
    }

    /// All paths, most popular first; see [`popularity_order`].
    pub fn order(&self, graph: &IndexedGraph<'_>) -> Vec<u32> {
        match self {
            // Nearly always: each score and its path number packed in one integer, so that
            // the sort compares integers instead of looking scores up.
            Scores::Machine(scores) if scores.iter().all(|&s| s < 1 << 96) => {
                let mut packed: Vec<u128> = (0..scores.len())
                    .map(|v| ((1 << 96) - 1 - scores[v]) << 32 | v as u128)
                    .collect();
                packed.sort_unstable();
                let order = packed.into_iter().map(|key| key as u32).collect();
                break_ties(graph, scores, order)
            }
            Scores::Machine(scores) => popularity_order(graph, scores),
            Scores::Big(scores) => popularity_order(graph, scores),
        }
    }
}

fn scores<T: Tally + From<u8>>(graph: &IndexedGraph<'_>) -> Option<Vec<T>> {
    let mut routes = vec![T::zero(); graph.len()];
    for &v in graph.topological() {
        let v = v as usize;
        if graph.is_root(v) {
            routes[v] = T::from(1);
        }
        for &child in graph.references(v) {
            let from = routes[v].clone();
            if !routes[child as usize].try_add(&from) {
                return None;
            }
        }
    }
    graph.reach_sums(&routes, Reach::Referrers)
}

/// The key nixpkgs breaks popularity ties with: the path with everything up to its first `-`
/// (the store dir and hash) moved to the end after a `-`, e.g.
/// `hello-2.12-/nix/store/<hash>`; compared as bytes.
pub fn tie_key(path: &str) -> String {
    let mut key = String::with_capacity(path.len() + 1);
    push_tie_key(&mut key, path);
    key
}

/// Append `path`'s [`tie_key`] to `keys`.
fn push_tie_key(keys: &mut String, path: &str) {
    match path.split_once('-') {
        Some((head, rest)) => {
            keys.push_str(rest);
            keys.push('-');
            keys.push_str(head);
        }
        None => keys.push_str(path),
    }
}

/// The absolute path as a string.
pub(crate) fn path_string(path: &AbsStorePath) -> String {
    path.to_path_string()
}

/// All paths, most popular first; equal popularity in increasing [`tie_key`] order.
pub fn popularity_order<T: Ord>(graph: &IndexedGraph<'_>, scores: &[T]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..graph.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| scores[b as usize].cmp(&scores[a as usize]));
    break_ties(graph, scores, order)
}

/// `order` (most popular first) with each run of equal scores in increasing [`tie_key`]
/// order, keys built only for the paths that tie.
fn break_ties<T: Ord>(graph: &IndexedGraph<'_>, scores: &[T], mut order: Vec<u32>) -> Vec<u32> {
    let mut start = 0;
    while start < order.len() {
        let score = &scores[order[start] as usize];
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&v| scores[v as usize] == *score)
                .count();
        if end - start > 1 {
            // The keys of the tied paths side by side in one string, compared as slices.
            let mut keys = String::with_capacity((end - start) * 96);
            let mut path = String::with_capacity(128);
            let mut keyed: Vec<(usize, usize, u32)> = Vec::with_capacity(end - start);
            for &v in &order[start..end] {
                let stored = graph.path(v as usize);
                path.clear();
                path.push_str(stored.store_dir.as_str());
                path.push('/');
                path.push_str(stored.path.as_base_name());
                let from = keys.len();
                push_tie_key(&mut keys, &path);
                keyed.push((from, keys.len(), v));
            }
            let keys = keys.as_bytes();
            keyed.sort_unstable_by(|a, b| keys[a.0..a.1].cmp(&keys[b.0..b.1]).then(a.2.cmp(&b.2)));
            for (slot, (_, _, v)) in order[start..end].iter_mut().zip(keyed) {
                *slot = v;
            }
        }
        start = end;
    }
    order
}

/// Cut an ordered list into at most `layers` layers (at least 1): one item per layer, except
/// that when there are more items than layers the last layer takes all the rest.
pub fn limit_layers<T: Clone>(order: &[T], layers: usize) -> Vec<Vec<T>> {
    let layers = layers.max(1);
    if order.len() <= layers {
        return order.iter().map(|x| vec![x.clone()]).collect();
    }
    let (single, rest) = order.split_at(layers - 1);
    let mut out: Vec<Vec<T>> = single.iter().map(|x| vec![x.clone()]).collect();
    out.push(rest.to_vec());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layering::tests::{graph, name_of};

    #[test]
    fn the_example_of_the_nixpkgs_comment() {
        // A→B, A→G, B→C, B→E, C→D, C→E, D→F, E→F: F 9, E 5, D 4, C 3, B 2, G 2, A 1.
        let g = graph(&[
            ("a", &["b", "g"], 1),
            ("b", &["c", "e"], 1),
            ("c", &["d", "e"], 1),
            ("d", &["f"], 1),
            ("e", &["f"], 1),
            ("f", &["f"], 1),
            ("g", &[], 1),
        ]);
        let ig = g.indexed();
        let scores = popularity(&ig);
        let by_name: Vec<(String, u32)> = (0..ig.len())
            .map(|v| (name_of(&ig, v), u32::try_from(&scores[v]).unwrap()))
            .collect();
        let expected = [
            ("a", 1),
            ("b", 2),
            ("c", 3),
            ("d", 4),
            ("e", 5),
            ("f", 9),
            ("g", 2),
        ];
        assert_eq!(by_name, expected.map(|(n, s)| (n.to_string(), s)).to_vec());
        let order: Vec<String> = popularity_order(&ig, &scores)
            .into_iter()
            .map(|v| name_of(&ig, v as usize))
            .collect();
        assert_eq!(order, ["f", "e", "d", "c", "b", "g", "a"]);
    }

    #[test]
    fn two_roots_and_a_shared_leaf() {
        // x→z, y→z: z is reached from two roots.
        let g = graph(&[("x", &["z"], 1), ("y", &["z"], 1), ("z", &[], 1)]);
        let ig = g.indexed();
        let scores = popularity(&ig);
        let mut by_name: Vec<(String, u32)> = (0..ig.len())
            .map(|v| (name_of(&ig, v), u32::try_from(&scores[v]).unwrap()))
            .collect();
        by_name.sort();
        // z: routes(z) = 2, plus routes(x) = routes(y) = 1.
        let expected = [("x", 1), ("y", 1), ("z", 4)];
        assert_eq!(by_name, expected.map(|(n, s)| (n.to_string(), s)).to_vec());
    }

    #[test]
    fn huge_scores_stay_exact() {
        // A chain of 70 diamonds doubles the routes 70 times: past u64, exact in u128.
        let mut nodes: Vec<(String, Vec<String>)> = Vec::new();
        for i in 0..70 {
            let next = format!("n{:02}", i + 1);
            nodes.push((
                format!("n{i:02}"),
                vec![format!("l{i:02}"), format!("r{i:02}")],
            ));
            nodes.push((format!("l{i:02}"), vec![next.clone()]));
            nodes.push((format!("r{i:02}"), vec![next]));
        }
        nodes.push(("n70".to_string(), vec![]));
        let spec: Vec<(&str, Vec<&str>, u64)> = nodes
            .iter()
            .map(|(n, r)| (n.as_str(), r.iter().map(String::as_str).collect(), 1))
            .collect();
        let spec: Vec<(&str, &[&str], u64)> = spec
            .iter()
            .map(|(n, r, s)| (*n, r.as_slice(), *s))
            .collect();
        let g = graph(&spec);
        let ig = g.indexed();
        let scores = popularity(&ig);
        let last = (0..ig.len()).find(|&v| name_of(&ig, v) == "n70").unwrap();
        // routes(n_i) = 2^i, routes(l_i) = routes(r_i) = 2^i; the sum over all 211 paths is
        // 3·(2^70 - 1) + 2^70.
        let expected = BigUint::from(4u8) * (BigUint::from(1u8) << 70usize) - BigUint::from(3u8);
        assert_eq!(scores[last], expected);
    }

    #[test]
    fn ties_and_limits() {
        assert_eq!(
            tie_key("/nix/store/abc-hello-2.1"),
            "hello-2.1-/nix/store/abc"
        );
        assert_eq!(tie_key("nodash"), "nodash");
        assert_eq!(limit_layers(&[1, 2, 3], 5), [vec![1], vec![2], vec![3]]);
        assert_eq!(limit_layers(&[1, 2, 3], 3), [vec![1], vec![2], vec![3]]);
        assert_eq!(limit_layers(&[1, 2, 3, 4], 2), [vec![1], vec![2, 3, 4]]);
        assert_eq!(limit_layers(&[1, 2, 3], 1), [vec![1, 2, 3]]);
        assert_eq!(limit_layers::<u8>(&[], 4), Vec::<Vec<u8>>::new());
    }
}
