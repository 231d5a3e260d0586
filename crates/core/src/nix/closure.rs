//! Closure graphs: the `exportReferencesGraph` array (path-info objects with `closureSize`,
//! sorted by path), built from a lookup of path infos, checked for completeness, and rendered
//! in the shapes nixpkgs' `closureInfo` writes (`registration`, `store-paths`,
//! `total-nar-size`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::dag::{Adjacency, IndexedGraph, PathGraph, Reach};
use super::path_info::PathInfo;
use super::store_path::AbsStorePath;

/// Errors building or checking a closure graph.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClosureError {
    #[error("path '{0}' is not valid (not registered in the store or not in the graph)")]
    Missing(String),
    #[error("path '{referrer}' refers to '{missing}', which is not in the graph")]
    DanglingReference { referrer: String, missing: String },
    #[error("path '{0}' appears twice in the graph")]
    Duplicate(String),
    #[error("the graph has a cycle through '{0}' (only self-references are allowed)")]
    Cycle(String),
}

/// A closed set of path infos, keyed by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosureGraph {
    /// Sorted by path, without duplicates.
    nodes: Vec<PathInfo>,
    /// The edges over node numbers (path order), built once with the graph.
    adjacency: Adjacency,
}

impl ClosureGraph {
    /// Build from path infos, checking there are no duplicates and that every reference is in
    /// the set. `closureSize` is (re)computed.
    pub fn from_infos(
        infos: impl IntoIterator<Item = PathInfo>,
    ) -> Result<ClosureGraph, ClosureError> {
        let mut graph = Self::from_infos_keeping_sizes(infos)?;
        graph.fill_closure_sizes();
        Ok(graph)
    }

    /// Like [`from_infos`](Self::from_infos), with the same checks, but every `closureSize`
    /// stays as read (or absent): for callers that never look at it, such as layering (which
    /// sums what it needs itself), so that they do not pay for one more pass over the graph.
    pub fn from_infos_keeping_sizes(
        infos: impl IntoIterator<Item = PathInfo>,
    ) -> Result<ClosureGraph, ClosureError> {
        let mut nodes: Vec<PathInfo> = infos.into_iter().collect();
        // Graphs usually come sorted by path (Nix writes them so).
        if !nodes.windows(2).all(|w| w[0].path < w[1].path) {
            Self::sort_unique(&mut nodes)?;
        }
        let adjacency = Adjacency::build(&nodes.iter().collect::<Vec<_>>())?;
        Ok(ClosureGraph { nodes, adjacency })
    }

    /// Sort the infos by path; the first path met again (in input order) is an error.
    fn sort_unique(infos: &mut [PathInfo]) -> Result<(), ClosureError> {
        let mut seen = BTreeSet::new();
        if let Some(again) = infos.iter().find(|i| !seen.insert(&i.path)) {
            return Err(ClosureError::Duplicate(again.path.to_string()));
        }
        infos.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(())
    }

    /// The position of `path` among the nodes.
    fn position(&self, path: &AbsStorePath) -> Option<usize> {
        self.nodes.binary_search_by(|i| i.path.cmp(path)).ok()
    }

    /// The graph with paths numbered in path order, for whole-graph algorithms.
    pub fn indexed(&self) -> IndexedGraph<'_> {
        IndexedGraph::with_adjacency(&self.nodes, &self.adjacency)
    }

    /// The paths, their NAR sizes and the edges, without the rest of the infos.
    pub fn to_path_graph(&self) -> PathGraph {
        PathGraph::from_parts(
            self.nodes.iter().map(|i| i.path.clone()).collect(),
            self.nodes.iter().map(|i| i.nar_size).collect(),
            self.adjacency.clone(),
        )
    }

    /// The closure of `roots`, asking `lookup` for each path's info.
    pub fn closure_of<E>(
        roots: impl IntoIterator<Item = AbsStorePath>,
        mut lookup: impl FnMut(&AbsStorePath) -> Result<Option<PathInfo>, E>,
    ) -> Result<Result<ClosureGraph, ClosureError>, E> {
        let mut nodes = BTreeMap::new();
        let mut todo: Vec<AbsStorePath> = roots.into_iter().collect();
        while let Some(path) = todo.pop() {
            if nodes.contains_key(&path) {
                continue;
            }
            let Some(info) = lookup(&path)? else {
                return Ok(Err(ClosureError::Missing(path.to_string())));
            };
            todo.extend(
                info.references
                    .iter()
                    .filter(|r| !nodes.contains_key(*r))
                    .cloned(),
            );
            nodes.insert(path, info);
        }
        Ok(ClosureGraph::from_infos(nodes.into_values()))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn get(&self, path: &AbsStorePath) -> Option<&PathInfo> {
        self.position(path).map(|i| &self.nodes[i])
    }

    /// Path infos sorted by path.
    pub fn infos(&self) -> impl Iterator<Item = &PathInfo> {
        self.nodes.iter()
    }

    /// Paths that no other path refers to.
    pub fn roots(&self) -> BTreeSet<&AbsStorePath> {
        let referenced: BTreeSet<&AbsStorePath> = self
            .nodes
            .iter()
            .flat_map(|i| i.references.iter().filter(move |r| **r != i.path))
            .collect();
        self.nodes
            .iter()
            .map(|i| &i.path)
            .filter(|p| !referenced.contains(p))
            .collect()
    }

    /// Set every `closureSize`.
    fn fill_closure_sizes(&mut self) {
        let nar_sizes: Vec<u128> = self.nodes.iter().map(|i| u128::from(i.nar_size)).collect();
        let sizes = self
            .indexed()
            .reach_sums(&nar_sizes, Reach::Closure)
            .expect("sums of u64 sizes fit in u128");
        for (info, size) in self.nodes.iter_mut().zip(sizes) {
            info.closure_size = Some(u64::try_from(size).unwrap_or(u64::MAX));
        }
    }

    /// Every path reachable from `path`, itself included.
    pub fn closure_paths(&self, path: &AbsStorePath) -> BTreeSet<&AbsStorePath> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![path];
        while let Some(p) = todo.pop() {
            if let Some(info) = self.get(p)
                && seen.insert(&info.path)
            {
                todo.extend(info.references.iter());
            }
        }
        seen
    }

    /// The `exportReferencesGraph` JSON array: compact, keys sorted, sorted by path.
    pub fn to_export_json(&self) -> String {
        let infos: Vec<&PathInfo> = self.nodes.iter().collect();
        serde_json::to_string(&infos).unwrap_or_default()
    }

    /// nixpkgs `closureInfo`'s `registration` file (`nix-store --load-db` input).
    pub fn registration(&self) -> String {
        let mut out = String::new();
        for info in self.nodes.iter() {
            let _ = write!(
                out,
                "{}\n{}\n{}\n\n{}\n",
                info.path,
                info.nar_hash.0.to_typed_nix32(),
                info.nar_size,
                info.references.len()
            );
            for r in &info.references {
                let _ = writeln!(out, "{r}");
            }
        }
        out
    }

    /// nixpkgs `closureInfo`'s `store-paths` file: one path a line, sorted.
    pub fn store_paths(&self) -> String {
        self.nodes.iter().map(|i| format!("{}\n", i.path)).collect()
    }

    /// nixpkgs `closureInfo`'s `total-nar-size` file.
    pub fn total_nar_size(&self) -> String {
        format!("{}\n", self.nodes.iter().map(|i| i.nar_size).sum::<u64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::path_info::parse_path_infos;

    fn info(path: &str, refs: &[&str], size: u64) -> PathInfo {
        let json = serde_json::json!({
            "narHash": "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky",
            "narSize": size,
            "path": format!("/nix/store/{path}"),
            "references": refs.iter().map(|r| format!("/nix/store/{r}")).collect::<Vec<_>>(),
        });
        serde_json::from_value(json).unwrap()
    }

    const A: &str = "6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-a";
    const B: &str = "fkckkyn8s8bc544nrrrp4v4f0j21fvkz-b";
    const C: &str = "i9pmrzmpshapij2kin22pff6fc2adavx-c";

    #[test]
    fn sizes_and_roots() {
        let g =
            ClosureGraph::from_infos([info(A, &[A], 10), info(B, &[A], 5), info(C, &[A, B], 1)])
                .unwrap();
        let sizes: Vec<u64> = g.infos().map(|i| i.closure_size.unwrap()).collect();
        assert_eq!(sizes, vec![10, 15, 16]);
        assert_eq!(
            g.roots()
                .into_iter()
                .map(|p| p.path.name().to_string())
                .collect::<Vec<_>>(),
            ["c"]
        );
        let again = parse_path_infos(&g.to_export_json()).unwrap();
        assert_eq!(ClosureGraph::from_infos(again).unwrap(), g);
    }

    #[test]
    fn rejects_bad_graphs() {
        assert!(matches!(
            ClosureGraph::from_infos([info(B, &[A], 5)]),
            Err(ClosureError::DanglingReference { .. })
        ));
        assert!(matches!(
            ClosureGraph::from_infos([info(A, &[B], 1), info(B, &[A], 1)]),
            Err(ClosureError::Cycle(_))
        ));
        assert!(matches!(
            ClosureGraph::from_infos([info(A, &[], 1), info(A, &[], 1)]),
            Err(ClosureError::Duplicate(_))
        ));
    }
}
