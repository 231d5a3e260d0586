//! `mklayers` end to end: the nixpkgs reference layers in `../shared/layering`, a differential
//! test against the nixpkgs scripts run live on seeded random graphs, and bad input.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::{Run, SplitMix64, json_lines, ok, run, run_with_input, shared, tool};

use strata_core::layering::popularity::limit_layers;
use strata_core::layering::popularity_ranking;
use strata_core::nix::closure::ClosureGraph;
use strata_core::nix::nix32;
use strata_core::nix::path_info::{PathInfo, parse_path_infos};

const MKLAYERS: &str = env!("CARGO_BIN_EXE_mklayers");

fn mklayers(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(MKLAYERS);
    cmd.args(args);
    run_with_input(&mut cmd, stdin.unwrap_or("").as_bytes())
}

fn layers_of(out: &Output) -> Vec<Vec<String>> {
    assert!(
        out.status.success(),
        "mklayers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("mklayers prints a list of lists")
}

fn load_graph(path: &Path) -> ClosureGraph {
    let text = std::fs::read_to_string(path).expect("read graph");
    ClosureGraph::from_infos(parse_path_infos(&text).expect("parse graph")).expect("valid graph")
}

/// Layers grouped into runs of equal closure narSize, each run as a sorted set of layers: the
/// order nixpkgs' auto-layer gives layers that tie on size is CPython's set order.
fn tie_groups(graph: &ClosureGraph, layers: &[Vec<String>]) -> Vec<(u64, Vec<Vec<String>>)> {
    let by_path: BTreeMap<String, &PathInfo> =
        graph.infos().map(|i| (i.path.to_string(), i)).collect();
    let mut groups: Vec<(u64, Vec<Vec<String>>)> = Vec::new();
    for layer in layers {
        let mut closure = std::collections::BTreeSet::new();
        for p in layer {
            closure.extend(graph.closure_paths(&by_path[p.as_str()].path));
        }
        let size: u64 = closure.iter().map(|p| graph.get(p).unwrap().nar_size).sum();
        match groups.last_mut() {
            Some((s, members)) if *s == size => members.push(layer.clone()),
            _ => groups.push((size, vec![layer.clone()])),
        }
    }
    for (_, members) in &mut groups {
        members.sort();
    }
    groups
}

#[test]
fn matches_the_nixpkgs_reference_layers() {
    let graphs = shared("layering/graphs");
    let expected = shared("layering/expected");
    let mut names: Vec<String> = std::fs::read_dir(&graphs)
        .expect("list layering/graphs")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|f| f.strip_suffix(".json").map(str::to_string))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no graphs in {}", graphs.display());
    let expected_files: Vec<String> = std::fs::read_dir(&expected)
        .expect("list layering/expected")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();

    let mut checked = 0;
    for name in &names {
        let graph_file = graphs.join(format!("{name}.json"));
        let graph = load_graph(&graph_file);

        let order: Vec<String> = popularity_ranking(&graph)
            .into_iter()
            .map(|(p, _)| p.to_string())
            .collect();
        let want = std::fs::read_to_string(expected.join(format!("{name}.popularity.txt")))
            .unwrap_or_else(|e| panic!("{name}.popularity.txt: {e}"));
        assert_eq!(
            order,
            want.lines().collect::<Vec<_>>(),
            "{name}: popularity order"
        );
        checked += 1;

        for file in &expected_files {
            let Some(rest) = file.strip_prefix(&format!("{name}.")) else {
                continue;
            };
            let Some(rest) = rest.strip_suffix(".json") else {
                continue;
            };
            let Some((algorithm, max_layers)) = rest.rsplit_once('-') else {
                continue;
            };
            if max_layers.parse::<usize>().is_err() {
                continue;
            }
            let want_text = std::fs::read_to_string(expected.join(file)).expect("read expected");
            let want: Vec<Vec<String>> = serde_json::from_str(&want_text).expect("expected JSON");
            let out = mklayers(
                &[
                    "--algorithm",
                    algorithm,
                    "--max-layers",
                    max_layers,
                    graph_file.to_str().unwrap(),
                ],
                None,
            );
            let got = layers_of(&out);
            match algorithm {
                "popularity" => {
                    assert_eq!(got, want, "{file}");
                    assert_eq!(
                        String::from_utf8_lossy(&out.stdout),
                        want_text,
                        "{file} bytes"
                    );
                }
                "auto" => assert_eq!(
                    tie_groups(&graph, &got),
                    tie_groups(&graph, &want),
                    "{file}"
                ),
                other => panic!("unknown algorithm in {file}: {other}"),
            }
            checked += 1;
        }
    }
    assert!(checked > names.len(), "no layer files checked");
}

/// A random closure: nodes numbered in a random topological order reference later nodes,
/// with a libc-like hub, self-references, repeated names (ties broken by hash) and repeated
/// sizes (ties in size order).
fn random_graph(seed: u64) -> ClosureGraph {
    let mut rng = SplitMix64::new(seed);
    let n = 1 + rng.below(if seed.is_multiple_of(5) { 150 } else { 40 }) as usize;
    let names = [
        "lib",
        "bash",
        "glibc-2.37",
        "app",
        "jre",
        "zlib-1.3",
        "x",
        "openssl-3",
    ];
    let paths: Vec<String> = (0..n)
        .map(|_| {
            let hash = nix32::encode(&rng.next().to_le_bytes().repeat(3)[..20]);
            let name = names[rng.below(names.len() as u64) as usize];
            format!("/nix/store/{hash}-{name}")
        })
        .collect();
    let hub = n - 1;
    let density = 5 + rng.below(40);
    let infos = (0..n).map(|i| {
        let mut refs: Vec<&String> = Vec::new();
        for (j, path) in paths.iter().enumerate().skip(i + 1) {
            if rng.chance(density) || (j == hub && rng.chance(70)) {
                refs.push(path);
            }
        }
        if rng.chance(40) {
            refs.push(&paths[i]);
        }
        let size = if rng.chance(50) {
            1000
        } else {
            1 + rng.below(100_000)
        };
        serde_json::from_value::<PathInfo>(serde_json::json!({
            "narHash": "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky",
            "narSize": size,
            "path": paths[i],
            "references": refs,
        }))
        .expect("random path info")
    });
    ClosureGraph::from_infos(infos.collect::<Vec<_>>()).expect("random graph is a DAG")
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(shared(&format!("reference/{script}")))
        .args(args)
        .env("PYTHONHASHSEED", "0")
        .output()
        .expect("python3 must be installed to run the differential test");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn agrees_with_the_nixpkgs_scripts_on_random_graphs() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mklayers-differential");
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Python's start-up dominates: spread the seeds over a few threads.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4)) as u64;
    std::thread::scope(|scope| {
        for worker in 0..workers {
            let dir = &dir;
            scope.spawn(move || {
                for seed in (0..50u64).filter(|s| s % workers == worker) {
                    differential_case(dir, seed);
                }
            });
        }
    });
}

fn differential_case(dir: &Path, seed: u64) {
    let graph = random_graph(seed);
    let export = graph.to_export_json();
    let graph_file = dir.join(format!("graph-{seed}.json"));
    let attrs_file = dir.join(format!("attrs-{seed}.json"));
    std::fs::write(&graph_file, &export).expect("write graph");
    std::fs::write(&attrs_file, format!("{{\"graph\": {export}}}")).expect("write attrs");
    let graph_arg = graph_file.to_str().unwrap();

    // Popularity order, and the layers limit_layers makes of it.
    let reference = python("closure-graph.py", &[attrs_file.to_str().unwrap(), "graph"]);
    let reference: Vec<String> = reference.lines().map(str::to_string).collect();
    let ours: Vec<String> = popularity_ranking(&graph)
        .into_iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(ours, reference, "seed {seed}: popularity order");
    let max_layers = [2usize, 3, 7, 100][seed as usize % 4];
    let want = limit_layers(&reference, max_layers - 1);
    let got = layers_of(&mklayers(&["-m", &max_layers.to_string(), graph_arg], None));
    assert_eq!(
        got, want,
        "seed {seed}: popularity layers, max {max_layers}"
    );

    // Auto-layer, a third of the time with an ignored path.
    let ignored: Vec<String> = if seed.is_multiple_of(3) {
        vec![graph.infos().next().unwrap().path.to_string()]
    } else {
        Vec::new()
    };
    let ignore_file = dir.join(format!("ignore-{seed}"));
    std::fs::write(&ignore_file, ignored.join("\n")).expect("write ignore file");
    for max_layers in [[2usize, 4, 10][seed as usize % 3], 100] {
        let limit = (max_layers - 1).to_string();
        let reference = python(
            "auto-layer.py",
            &[graph_arg, ignore_file.to_str().unwrap(), &limit],
        );
        let want: Vec<Vec<String>> = serde_json::from_str(&reference).expect("auto JSON");
        let m = max_layers.to_string();
        let mut args = vec!["-a", "auto", "-m", m.as_str()];
        for p in &ignored {
            args.extend(["--exclude", p.as_str()]);
        }
        args.push(graph_arg);
        let got = layers_of(&mklayers(&args, None));
        assert_eq!(
            tie_groups(&graph, &got),
            tie_groups(&graph, &want),
            "seed {seed}: auto layers, max {max_layers}"
        );
    }
}

/// Run with `input` on stdin and check the failure shape: the exit code, nothing on stdout,
/// exactly one line on stderr; returns that line.
fn fails(args: &[&str], input: &str, code: i32) -> String {
    let stderr = Run::command(Command::new(MKLAYERS))
        .args(args)
        .stdin(input)
        .fails(code)
        .stderr();
    assert!(stderr.starts_with("mklayers: "), "{stderr}");
    stderr.trim_end().to_string()
}

const HASH: &str = "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky";
const A: &str = "/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-a";
const B: &str = "/nix/store/fkckkyn8s8bc544nrrrp4v4f0j21fvkz-b";

fn node(path: &str, refs: &[&str]) -> String {
    serde_json::json!({"narHash": HASH, "narSize": 1, "path": path, "references": refs}).to_string()
}

#[test]
fn bad_input_is_one_line_and_a_failure_code() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mklayers-bad");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let malformed = dir.join("graph.json");
    std::fs::write(
        &malformed,
        format!("[\n{},\n  {{\"path\" 3}}\n]", node(A, &[])),
    )
    .unwrap();
    let line = fails(&[malformed.to_str().unwrap()], "", 1);
    assert!(line.contains("graph.json:3:11: "), "{line}");

    let line = fails(&[], &format!("[{}]", node(A, &[B])), 1);
    assert!(line.contains("stdin: ") && line.contains(B), "{line}");

    let cycle = format!("[{}, {}]", node(A, &[B]), node(B, &[A]));
    let line = fails(&["-"], &cycle, 1);
    assert!(line.contains("cycle"), "{line}");

    let bad_path = node("/nix/store/not-a-hash-x", &[]);
    let line = fails(&[], &bad_path, 1);
    assert!(line.contains("stdin:1:"), "{line}");

    let good = format!("[{}, {}]", node(A, &[A, B]), node(B, &[]));
    let line = fails(&["--max-layers", "1"], &good, 2);
    assert!(line.contains("max-layers 1"), "{line}");
    fails(&["--max-layers", "5", "--base-layers", "4"], &good, 2);
    fails(&["--max-layers", "many"], &good, 2);
    fails(&["--exclude", "relative/path"], &good, 2);
    let line = fails(
        &["--exclude", "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-c"],
        &good,
        1,
    );
    assert!(line.contains("not in the graph"), "{line}");
}

/// A graph of `n` paths, each referring to the next three: large enough to be read from a
/// file into huge pages (from 256 KiB) when `n` is in the thousands.
fn chain_graph(n: usize) -> String {
    let mut rng = SplitMix64::new(n as u64);
    let paths: Vec<String> = (0..n)
        .map(|i| {
            let hash = nix32::encode(&rng.next().to_le_bytes().repeat(3)[..20]);
            format!("/nix/store/{hash}-p{}", i % 97)
        })
        .collect();
    let nodes: Vec<String> = (0..n)
        .map(|i| {
            let refs: Vec<&str> = paths[i..n.min(i + 4)].iter().map(String::as_str).collect();
            node(&paths[i], &refs)
        })
        .collect();
    format!("[\n{}\n]\n", nodes.join(",\n"))
}

#[test]
fn a_large_graph_file_reads_as_the_same_graph_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let text = chain_graph(3000);
    assert!(text.len() > 512 * 1024, "{}", text.len());
    let file = dir.path().join("graph.json");
    std::fs::write(&file, &text).unwrap();
    let name = file.to_str().unwrap();
    for args in [
        &["-m", "40"][..],
        &["-a", "auto", "-m", "40"],
        &["--explain"],
    ] {
        let from_file = mklayers(&[args, &[name]].concat(), None);
        let from_stdin = mklayers(args, Some(&text));
        assert!(from_file.status.success(), "{from_file:?}");
        assert_eq!(from_file.stdout, from_stdin.stdout, "{args:?}");
    }
    // Errors near the end of a large file name it, with the line and column stdin gets.
    let broken = format!("{}x", text.trim_end().strip_suffix(']').unwrap());
    std::fs::write(&file, &broken).unwrap();
    let from_file = fails(&[name], "", 1);
    let from_stdin = fails(&[], &broken, 1);
    assert_eq!(from_file, from_stdin.replace("stdin", name));
    assert!(
        from_file.contains(&format!("{name}:3002:1: ")),
        "{from_file}"
    );
}

#[test]
fn reads_stdin_and_other_shapes() {
    let good = format!("[{}, {}]", node(A, &[A, B]), node(B, &[]));
    let want = vec![vec![B.to_string()], vec![A.to_string()]];
    assert_eq!(layers_of(&mklayers(&[], Some(&good))), want);
    assert_eq!(layers_of(&mklayers(&["-"], Some(&good))), want);
    let keyed = format!("{{\"closure\": {good}}}");
    assert_eq!(layers_of(&mklayers(&[], Some(&keyed))), want);
    let by_path = format!(
        "{{\"{A}\": {{\"narHash\": \"{HASH}\", \"narSize\": 1, \"references\": [\"{A}\", \"{B}\"]}},
          \"{B}\": {{\"narHash\": \"{HASH}\", \"narSize\": 1, \"references\": []}}}}"
    );
    assert_eq!(
        layers_of(&mklayers(&["-a", "auto"], Some(&by_path))).len(),
        2
    );
    assert_eq!(
        layers_of(&mklayers(&[], Some("[]"))),
        Vec::<Vec<String>>::new()
    );
    // Excluding the root leaves b alone.
    let out = mklayers(&["--exclude", A], Some(&good));
    assert_eq!(layers_of(&out), vec![vec![B.to_string()]]);

    let explained = mklayers(&["--explain", "-m", "2"], Some(&good));
    let value: serde_json::Value = serde_json::from_slice(&explained.stdout).unwrap();
    assert_eq!(value["layers"], serde_json::json!([[B, A]]));
    assert_eq!(value["paths"][0]["popularity"], 2);
    assert_eq!(value["paths"][1]["closureSize"], 2);
}

#[test]
fn help_shows_examples() {
    let out = mklayers(&["--help"], None);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("nix path-info --json -r ./result | mklayers --max-layers 100 > layers.json")
    );
    assert!(help.contains("mklayers --algorithm auto --max-layers 20 --base-layers 3 graph.json"));
}

#[test]
fn closure_read_from_the_store() {
    let root = tempfile::tempdir().unwrap();
    let dep = json_lines(&ok(&run_with_input(
        tool("store-add", root.path()).args(["--text", "--name", "dep", "-"]),
        b"dep\n",
    )))[0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let user = json_lines(&ok(&run_with_input(
        tool("store-add", root.path()).args(["--text", "--name", "user", "--ref", &dep, "-"]),
        format!("{dep}\n").as_bytes(),
    )))[0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let from_store = ok(&run(
        tool("mklayers", root.path()).args(["--closure-of", &user])
    ));
    let graph = ok(&run(
        tool("store-query", root.path()).args(["closure", &user])
    ));
    let from_graph = ok(&run_with_input(
        &mut tool("mklayers", root.path()),
        graph.as_bytes(),
    ));
    assert_eq!(from_store, from_graph);
    let layers: Vec<Vec<String>> = serde_json::from_str(&from_store).unwrap();
    assert_eq!(layers, vec![vec![dep], vec![user]]);
}
