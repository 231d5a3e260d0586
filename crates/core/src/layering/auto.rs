//! Size-aware layering, the algorithm of nixpkgs' `dockerTools` "auto-layer": the biggest
//! paths (by narSize) become the identities of layers one after another, and every other
//! path goes to the layer named by the set of those "primary" paths it is shared between.
//!
//! Each path carries a set of primary paths, initially empty (everything in one layer). When a
//! path `P` is promoted, in decreasing narSize order (equal sizes: the later path in path
//! order first), `P`'s set becomes `{P}`; for every path `D` in `P`'s closure (`P` excluded),
//! the primaries that themselves depend on `P` are dropped from `D`'s set (`P` speaks for
//! them), and `P` joins the set unless a primary left in it is itself in `P`'s closure (that
//! one is closer to `D`). Paths with the same set form a layer. Promotion stops before the
//! first step that would leave more distinct sets than the layer limit.
//!
//! Layers are listed by the total narSize of their closure, smallest first (so a layer comes
//! after the layers it depends on); within a layer, paths are sorted by (name, hash).

use std::collections::BTreeMap;

use super::popularity::path_string;
use crate::nix::dag::{IndexedGraph, Reach};

/// One layer: its paths and the primary paths that identify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoLayer {
    /// Node numbers, sorted by (name, hash).
    pub paths: Vec<u32>,
    /// The primary paths the layer is shared between (node numbers, sorted by (name, hash)).
    pub used_by: Vec<u32>,
    /// narSize of the layer's own paths.
    pub nar_size: u128,
    /// narSize of everything the layer's paths need, the layer included.
    pub closure_size: u128,
}

/// The sort key nixpkgs uses inside a layer: (name, hash), i.e. the path split at its first
/// `-`, the part after it compared first.
pub fn name_hash_key(path: &str) -> (&str, &str) {
    match path.split_once('-') {
        Some((hash, name)) => (name, hash),
        None => ("", path),
    }
}

/// Distinct primary sets, each numbered once, with how many paths carry each.
#[derive(Debug, Default)]
struct LayerSets {
    numbers: BTreeMap<Vec<u32>, u32>,
    sets: Vec<Vec<u32>>,
    members: Vec<usize>,
    live: usize,
}

impl LayerSets {
    fn number(&mut self, set: Vec<u32>) -> u32 {
        if let Some(&n) = self.numbers.get(&set) {
            return n;
        }
        let n = self.sets.len() as u32;
        self.sets.push(set.clone());
        self.members.push(0);
        self.numbers.insert(set, n);
        n
    }

    fn join(&mut self, set: u32) {
        if self.members[set as usize] == 0 {
            self.live += 1;
        }
        self.members[set as usize] += 1;
    }

    fn leave(&mut self, set: u32) {
        self.members[set as usize] -= 1;
        if self.members[set as usize] == 0 {
            self.live -= 1;
        }
    }
}

/// Split `graph` into at most `layer_limit` layers (at least 1), ordered as described in the
/// module documentation; equal closure sizes are ordered by their sorted path lists.
pub fn auto_layers(graph: &IndexedGraph<'_>, layer_limit: usize) -> Vec<AutoLayer> {
    let (sets, assigned) = assign_sets(graph, layer_limit.max(1));
    layers_of(graph, &sets, &assigned)
}

/// Give every path the set of paths that use it (its "users"), taking the largest paths first
/// as users, until one more would make more than `layer_limit` distinct sets. Returns the sets
/// and each path's set number.
fn assign_sets(graph: &IndexedGraph<'_>, layer_limit: usize) -> (LayerSets, Vec<u32>) {
    let n = graph.len();
    let mut sets = LayerSets::default();
    let empty = sets.number(Vec::new());
    let mut assigned = vec![empty; n];
    for _ in 0..n {
        sets.join(empty);
    }

    let mut by_size: Vec<u32> = (0..n as u32).collect();
    by_size.sort_by_key(|&v| std::cmp::Reverse((graph.nar_size(v as usize), v)));

    let mut in_closure = vec![u32::MAX; n];
    let mut in_referrers = vec![u32::MAX; n];
    let mut changes: Vec<(u32, u32)> = Vec::new();
    for (step, &primary) in by_size.iter().enumerate() {
        let stamp = step as u32;
        let closure = graph.reachable(&[primary], Reach::Closure, &mut in_closure, stamp);
        graph.reachable(&[primary], Reach::Referrers, &mut in_referrers, stamp);
        // The start is marked as reached; it is neither its own dependency nor its own user.
        in_closure[primary as usize] = u32::MAX;
        in_referrers[primary as usize] = u32::MAX;

        changes.clear();
        changes.push((primary, sets.number(vec![primary])));
        for &dep in &closure[1..] {
            let mut set: Vec<u32> = sets.sets[assigned[dep as usize] as usize]
                .iter()
                .copied()
                .filter(|&q| in_referrers[q as usize] != stamp)
                .collect();
            if !set.iter().any(|&q| in_closure[q as usize] == stamp) {
                let at = set.partition_point(|&q| q < primary);
                set.insert(at, primary);
            }
            changes.push((dep, sets.number(set)));
        }
        for change in changes.iter_mut() {
            let (node, new) = *change;
            let old = assigned[node as usize];
            sets.leave(old);
            sets.join(new);
            assigned[node as usize] = new;
            change.1 = old;
        }
        if sets.live > layer_limit {
            for &(node, old) in changes.iter().rev() {
                sets.leave(assigned[node as usize]);
                sets.join(old);
                assigned[node as usize] = old;
            }
            break;
        }
    }
    (sets, assigned)
}

/// The layers: the paths of each set, ordered by closure size, then by their paths.
fn layers_of(graph: &IndexedGraph<'_>, sets: &LayerSets, assigned: &[u32]) -> Vec<AutoLayer> {
    let n = graph.len();
    let names: Vec<String> = (0..n).map(|v| path_string(graph.path(v))).collect();
    let by_key = |a: &u32, b: &u32| {
        name_hash_key(&names[*a as usize]).cmp(&name_hash_key(&names[*b as usize]))
    };
    let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (v, &set) in assigned.iter().enumerate() {
        groups.entry(set).or_default().push(v as u32);
    }
    let mut seen = vec![u32::MAX; n];
    let mut layers: Vec<AutoLayer> = groups
        .into_iter()
        .enumerate()
        .map(|(stamp, (set, mut paths))| {
            paths.sort_by(by_key);
            let mut used_by = sets.sets[set as usize].clone();
            used_by.sort_by(by_key);
            let size = |v: &u32| u128::from(graph.nar_size(*v as usize));
            let nar_size = paths.iter().map(size).sum();
            let closure_size = graph
                .reachable(&paths, Reach::Closure, &mut seen, stamp as u32)
                .iter()
                .map(size)
                .sum();
            AutoLayer {
                paths,
                used_by,
                nar_size,
                closure_size,
            }
        })
        .collect();
    layers.sort_by(|a, b| {
        a.closure_size.cmp(&b.closure_size).then_with(|| {
            let a = a.paths.iter().map(|&v| name_hash_key(&names[v as usize]));
            let b = b.paths.iter().map(|&v| name_hash_key(&names[v as usize]));
            a.cmp(b)
        })
    });
    layers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layering::tests::{graph, name_of};

    fn names(ig: &IndexedGraph<'_>, layers: &[AutoLayer]) -> Vec<Vec<String>> {
        layers
            .iter()
            .map(|l| l.paths.iter().map(|&v| name_of(ig, v as usize)).collect())
            .collect()
    }

    #[test]
    fn big_paths_take_their_private_dependencies() {
        // app (10) → jre (500) → zlib (5), app → libc (100), jre → libc, libc → libc.
        let g = graph(&[
            ("app", &["jre", "libc"], 10),
            ("jre", &["zlib", "libc"], 500),
            ("libc", &["libc"], 100),
            ("zlib", &[], 5),
        ]);
        let ig = g.indexed();
        // Unlimited: jre, then libc, then app, then zlib become primaries, each its own layer.
        let all = auto_layers(&ig, 100);
        assert_eq!(names(&ig, &all), [["zlib"], ["libc"], ["jre"], ["app"]]);
        assert_eq!(all[3].closure_size, 615);
        // Two layers: jre is promoted (its closure joins it, app stays behind), then libc
        // would make three.
        let two = auto_layers(&ig, 2);
        assert_eq!(names(&ig, &two), [vec!["jre", "libc", "zlib"], vec!["app"]]);
        // One layer: nothing can be promoted.
        let one = auto_layers(&ig, 1);
        assert_eq!(names(&ig, &one), [["app", "jre", "libc", "zlib"]]);
    }

    #[test]
    fn shared_dependencies_get_a_layer_per_sharing_set() {
        // a (100) and b (90) both use s (1); a alone uses p (2).
        let g = graph(&[
            ("a", &["s", "p"], 100),
            ("b", &["s"], 90),
            ("p", &[], 2),
            ("s", &[], 1),
        ]);
        let ig = g.indexed();
        let layers = auto_layers(&ig, 3);
        assert_eq!(names(&ig, &layers), [vec!["s"], vec!["b"], vec!["a", "p"]]);
        assert_eq!(layers[1].used_by.len(), 1);
        assert_eq!(name_hash_key("/nix/store/h-n-1"), ("n-1", "/nix/store/h"));
    }
}
