//! Splitting a closure into container image layers, as nixpkgs' `dockerTools` does: the
//! popularity contest ([`popularity`]) and the size-aware "auto-layer" ([`auto`]). Works on
//! any closure graph, wherever it came from; the result is a list of layers, each a list
//! of store paths, plus per-path explanations on request.

pub mod auto;
pub mod popularity;

use std::collections::BTreeSet;
use std::io::{self, Write};

use num_bigint::BigUint;
use serde::{Serialize, Serializer};

use crate::nix::closure::ClosureGraph;
use crate::nix::dag::IndexedGraph;
use crate::nix::store_path::AbsStorePath;
use popularity::Scores;

/// Errors of the layering step.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayeringError {
    #[error(
        "max-layers {max_layers} leaves no layer for store paths: 1 is kept for the \
         customisation layer and {base_layers} for the base image"
    )]
    NoStoreLayers {
        max_layers: usize,
        base_layers: usize,
    },
    #[error("excluded path '{0}' is not in the graph")]
    ExcludedNotInGraph(String),
}

/// A layers JSON that is not one: one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayersJsonError(pub String);

/// Parse the layers JSON `mklayers` writes and `mkimage` reads: a list of lists of absolute store paths, or the object
/// `mklayers --explain` prints (its `layers` member).
pub fn parse_layers(text: &str) -> Result<Vec<Vec<String>>, LayersJsonError> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Shape {
        List(Vec<Vec<String>>),
        Explained { layers: Vec<Vec<String>> },
    }
    let bad = |e: &dyn std::fmt::Display| {
        LayersJsonError(format!(
            "layers JSON: {e} (expected a list of lists of store paths)"
        ))
    };
    // Syntax errors first, with their line and column.
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e))?;
    match serde_json::from_value(value) {
        Ok(Shape::List(l)) | Ok(Shape::Explained { layers: l }) => Ok(l),
        Err(_) => Err(bad(&"wrong shape")),
    }
}

/// Which layering to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Algorithm {
    /// nixpkgs' popularity contest with `limit_layers` (the `dockerTools` default).
    #[default]
    #[cfg_attr(
        feature = "clap",
        value(help = "nixpkgs' popularity contest: most referenced paths first, one layer each")
    )]
    Popularity,
    /// nixpkgs' size-aware `auto-layer`.
    #[cfg_attr(
        feature = "clap",
        value(help = "nixpkgs' size-aware auto-layer: largest paths get their own layers")
    )]
    Auto,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Popularity => "popularity",
            Algorithm::Auto => "auto",
        }
    }
}

/// How many layers the image may have in total, and how many of them the base image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerBudget {
    pub max_layers: usize,
    pub base_layers: usize,
}

impl LayerBudget {
    /// Layers left for store paths: one layer is always kept for the customisation layer.
    pub fn store_layers(self) -> Result<usize, LayeringError> {
        self.max_layers
            .checked_sub(1 + self.base_layers)
            .filter(|&n| n >= 1)
            .ok_or(LayeringError::NoStoreLayers {
                max_layers: self.max_layers,
                base_layers: self.base_layers,
            })
    }
}

/// What to layer and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayeringRequest {
    pub algorithm: Algorithm,
    pub budget: LayerBudget,
    /// Paths that must not appear in any layer. The popularity contest drops them from the
    /// graph first (with the references to them), as nixpkgs does with its helper paths; the
    /// auto-layer computes layers with them and leaves them out of the result (dropping
    /// layers that end up empty), as nixpkgs' `auto-layer.py` does with its ignore list.
    pub exclude: BTreeSet<AbsStorePath>,
    /// Fill in [`Layering::layer_info`] and [`Layering::paths`].
    pub explain: bool,
}

/// Why one path landed where it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathExplanation<'g> {
    pub path: &'g AbsStorePath,
    /// Index into [`Layering::layers`].
    pub layer: usize,
    pub popularity: Popularity,
    pub nar_size: u64,
    pub closure_size: u64,
}

/// Sizes of one layer, and for the auto-layer the primary paths it is named by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerExplanation<'g> {
    pub paths: usize,
    pub nar_size: u128,
    pub closure_size: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_by: Option<Vec<&'g AbsStorePath>>,
}

/// A popularity score: exact; written as a JSON number up to 2^53 - 1 (what every JSON reader
/// holds exactly), as a decimal string beyond.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Popularity(pub BigUint);

impl Serialize for Popularity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match u64::try_from(&self.0) {
            Ok(n) if n < (1 << 53) => s.serialize_u64(n),
            _ => s.collect_str(&self.0),
        }
    }
}

/// The result: layers, most shared first, and the reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Layering<'g> {
    pub algorithm: &'static str,
    pub max_layers: usize,
    pub base_layers: usize,
    pub store_layers: usize,
    pub layers: Vec<Vec<&'g AbsStorePath>>,
    /// Per layer sizes, when explaining.
    #[serde(rename = "layerInfo")]
    pub layer_info: Vec<LayerExplanation<'g>>,
    /// Every layered path in layer order, when explaining.
    pub paths: Vec<PathExplanation<'g>>,
}

/// Layer `whole` (a [`ClosureGraph`]'s or a [`PathGraph`]'s `indexed()`) as `request` says.
///
/// [`PathGraph`]: crate::nix::dag::PathGraph
pub fn layer<'g>(
    whole: &IndexedGraph<'g>,
    request: &LayeringRequest,
) -> Result<Layering<'g>, LayeringError> {
    let store_layers = request.budget.store_layers()?;
    if let Some(missing) = request.exclude.iter().find(|p| whole.find(p).is_none()) {
        return Err(LayeringError::ExcludedNotInGraph(missing.to_string()));
    }
    let excluded = |v: usize| request.exclude.contains(whole.path(v));
    // The popularity contest runs on the graph without the excluded paths; the auto-layer on
    // the whole graph (it leaves excluded paths out of its result).
    let reduced = match request.algorithm {
        Algorithm::Popularity if !request.exclude.is_empty() => Some(whole.without(excluded)),
        _ => None,
    };
    let indexed = reduced.as_ref().unwrap_or(whole);
    let scores = match request.algorithm {
        Algorithm::Auto if !request.explain => Scores::Machine(Vec::new()),
        _ => Scores::of(indexed),
    };

    let (groups, used_by): (Vec<Vec<u32>>, Vec<Option<Vec<u32>>>) = match request.algorithm {
        Algorithm::Popularity => {
            let order = scores.order(indexed);
            let groups = popularity::limit_layers(&order, store_layers);
            let none = vec![None; groups.len()];
            (groups, none)
        }
        Algorithm::Auto => auto::auto_layers(indexed, store_layers)
            .into_iter()
            .filter_map(|layer| {
                let kept: Vec<u32> = layer
                    .paths
                    .into_iter()
                    .filter(|&v| !excluded(v as usize))
                    .collect();
                (!kept.is_empty()).then_some((kept, Some(layer.used_by)))
            })
            .unzip(),
    };

    let (layer_info, paths) = if request.explain {
        explain(indexed, &groups, used_by, &scores)
    } else {
        (Vec::new(), Vec::new())
    };
    let path_of = |v: u32| indexed.path(v as usize);
    let layers = groups
        .into_iter()
        .map(|g| g.into_iter().map(path_of).collect())
        .collect();
    Ok(Layering {
        algorithm: request.algorithm.name(),
        max_layers: request.budget.max_layers,
        base_layers: request.budget.base_layers,
        store_layers,
        layers,
        layer_info,
        paths,
    })
}

/// Per layer and per path sizes (and, for auto layers, the users), for `--explain`. Closure
/// sizes are of the graph that was layered (it may have lost paths).
fn explain<'g>(
    indexed: &IndexedGraph<'g>,
    groups: &[Vec<u32>],
    used_by: Vec<Option<Vec<u32>>>,
    scores: &Scores,
) -> (Vec<LayerExplanation<'g>>, Vec<PathExplanation<'g>>) {
    let path_of = |v: u32| indexed.path(v as usize);
    let sizes: Vec<u128> = (0..indexed.len())
        .map(|v| u128::from(indexed.nar_size(v)))
        .collect();
    let closure_sizes = indexed
        .reach_sums(&sizes, crate::nix::dag::Reach::Closure)
        .expect("sums of u64 sizes fit in u128");
    let mut paths = Vec::with_capacity(indexed.len());
    let mut layer_info = Vec::with_capacity(groups.len());
    let mut seen = vec![u32::MAX; indexed.len()];
    for (index, (group, used_by)) in groups.iter().zip(used_by).enumerate() {
        let size = |v: &u32| u128::from(indexed.nar_size(*v as usize));
        let closure = indexed.reachable(
            group,
            crate::nix::dag::Reach::Closure,
            &mut seen,
            index as u32,
        );
        layer_info.push(LayerExplanation {
            paths: group.len(),
            nar_size: group.iter().map(size).sum(),
            closure_size: closure.iter().map(size).sum(),
            used_by: used_by.map(|u| u.into_iter().map(path_of).collect()),
        });
        for &v in group {
            paths.push(PathExplanation {
                path: indexed.path(v as usize),
                layer: index,
                popularity: Popularity(scores.get(v as usize)),
                nar_size: indexed.nar_size(v as usize),
                closure_size: u64::try_from(closure_sizes[v as usize]).unwrap_or(u64::MAX),
            });
        }
    }
    (layer_info, paths)
}

impl Layering<'_> {
    /// Write [`layers`](Self::layers) as JSON, byte for byte as `serde_json`'s pretty printer
    /// with a one-space indent writes it (the layout of the layer files nixpkgs writes), but
    /// copying each path whole: escaping every path character by character was a tenth of
    /// `mklayers`' time on a closure of thousands of paths. Base names never need escaping
    /// (their characters are checked); a store dir is checked once.
    pub fn write_layers_json(&self, out: &mut impl Write) -> io::Result<()> {
        if self.layers.is_empty() {
            return out.write_all(b"[]");
        }
        let mut plain_dir: Option<&str> = None;
        out.write_all(b"[")?;
        for (index, layer) in self.layers.iter().enumerate() {
            out.write_all(if index == 0 { b"\n [" } else { b",\n [" })?;
            for (at, path) in layer.iter().enumerate() {
                out.write_all(if at == 0 { b"\n  " } else { b",\n  " })?;
                let (dir, base) = (path.store_dir.as_str(), path.path.as_base_name());
                if plain_dir != Some(dir) && path.store_dir.is_json_plain() {
                    plain_dir = Some(dir);
                }
                if plain_dir == Some(dir) {
                    for piece in [b"\"", dir.as_bytes(), b"/", base.as_bytes(), b"\""] {
                        out.write_all(piece)?;
                    }
                } else {
                    let quoted = serde_json::to_string(path).map_err(io::Error::other)?;
                    out.write_all(quoted.as_bytes())?;
                }
            }
            out.write_all(if layer.is_empty() { b"]" } else { b"\n ]" })?;
        }
        out.write_all(b"\n]")
    }
}

/// Every path of `graph` with its popularity, most popular first (the order nixpkgs'
/// `closure-graph.py` prints).
pub fn popularity_ranking(graph: &ClosureGraph) -> Vec<(AbsStorePath, BigUint)> {
    let indexed = graph.indexed();
    let scores = Scores::of(&indexed);
    scores
        .order(&indexed)
        .into_iter()
        .map(|v| (indexed.path(v as usize).clone(), scores.get(v as usize)))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nix::dag::IndexedGraph;
    use crate::nix::nix32;
    use crate::nix::path_info::PathInfo;

    /// A store path whose name is `name`, with a hash derived from the name.
    pub(crate) fn path(name: &str) -> String {
        let mut seed = [0u8; 20];
        for (i, b) in name.bytes().enumerate() {
            seed[i % 20] ^= b;
        }
        format!("/nix/store/{}-{name}", nix32::encode(&seed))
    }

    /// A graph from (name, references, narSize) triples.
    pub(crate) fn graph(spec: &[(&str, &[&str], u64)]) -> ClosureGraph {
        let infos = spec.iter().map(|(name, refs, size)| {
            serde_json::from_value::<PathInfo>(serde_json::json!({
                "narHash": "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky",
                "narSize": size,
                "path": path(name),
                "references": refs.iter().map(|r| path(r)).collect::<Vec<_>>(),
            }))
            .unwrap()
        });
        ClosureGraph::from_infos(infos).unwrap()
    }

    pub(crate) fn name_of(graph: &IndexedGraph<'_>, v: usize) -> String {
        graph.path(v).path.name().to_string()
    }

    #[test]
    fn layers_json_is_what_serde_json_pretty_prints() {
        let parsed: Vec<AbsStorePath> = [
            path("a"),
            path("b-1.0"),
            // Store dirs may hold what JSON escapes; base names never do.
            "/tmp/my \"store\"\\x/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-a".to_string(),
            "/tmp/tab\there/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-a".to_string(),
            "/sto-re/fkckkyn8s8bc544nrrrp4v4f0j21fvkz-c".to_string(),
        ]
        .iter()
        .map(|p| AbsStorePath::parse(p).unwrap())
        .collect();
        let p = |i: usize| &parsed[i];
        let cases: Vec<Vec<Vec<&AbsStorePath>>> = vec![
            vec![],
            vec![vec![]],
            vec![vec![p(0)]],
            vec![vec![p(0), p(1)], vec![], vec![p(1)]],
            vec![vec![p(2), p(0)], vec![p(3), p(4), p(2)]],
            vec![vec![p(0), p(4)], vec![p(2)], vec![p(0)]],
        ];
        for layers in cases {
            let layering = Layering {
                algorithm: "popularity",
                max_layers: 100,
                base_layers: 0,
                store_layers: 99,
                layers,
                layer_info: Vec::new(),
                paths: Vec::new(),
            };
            let mut want = Vec::new();
            let mut serializer = serde_json::Serializer::with_formatter(
                &mut want,
                serde_json::ser::PrettyFormatter::with_indent(b" "),
            );
            layering.layers.serialize(&mut serializer).unwrap();
            let mut written = Vec::new();
            layering.write_layers_json(&mut written).unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }

    fn names<'a>(layers: &[Vec<&'a AbsStorePath>]) -> Vec<Vec<&'a str>> {
        layers
            .iter()
            .map(|l| l.iter().map(|p| p.path.name()).collect())
            .collect()
    }

    fn request(algorithm: Algorithm, max_layers: usize, exclude: &[&str]) -> LayeringRequest {
        LayeringRequest {
            algorithm,
            budget: LayerBudget {
                max_layers,
                base_layers: 0,
            },
            exclude: exclude
                .iter()
                .map(|n| AbsStorePath::parse(&path(n)).unwrap())
                .collect(),
            explain: true,
        }
    }

    #[test]
    fn budget() {
        let b = |max_layers, base_layers| LayerBudget {
            max_layers,
            base_layers,
        };
        assert_eq!(b(100, 0).store_layers(), Ok(99));
        assert_eq!(b(100, 3).store_layers(), Ok(96));
        assert_eq!(b(2, 0).store_layers(), Ok(1));
        assert!(b(1, 0).store_layers().is_err());
        assert!(b(0, 0).store_layers().is_err());
        assert!(b(5, 4).store_layers().is_err());
    }

    #[test]
    fn excluding_a_root_promotes_its_references() {
        // helper → app → lib; app → lib2. With helper excluded, app is the root.
        let g = graph(&[
            ("helper", &["app"], 1),
            ("app", &["lib", "lib2"], 1),
            ("lib", &[], 1),
            ("lib2", &["lib"], 1),
        ]);
        let all = layer(&g.indexed(), &request(Algorithm::Popularity, 100, &[])).unwrap();
        assert_eq!(names(&all.layers), [["lib"], ["lib2"], ["app"], ["helper"]]);
        let without = layer(
            &g.indexed(),
            &request(Algorithm::Popularity, 100, &["helper"]),
        )
        .unwrap();
        assert_eq!(names(&without.layers), [["lib"], ["lib2"], ["app"]]);
        // lib: routes app 1 + lib2 1 + lib 2 = 4.
        assert_eq!(without.paths[0].popularity, Popularity(BigUint::from(4u8)));
        let auto = layer(
            &g.indexed(),
            &request(Algorithm::Auto, 3, &["helper", "lib2"]),
        )
        .unwrap();
        assert!(
            auto.layers
                .iter()
                .flatten()
                .all(|p| !["helper", "lib2"].contains(&p.path.name()))
        );
        assert!(layer(&g.indexed(), &request(Algorithm::Auto, 3, &["nothere"])).is_err());
    }

    #[test]
    fn explanation_serialises_big_numbers_as_strings() {
        let small = serde_json::to_string(&Popularity(BigUint::from((1u64 << 53) - 1))).unwrap();
        let big = serde_json::to_string(&Popularity(BigUint::from(1u64 << 53))).unwrap();
        assert_eq!(small, "9007199254740991");
        assert_eq!(big, "\"9007199254740992\"");
    }
}

#[cfg(test)]
mod layers_json_tests {
    use super::*;

    #[test]
    fn layers_json() {
        assert_eq!(parse_layers(r#"[["/a"],["/b","/c"]]"#).unwrap().len(), 2);
        let explained = r#"{"algorithm":"popularity","layers":[["/a"]],"paths":[]}"#;
        assert_eq!(parse_layers(explained).unwrap(), [["/a"]]);
        assert!(
            parse_layers("[[")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        assert!(
            parse_layers("[\"/a\"]")
                .unwrap_err()
                .to_string()
                .contains("list of lists")
        );
    }
}
