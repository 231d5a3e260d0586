//! The engine sink: an image plan loaded into a local container engine without an image tar
//! being written first. It exists because `docker load` of a whole archive re-reads and
//! re-sends every unchanged layer after a small change.
//!
//! - **Docker** gets a thin docker-archive on `docker load`'s stdin. Docker's loader does not
//!   open the file of a layer whose chain ID (chainID(L1) = diffID(L1), chainID(Ln) =
//!   sha256(chainID(Ln-1) + " " + diffID(Ln))) its layer store holds, so such a file can be
//!   left out of the archive. The chain IDs the engine holds come from its images'
//!   `RootFS.Layers` (`docker image inspect`), read with limits, for the cache hits below the
//!   first layer to be built (no engine holds a chain through new bytes): first the image the
//!   plan replaces (`name:tag`), which after a rebuild holds them all; only when it does not,
//!   every image (`docker image ls`, then `docker image inspect` of each). Only a layer whose diff_id the plan knows without reading it (a layer cache hit)
//!   is left out, and only when its chain is held; every other layer is written. If Docker
//!   refuses the thin archive (an engine that said it had a layer and does not, or one that
//!   lost it meanwhile), the full archive is sent instead and [`LoadReport::fell_back`] says
//!   why: a wrong answer from the engine can cost time, never a layer.
//! - **Podman** (`podman load`) and **containerd** (`ctr images import -`) get the full
//!   docker-archive on stdin: neither skips a layer file it already has.
//!
//! Layers that are written go to a temporary directory first (a tar member needs its size
//! before its bytes); after a small change those are the few changed layers. Engines are run
//! without a shell, with the archive on stdin.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::ImageError;
use super::archive::{BlobOut, copy_blob, hex};
use super::config::{self, DockerManifest};
use super::plan::{BlobFacts, ImageDocuments, ImagePlan, LayerOrigin, PlannedLayer};
use super::sink::{ImageSink, emit};
use super::tar::{BLOCK, Entry, EntryKind, Owner, RECORD, Source, header};

/// Most bytes of an engine's answer read (image IDs, layer lists, error text).
pub const MAX_ENGINE_ANSWER: u64 = 16 << 20;
/// Most images whose layers are asked for.
pub const MAX_ENGINE_IMAGES: usize = 20_000;

/// The prefix of the directory in `$TMPDIR` the layers to load wait in (`mkimage-load-XXXXXX.tmp`).
const LOAD_PREFIX: &str = "mkimage-load-";
/// Image IDs per `docker image inspect` call.
const INSPECT_BATCH: usize = 500;

/// A local container engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Engine {
    /// `docker load`, sent only the layers dockerd lacks.
    Docker,
    /// `podman load`, the whole archive.
    Podman,
    /// `ctr images import -`, the whole archive.
    Containerd,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
            Engine::Containerd => "containerd",
        }
    }

    /// The command that reads a docker-archive on stdin.
    fn load_command(self, program: &OsString) -> Command {
        let mut cmd = Command::new(program);
        match self {
            Engine::Docker | Engine::Podman => {
                cmd.arg("load");
            }
            Engine::Containerd => {
                cmd.args(["images", "import", "-"]);
            }
        }
        cmd
    }

    fn default_program(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
            Engine::Containerd => "ctr",
        }
    }
}

/// What a load did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    pub engine: &'static str,
    /// Layers whose file was in the archive sent.
    pub layers_sent: usize,
    /// Layers left out because the engine holds their chain.
    pub layers_omitted: usize,
    /// Bytes of the archive the engine read (the last one sent, after a fallback).
    pub archive_bytes: u64,
    /// Why the thin archive was refused, when the full one was sent instead.
    pub fell_back: Option<String>,
    /// What the engine printed on success (`Loaded image: …`).
    pub engine_output: String,
}

/// How to reach the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub engine: Engine,
    /// The engine's CLI (default: `docker`, `podman`, `ctr`).
    pub program: Option<OsString>,
}

/// Load `plan` into the engine. `each` is called with a layer's number before it is taken.
pub fn load_plan(
    plan: &mut ImagePlan<'_>,
    opts: &EngineOptions,
    each: &mut dyn FnMut(usize),
) -> Result<(ImageDocuments, LoadReport), ImageError> {
    let program = opts
        .program
        .clone()
        .unwrap_or_else(|| opts.engine.default_program().into());
    let held = match opts.engine {
        Engine::Docker => held_chains(&program, plan)?,
        _ => BTreeSet::new(),
    };
    // The layers to send wait here: a temporary of the build's (removed on a signal, reclaimed
    // after a kill), as the customisation root is.
    let tmpdir = std::env::temp_dir();
    super::temp::reclaim(&tmpdir, LOAD_PREFIX);
    let dir = super::temp::Temp::dir(&tmpdir, LOAD_PREFIX).map_err(ImageError::io(&tmpdir))?;
    let mut report = None;
    let sink = EngineSink {
        engine: opts.engine,
        program,
        held,
        chain: None,
        dir: dir.path().to_path_buf(),
        layers: Vec::new(),
        report: &mut report,
    };
    let docs = emit(plan, sink, each)?;
    let report = report.ok_or_else(|| ImageError::Engine("the load did not happen".into()))?;
    Ok((docs, report))
}

/// chainID(Ln) from chainID(Ln-1) and diffID(Ln).
pub fn next_chain(prev: Option<&str>, diff_id: &str) -> String {
    match prev {
        None => diff_id.to_string(),
        Some(p) => format!(
            "sha256:{}",
            hex(&Sha256::digest(format!("{p} {diff_id}").as_bytes()))
        ),
    }
}

/// Whether `s` is `sha256:` and 64 lower-case hex digits.
fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Run the engine's CLI (no shell), reading at most [`MAX_ENGINE_ANSWER`] bytes of stdout.
fn ask(program: &OsString, args: &[&str]) -> Result<String, ImageError> {
    let shown = format!("{} {}", program.to_string_lossy(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Engine(format!("{shown}: {e}")))?;
    let err_reader = child.stderr.take().map(|e| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = e.take(64 * 1024).read_to_end(&mut text);
            text
        })
    });
    let mut out = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        stdout
            .take(MAX_ENGINE_ANSWER + 1)
            .read_to_end(&mut out)
            .map_err(|e| ImageError::Engine(format!("{shown}: {e}")))?;
    }
    if out.len() as u64 > MAX_ENGINE_ANSWER {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ImageError::Engine(format!(
            "{shown}: the answer is longer than {MAX_ENGINE_ANSWER} bytes"
        )));
    }
    let status = child
        .wait()
        .map_err(|e| ImageError::Engine(format!("{shown}: {e}")))?;
    let err = err_reader.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        return Err(ImageError::Engine(format!(
            "{shown}: {}",
            one_line(&String::from_utf8_lossy(&err))
        )));
    }
    String::from_utf8(out).map_err(|_| ImageError::Engine(format!("{shown}: not UTF-8")))
}

/// The last non-empty line of an engine's message, trimmed.
fn one_line(text: &str) -> String {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    line.trim().chars().take(500).collect()
}

/// The layer cache hit of layer `layer`: its facts, known without reading it.
fn cache_hit(layer: &PlannedLayer) -> Option<&BlobFacts> {
    match (&layer.blob, &layer.origin) {
        (
            Some(facts),
            LayerOrigin::Store {
                cached: Some(_), ..
            },
        ) => Some(facts),
        _ => None,
    }
}

/// The chain IDs of the plan's lowest layers that are cache hits, in a row from the bottom.
fn chains_of_known_layers(plan: &ImagePlan<'_>) -> Vec<String> {
    let mut chains: Vec<String> = Vec::new();
    for layer in &plan.layers {
        let Some(facts) = cache_hit(layer) else {
            break;
        };
        let prev = chains.last().map(String::as_str);
        chains.push(next_chain(prev, &facts.diff_id.to_string()));
    }
    chains
}

/// The chain IDs dockerd holds that matter to this plan. Only a cache hit can be left out, and
/// only below the first layer that is built: a built layer's bytes are new (the cache has not
/// seen them), so no engine holds a chain through it. With no such hit nothing is asked.
/// First only the image this plan replaces (`name:tag`, one question): after a rebuild it
/// holds every one of them. When it does not, every image's layer stacks are asked for.
fn held_chains(program: &OsString, plan: &ImagePlan<'_>) -> Result<BTreeSet<String>, ImageError> {
    let known = chains_of_known_layers(plan);
    if known.is_empty() {
        return Ok(BTreeSet::new());
    }
    let reference = format!("{}:{}", plan.name, plan.tag);
    let args = [
        "image",
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        &reference,
    ];
    // No such image (an error) or one holding less: ask about every image.
    if let Ok(text) = ask(program, &args) {
        let held = chains_of(&text);
        if known.iter().all(|c| held.contains(c)) {
            return Ok(held);
        }
    }
    all_held_chains(program)
}

/// The chain IDs of every layer stack dockerd's images hold.
fn all_held_chains(program: &OsString) -> Result<BTreeSet<String>, ImageError> {
    let ids = ask(program, &["image", "ls", "--all", "--quiet", "--no-trunc"])?;
    let ids: BTreeSet<&str> = ids
        .lines()
        .map(str::trim)
        .filter(|l| is_digest(l))
        .collect();
    let ids: Vec<&str> = ids.into_iter().take(MAX_ENGINE_IMAGES).collect();
    let mut held = BTreeSet::new();
    for batch in ids.chunks(INSPECT_BATCH) {
        let mut args = vec!["image", "inspect", "--format", "{{json .RootFS.Layers}}"];
        args.extend(batch);
        // An image removed between the two questions fails the batch: it holds nothing then.
        let Ok(text) = ask(program, &args) else {
            continue;
        };
        held.extend(chains_of(&text));
    }
    Ok(held)
}

/// Chain IDs from `docker image inspect --format '{{json .RootFS.Layers}}'` lines (a JSON
/// list of diff_ids per image); a line that is not such a list is ignored.
pub fn chains_of(text: &str) -> BTreeSet<String> {
    let mut held = BTreeSet::new();
    for line in text.lines() {
        let Ok(layers) = serde_json::from_str::<Vec<String>>(line.trim()) else {
            continue;
        };
        if layers.len() > super::MAX_LAYERS || !layers.iter().all(|d| is_digest(d)) {
            continue;
        }
        let mut chain: Option<String> = None;
        for d in &layers {
            let next = next_chain(chain.as_deref(), d);
            held.insert(next.clone());
            chain = Some(next);
        }
    }
    held
}

/// A layer as the archive will carry it.
struct Layer {
    facts: BlobFacts,
    /// The written blob; `None` if left out (the engine holds its chain).
    file: Option<PathBuf>,
    /// The cache entry a left-out layer can be copied from, should the engine refuse.
    cached: Option<PathBuf>,
}

struct EngineSink<'r> {
    engine: Engine,
    program: OsString,
    held: BTreeSet<String>,
    chain: Option<String>,
    dir: PathBuf,
    layers: Vec<Layer>,
    report: &'r mut Option<LoadReport>,
}

/// Blobs written to files in the sink's temporary directory.
struct FileOut {
    path: PathBuf,
    file: Option<BufWriter<File>>,
}

impl FileOut {
    fn new(path: PathBuf) -> FileOut {
        FileOut { path, file: None }
    }
}

impl BlobOut for FileOut {
    fn begin_blob(&mut self) -> io::Result<()> {
        self.file = Some(BufWriter::with_capacity(1 << 20, File::create(&self.path)?));
        Ok(())
    }
    fn blob_writer(&mut self) -> &mut (dyn Write + Send) {
        match &mut self.file {
            Some(f) => f,
            None => panic!("blob_writer called without begin_blob"),
        }
    }
    fn end_blob(&mut self, _digest: &str, _size: u64) -> io::Result<()> {
        match self.file.take() {
            Some(mut f) => f.flush(),
            None => Ok(()),
        }
    }
    fn abort_blob(&mut self) -> io::Result<()> {
        self.file = None;
        std::fs::remove_file(&self.path).or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })
    }
}

impl ImageSink for EngineSink<'_> {
    fn layer(&mut self, plan: &mut ImagePlan<'_>, i: usize) -> Result<(), ImageError> {
        let cached = match &plan.layers[i].origin {
            LayerOrigin::Store {
                cached: Some(p), ..
            } => Some(p.clone()),
            _ => None,
        };
        if let (Some(facts), Some(_)) = (&plan.layers[i].blob, &cached) {
            let next = next_chain(self.chain.as_deref(), &facts.diff_id.to_string());
            if self.held.contains(&next) {
                self.chain = Some(next);
                self.layers.push(Layer {
                    facts: facts.clone(),
                    file: None,
                    cached,
                });
                return Ok(());
            }
        }
        let path = self.dir.join(format!("layer-{i}"));
        let mut out = FileOut::new(path.clone());
        let facts = plan.write_layer(i, &mut out)?.clone();
        self.chain = Some(next_chain(
            self.chain.as_deref(),
            &facts.diff_id.to_string(),
        ));
        self.layers.push(Layer {
            facts,
            file: Some(path),
            cached,
        });
        Ok(())
    }

    fn finish(mut self, plan: &ImagePlan<'_>, docs: &ImageDocuments) -> Result<(), ImageError> {
        let omitted = self.layers.iter().filter(|l| l.file.is_none()).count();
        let sent = self.send(plan, docs);
        let (bytes, output, fell_back) = match sent {
            Ok((bytes, output)) => (bytes, output, None),
            Err(why) if omitted > 0 => {
                // The engine does not hold what it said: the left-out layers, from the cache.
                for (i, layer) in self.layers.iter_mut().enumerate() {
                    if layer.file.is_some() {
                        continue;
                    }
                    let path = self.dir.join(format!("layer-{i}"));
                    let mut out = FileOut::new(path.clone());
                    let from = layer.cached.clone().unwrap_or_default();
                    let digest = layer.facts.digest.hex();
                    let copied = copy_blob(&mut out, &from, digest, layer.facts.size)
                        .map_err(|e| ImageError::Engine(format!("{}: {e}", from.display())))?;
                    if !copied {
                        return Err(ImageError::Engine(format!(
                            "{} refused the archive without the layers it has ({why}), and the \
                             layer cache entry {} changed meanwhile; build again",
                            self.engine.name(),
                            from.display()
                        )));
                    }
                    layer.file = Some(path);
                }
                let (bytes, output) = self.send(plan, docs).map_err(ImageError::Engine)?;
                (bytes, output, Some(why))
            }
            Err(why) => return Err(ImageError::Engine(why)),
        };
        *self.report = Some(LoadReport {
            engine: self.engine.name(),
            layers_sent: self.layers.iter().filter(|l| l.file.is_some()).count(),
            layers_omitted: if fell_back.is_some() { 0 } else { omitted },
            archive_bytes: bytes,
            fell_back,
            engine_output: output,
        });
        Ok(())
    }
}

impl EngineSink<'_> {
    /// Stream the docker-archive (config, `manifest.json`, the layer files there are) to the
    /// engine's load command; its size and what the engine printed, or why it failed.
    fn send(&self, plan: &ImagePlan<'_>, docs: &ImageDocuments) -> Result<(u64, String), String> {
        let name = self.engine.name();
        let mut cmd = self.engine.load_command(&self.program);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", self.program.to_string_lossy()))?;
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|r| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let mut r = r.take(64 * 1024);
                let _ = r.read_to_end(&mut text);
                // Drain the rest so the engine never blocks on a full pipe.
                let _ = io::copy(r.get_mut(), &mut io::sink());
                String::from_utf8_lossy(&text).into_owned()
            })
        })
        .collect();
        let written = match child.stdin.take() {
            Some(stdin) => self.write_archive(plan, docs, BufWriter::with_capacity(1 << 20, stdin)),
            None => Err(io::Error::other("no stdin")),
        };
        let status = child.wait().map_err(|e| format!("{name}: {e}"))?;
        let texts: Vec<String> = readers
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect();
        let (out, err) = (
            texts.first().cloned().unwrap_or_default(),
            texts.get(1).cloned().unwrap_or_default(),
        );
        if !status.success() {
            let why = one_line(&err);
            return Err(format!(
                "{name} load failed: {}",
                if why.is_empty() {
                    status.to_string()
                } else {
                    why
                }
            ));
        }
        let bytes = written.map_err(|e| format!("{name} load: sending the archive: {e}"))?;
        Ok((bytes, out.trim().to_string()))
    }

    /// The archive: tar members, each header followed by its bytes, then the end blocks.
    fn write_archive(
        &self,
        plan: &ImagePlan<'_>,
        docs: &ImageDocuments,
        mut w: impl Write,
    ) -> io::Result<u64> {
        let owner = Owner::default();
        let mut pos = 0u64;
        let mut member = |w: &mut dyn Write, name: &str, size: u64, body: &mut dyn Read| {
            let h = header(&Entry::new(
                name.as_bytes().to_vec(),
                EntryKind::File {
                    source: Source::Path(PathBuf::new()),
                    size,
                },
                0o644,
                &owner,
            ));
            w.write_all(&h)?;
            let n = io::copy(&mut body.take(size), w)?;
            if n != size {
                return Err(io::Error::other(format!("{name}: {n} bytes, not {size}")));
            }
            let pad = (BLOCK - size % BLOCK) % BLOCK;
            w.write_all(&vec![0u8; pad as usize])?;
            pos += h.len() as u64 + size + pad;
            Ok::<(), io::Error>(())
        };
        let config_name = docs.config_digest.blob_path();
        member(
            &mut w,
            &config_name,
            docs.config.len() as u64,
            &mut &docs.config[..],
        )?;
        let names: Vec<String> = self
            .layers
            .iter()
            .map(|l| l.facts.digest.blob_path())
            .collect();
        let manifest = config::to_bytes(&vec![DockerManifest {
            config: config_name,
            repo_tags: vec![format!("{}:{}", plan.name, plan.tag)],
            layers: names.clone(),
        }]);
        member(
            &mut w,
            "manifest.json",
            manifest.len() as u64,
            &mut &manifest[..],
        )?;
        let mut seen = BTreeSet::new();
        for (layer, name) in self.layers.iter().zip(&names) {
            let Some(path) = &layer.file else { continue };
            if !seen.insert(name) {
                continue;
            }
            let mut f = File::open(path)?;
            member(&mut w, name, layer.facts.size, &mut f)?;
        }
        let m = pos + 2 * BLOCK;
        let tail = 2 * BLOCK + (RECORD - m % RECORD) % RECORD;
        w.write_all(&vec![0u8; tail as usize])?;
        w.flush()?;
        Ok(pos + tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:140b0851bef26565780561cf0a45584c0c44f5d55a93a0363180f26d09432063";
    const B: &str = "sha256:074be6aaf4e1d75cf3f0aa7b0497a4890d2eceb19ee25970b9f2f040da0f51e4";

    #[test]
    fn chain_ids_follow_the_image_spec() {
        assert_eq!(next_chain(None, A), A);
        // sha256 of "A B", the rule the OCI image spec gives.
        let want = format!("sha256:{}", hex(&Sha256::digest(format!("{A} {B}"))));
        assert_eq!(next_chain(Some(A), B), want);
    }

    #[test]
    fn engine_answers_that_are_not_layer_lists_hold_nothing() {
        let text = format!(
            "[\"{A}\",\"{B}\"]\nnot json\n[\"sha256:../../etc\"]\n[\"{A}\", 3]\n{{\"a\":1}}\n"
        );
        let held = chains_of(&text);
        let want: BTreeSet<String> = [A.to_string(), next_chain(Some(A), B)].into();
        assert_eq!(held, want);
        let long = format!("[{}]", vec![format!("\"{A}\""); 200].join(","));
        assert!(
            chains_of(&long).is_empty(),
            "more layers than an image may have"
        );
    }
}
