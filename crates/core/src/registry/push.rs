//! The push: every blob the registry lacks, then the manifest. Each blob is looked up with
//! `HEAD` first and skipped when the registry has it; otherwise it is mounted from another
//! repository when one is given (`POST …?mount=&from=`), or uploaded: monolithic (`POST`
//! for a session, then one `PUT` with the body) or chunked (`PATCH` with `Content-Range`,
//! then `PUT`), falling back to monolithic when the registry refuses chunks. A blob is hashed
//! in full before its first byte is sent (unless its digest was computed from these very
//! bytes), so not one byte of a corrupt blob leaves; the bytes are hashed again as they are
//! sent and the last of them held back unless they still hash to the digest. The manifest
//! goes last, with the exact bytes, and the digest the registry answers must be theirs: a
//! failure anywhere before leaves the tag untouched. An image index goes the same way, one
//! platform after another (a blob they share once, each manifest by its digest), and the
//! index last, under the tag.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::RegistryError;
use super::auth::Credentials;
use super::client::{Body, Client, ClientOptions, DEFAULT_TIMEOUT, Response, error_text};
use super::reference::Reference;
use super::source::{self, Blob, BlobLocation, Source, SourceIndex};
use crate::hashing::Digester;
use crate::oci::{Compression, Digest};

/// HTTP or HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP for loopback registries, TLS for every other.
    Auto,
    /// Plain HTTP whatever the host (`--plain-http`).
    PlainHttp,
    /// TLS whatever the host (`--tls`).
    Tls,
}

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub transport: Transport,
    /// A repository on the same registry to mount blobs from.
    pub mount_from: Option<String>,
    /// Upload in chunks of this many bytes (`None`: monolithic).
    pub chunk_size: Option<u64>,
    /// Compress uncompressed layers with the pinned encoders before upload.
    pub compression: Compression,
    pub credentials: Option<Credentials>,
    /// Counts blob bytes as they are sent (for a progress display).
    pub progress: Option<Arc<AtomicU64>>,
    /// Where compressed layers are written (default: the system temporary directory).
    pub temp_dir: Option<PathBuf>,
    /// Remembers the digest each layer compresses to, so an unchanged layer the registry has
    /// is skipped without compressing it again.
    pub cache: Option<PathBuf>,
    /// How long the registry may take: to connect, and for each request with its answer
    /// (once more per MiB of the request's body).
    pub timeout: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            transport: Transport::Auto,
            mount_from: None,
            chunk_size: None,
            compression: Compression::None,
            credentials: None,
            progress: None,
            temp_dir: None,
            cache: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What happened to a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobAction {
    /// The registry had it already.
    Skipped,
    /// Mounted from the `mount_from` repository.
    Mounted,
    Uploaded,
}

/// One blob of the push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobReport {
    /// `layer` or `config`.
    pub kind: &'static str,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub action: BlobAction,
    /// Body bytes sent for this blob (0 unless uploaded).
    pub uploaded_bytes: u64,
    /// `PATCH` requests (0 for a monolithic upload).
    pub chunks: u64,
    /// The registry refused chunks and the blob went up monolithic.
    pub fell_back: bool,
}

/// The whole push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// `REGISTRY/REPO:TAG`.
    pub reference: String,
    /// The manifest's digest, as the registry confirmed it.
    pub digest: Digest,
    pub manifest_size: u64,
    pub blobs: Vec<BlobReport>,
    /// Blob body bytes sent, all blobs together (the manifest not included).
    pub uploaded_bytes: u64,
}

/// The options a push cannot start with.
pub(crate) fn check_options(opts: &PushOptions) -> Result<(), RegistryError> {
    if opts.chunk_size == Some(0) {
        return Err(RegistryError::Invalid(
            "the chunk size must be at least 1 byte".into(),
        ));
    }
    if opts.timeout.is_zero() {
        return Err(RegistryError::Invalid(
            "the timeout must be more than 0 seconds".into(),
        ));
    }
    Ok(())
}

/// A client for `dest` with the scopes the push needs, after checking that it speaks the
/// registry API.
pub(crate) fn connect(dest: &Reference, opts: &PushOptions) -> Result<Client, RegistryError> {
    let repo = &dest.repository;
    let mut scopes = vec![format!("repository:{repo}:pull,push")];
    if let Some(from) = &opts.mount_from {
        scopes.push(format!("repository:{from}:pull"));
    }
    let client_opts = ClientOptions {
        tls: uses_tls(opts.transport, dest),
        plain_http: opts.transport == Transport::PlainHttp,
        timeout: opts.timeout,
    };
    let client = Client::new(dest, client_opts, scopes, opts.credentials.clone())?;
    let ping = client.send("GET", &client.url("/v2/"), &[], &Body::Empty)?;
    if ping.status != 200 {
        return Err(RegistryError::Registry(format!(
            "{}: GET /v2/ answered {}: not an OCI registry API",
            dest.registry,
            error_text(&ping)
        )));
    }
    Ok(client)
}

/// Push the image at `image` (a tar or an OCI layout directory from mkimage, or an image
/// index from mkindex: every platform, then the index) to `dest`. `on_blob` is told about
/// each blob when it is done.
pub fn push(
    image: &Path,
    dest: &Reference,
    opts: &PushOptions,
    on_blob: &dyn Fn(&BlobReport),
) -> Result<PushReport, RegistryError> {
    check_options(opts)?;
    let src = match source::open_source(image)? {
        Source::Image(src) => src,
        Source::Index(index) => return push_index(&index, dest, opts, on_blob),
    };
    let (tag, temp, client) = start(dest, src.tag.as_deref(), opts)?;
    let pusher = Pusher {
        client: &client,
        repo: &dest.repository,
        opts,
    };
    let mut reports = Vec::new();
    for (i, layer) in src.layers.iter().enumerate() {
        let report =
            if opts.compression != Compression::None && layer.compression() == Compression::None {
                pusher.compressed_layer(layer, &temp.path().join(format!("layer-{i}")))?
            } else {
                pusher.blob("layer", layer)?
            };
        on_blob(&report);
        reports.push(report);
    }
    let report = pusher.blob("config", &src.config)?;
    on_blob(&report);
    reports.push(report);
    let manifest = if opts.compression != Compression::None {
        rewrite_layers(&src.manifest, &reports)?
    } else {
        src.manifest.clone()
    };
    let digest = pusher.manifest(&manifest, &src.manifest_media_type, &tag)?;
    Ok(PushReport {
        reference: dest.display_with(&tag),
        digest,
        manifest_size: manifest.len() as u64,
        uploaded_bytes: reports.iter().map(|r| r.uploaded_bytes).sum(),
        blobs: reports,
    })
}

/// What every push starts with: the tag (the reference's, else the image's, else `latest`),
/// a scratch directory for compressed layers, and a connection to the registry.
fn start(
    dest: &Reference,
    image_tag: Option<&str>,
    opts: &PushOptions,
) -> Result<(String, tempfile::TempDir, Client), RegistryError> {
    let tag = dest
        .tag
        .clone()
        .or_else(|| image_tag.map(str::to_string))
        .unwrap_or_else(|| "latest".to_string());
    let temp = match &opts.temp_dir {
        Some(d) => tempfile::Builder::new()
            .prefix("strata-push-")
            .tempdir_in(d),
        None => tempfile::Builder::new().prefix("strata-push-").tempdir(),
    }
    .map_err(|e| RegistryError::Invalid(format!("temporary directory: {e}")))?;
    let client = connect(dest, opts)?;
    Ok((tag, temp, client))
}

/// Push an image index (`mkindex`'s output): every platform's blobs, each blob once however
/// many platforms share it, and its manifest (by digest), then the index under the tag. With
/// compression the manifests name the compressed layers, and the index the rewritten
/// manifests.
fn push_index(
    src: &SourceIndex,
    dest: &Reference,
    opts: &PushOptions,
    on_blob: &dyn Fn(&BlobReport),
) -> Result<PushReport, RegistryError> {
    let (tag, temp, client) = start(dest, src.tag.as_deref(), opts)?;
    let pusher = Pusher {
        client: &client,
        repo: &dest.repository,
        opts,
    };
    // What each blob became (by the digest the image gives it), so a blob shared by several
    // platforms goes up once and is reported once.
    let mut done: std::collections::BTreeMap<Digest, BlobReport> = Default::default();
    let mut reports = Vec::new();
    // Each manifest's digest in the index, and what was pushed for it.
    let mut manifests: std::collections::BTreeMap<Digest, (Digest, u64)> = Default::default();
    for (i, image) in src.images.iter().enumerate() {
        let mut own = Vec::new();
        let blobs = image.layers.iter().map(|l| ("layer", l));
        for (j, (kind, blob)) in blobs.chain([("config", &image.config)]).enumerate() {
            if let Some(report) = done.get(&blob.digest) {
                own.push(report.clone());
                continue;
            }
            let compress = kind == "layer"
                && opts.compression != Compression::None
                && blob.compression() == Compression::None;
            let report = if compress {
                pusher.compressed_layer(blob, &temp.path().join(format!("layer-{i}-{j}")))?
            } else {
                pusher.blob(kind, blob)?
            };
            on_blob(&report);
            done.insert(blob.digest.clone(), report.clone());
            reports.push(report.clone());
            own.push(report);
        }
        let manifest = if opts.compression != Compression::None {
            rewrite_layers(&image.manifest, &own)?
        } else {
            image.manifest.clone()
        };
        let wanted = Digest::sha256_of(&manifest).to_string();
        let digest = pusher.manifest(&manifest, &image.manifest_media_type, &wanted)?;
        let listed = Digest::sha256_of(&image.manifest);
        manifests.insert(listed, (digest, manifest.len() as u64));
    }
    let index = if opts.compression != Compression::None {
        rewrite_manifests(&src.index, &manifests)?
    } else {
        src.index.clone()
    };
    let digest = pusher.manifest(&index, &src.media_type, &tag)?;
    Ok(PushReport {
        reference: dest.display_with(&tag),
        digest,
        manifest_size: index.len() as u64,
        uploaded_bytes: reports.iter().map(|r| r.uploaded_bytes).sum(),
        blobs: reports,
    })
}

/// The index with each manifest descriptor naming the manifest that was pushed for it.
fn rewrite_manifests(
    index: &[u8],
    pushed: &std::collections::BTreeMap<Digest, (Digest, u64)>,
) -> Result<Vec<u8>, RegistryError> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(index).map_err(|e| RegistryError::Invalid(format!("index: {e}")))?;
    if let Some(descs) = doc.get_mut("manifests").and_then(|l| l.as_array_mut()) {
        for desc in descs.iter_mut().filter_map(|d| d.as_object_mut()) {
            let listed = desc.get("digest").and_then(|d| d.as_str()).unwrap_or("");
            let pushed_as = Digest::parse(listed).ok().and_then(|d| pushed.get(&d));
            if let Some((digest, size)) = pushed_as {
                let (digest, size) = (digest.to_string(), *size);
                desc.insert("digest".into(), digest.into());
                desc.insert("size".into(), size.into());
            }
        }
    }
    serde_json::to_vec(&doc).map_err(|e| RegistryError::Invalid(format!("index: {e}")))
}

/// The plain-HTTP rule: TLS unless the registry is on loopback or `--plain-http` says so;
/// `--tls` forces it on loopback too.
pub fn uses_tls(transport: Transport, dest: &Reference) -> bool {
    match transport {
        Transport::Auto => !dest.is_loopback(),
        Transport::PlainHttp => false,
        Transport::Tls => true,
    }
}

pub(crate) struct Pusher<'a> {
    pub(crate) client: &'a Client,
    pub(crate) repo: &'a str,
    pub(crate) opts: &'a PushOptions,
}

/// Statuses that mean "this registry does not take chunks": fall back to monolithic.
pub(crate) fn refuses_chunks(status: u16) -> bool {
    matches!(status, 400 | 405 | 411 | 413 | 415 | 416 | 501)
}

impl Pusher<'_> {
    fn fail(&self, what: &str, blob: &Blob, resp: &Response) -> RegistryError {
        RegistryError::Registry(format!(
            "{what} {} to {}: {}",
            short(&blob.digest),
            self.repo,
            error_text(resp)
        ))
    }

    pub(crate) fn blob(
        &self,
        kind: &'static str,
        blob: &Blob,
    ) -> Result<BlobReport, RegistryError> {
        let mut report = BlobReport {
            kind,
            digest: blob.digest.clone(),
            size: blob.size,
            media_type: blob.media_type.clone(),
            action: BlobAction::Skipped,
            uploaded_bytes: 0,
            chunks: 0,
            fell_back: false,
        };
        let c = self.client;
        let head = c.send(
            "HEAD",
            &c.url(&format!("/v2/{}/blobs/{}", self.repo, blob.digest)),
            &[],
            &Body::Empty,
        )?;
        match head.status {
            200 => return Ok(report),
            404 => {}
            _ => return Err(self.fail("HEAD blob", blob, &head)),
        }
        let mut location = None;
        if let Some(from) = &self.opts.mount_from {
            let url = c.url(&format!(
                "/v2/{}/blobs/uploads/?mount={}&from={}",
                self.repo, blob.digest, from
            ));
            let resp = c.send("POST", &url, &[], &Body::Bytes(b""))?;
            match resp.status {
                201 => {
                    report.action = BlobAction::Mounted;
                    return Ok(report);
                }
                202 => location = Some(session_location(&resp, "mounting", blob)?),
                _ => return Err(self.fail("mounting blob", blob, &resp)),
            }
        }
        // Not one byte of a blob goes out before its digest is checked.
        if let Err(e) = verify(blob) {
            if let Some(l) = &location {
                self.abandon(l);
            }
            return Err(e);
        }
        let location = match location {
            Some(l) => l,
            None => self.start_session(blob)?,
        };
        report.action = BlobAction::Uploaded;
        let result = match self.opts.chunk_size {
            Some(chunk) => self.chunked(blob, &location, chunk, &mut report),
            None => self.monolithic(blob, &location, &mut report),
        };
        result.inspect_err(|_| self.abandon(&location))?;
        Ok(report)
    }

    /// An uncompressed layer pushed compressed: when the cache knows what it compresses to
    /// and the registry has that, it is skipped without compressing; otherwise it is
    /// compressed to `path` and pushed.
    fn compressed_layer(&self, layer: &Blob, path: &Path) -> Result<BlobReport, RegistryError> {
        let compression = self.opts.compression;
        let media_type = compression.media_type().to_string();
        let key = self
            .opts
            .cache
            .as_ref()
            .map(|dir| dir.join(format!("{}-{}", compression.name(), layer.digest.hex())));
        let known = key.as_ref().and_then(|k| read_cache_entry(k));
        if let Some((digest, size)) = &known {
            let c = self.client;
            let url = c.url(&format!("/v2/{}/blobs/{digest}", self.repo));
            if c.send("HEAD", &url, &[], &Body::Empty)?.status == 200 {
                return Ok(BlobReport {
                    kind: "layer",
                    digest: digest.clone(),
                    size: *size,
                    media_type,
                    action: BlobAction::Skipped,
                    uploaded_bytes: 0,
                    chunks: 0,
                    fell_back: false,
                });
            }
        }
        let blob = compress_one(layer, compression, path)?;
        if let Some(k) = &key
            && known.as_ref() != Some(&(blob.digest.clone(), blob.size))
        {
            write_cache_entry(k, &blob.digest, blob.size);
        }
        self.blob("layer", &blob)
    }

    fn start_session(&self, blob: &Blob) -> Result<String, RegistryError> {
        let c = self.client;
        let url = c.url(&format!("/v2/{}/blobs/uploads/", self.repo));
        let resp = c.send("POST", &url, &[], &Body::Bytes(b""))?;
        if resp.status != 202 {
            return Err(self.fail("starting the upload of", blob, &resp));
        }
        session_location(&resp, "starting the upload of", blob)
    }

    /// Best effort: cancel an upload session that failed.
    fn abandon(&self, location: &str) {
        let _ = self.client.send("DELETE", location, &[], &Body::Empty);
    }

    fn check_stored(&self, blob: &Blob, resp: &Response) -> Result<(), RegistryError> {
        if resp.status != 201 {
            return Err(self.fail("uploading blob", blob, resp));
        }
        match &resp.digest {
            Some(d) if blob.digest != *d => Err(RegistryError::Digest(format!(
                "the registry stored blob {} as {d}",
                blob.digest
            ))),
            _ => Ok(()),
        }
    }

    /// `PUT` the whole blob to the session.
    fn monolithic(
        &self,
        blob: &Blob,
        location: &str,
        report: &mut BlobReport,
    ) -> Result<(), RegistryError> {
        let upload = Upload::new(blob, self.opts.progress.clone())?;
        // Sent again after a 401 (a token that expired): from the start.
        let open = || {
            upload.restart()?;
            upload.take(blob.size)
        };
        let resp = self.client.send(
            "PUT",
            &finish_url(location, &blob.digest),
            &[("Content-Type", "application/octet-stream")],
            &Body::Stream {
                open: &open,
                len: blob.size,
            },
        );
        report.uploaded_bytes += upload.sent();
        upload.check()?;
        self.check_stored(blob, &resp?)
    }

    /// `PATCH` chunks, then `PUT` with no body; monolithic if the registry refuses the first
    /// chunk.
    fn chunked(
        &self,
        blob: &Blob,
        location: &str,
        chunk: u64,
        report: &mut BlobReport,
    ) -> Result<(), RegistryError> {
        let upload = Upload::new(blob, self.opts.progress.clone())?;
        let mut location = location.to_string();
        let mut offset = 0u64;
        while offset < blob.size {
            let len = chunk.min(blob.size - offset);
            let range = format!("{}-{}", offset, offset + len - 1);
            let opened = std::cell::Cell::new(false);
            let open = || {
                if opened.replace(true) {
                    // A 401 in the middle: the chunk's bytes are gone; the next push resumes
                    // with the blobs already there.
                    return Err(io::Error::other(
                        "the registry asked for credentials again in the middle of a chunked upload; push again",
                    ));
                }
                upload.take(len)
            };
            let resp = self.client.send(
                "PATCH",
                &location,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &range),
                ],
                &Body::Stream { open: &open, len },
            );
            report.uploaded_bytes = upload.sent();
            upload.check()?;
            let resp = resp?;
            report.chunks += 1;
            if resp.status != 202 {
                if offset == 0 && refuses_chunks(resp.status) {
                    self.abandon(&location);
                    report.fell_back = true;
                    let fresh = self.start_session(blob)?;
                    return self
                        .monolithic(blob, &fresh, report)
                        .inspect_err(|_| self.abandon(&fresh));
                }
                return Err(self.fail("uploading a chunk of", blob, &resp));
            }
            location = session_location(&resp, "uploading a chunk of", blob)?;
            offset += len;
        }
        if blob.size == 0 {
            // Nothing was read: the empty blob's digest is checked here.
            upload.check_complete()?;
        }
        let resp = self.client.send(
            "PUT",
            &finish_url(&location, &blob.digest),
            &[],
            &Body::Bytes(b""),
        )?;
        self.check_stored(blob, &resp)
    }

    pub(crate) fn manifest(
        &self,
        bytes: &[u8],
        media_type: &str,
        tag: &str,
    ) -> Result<Digest, RegistryError> {
        let c = self.client;
        let digest = Digest::sha256_of(bytes);
        let url = c.url(&format!("/v2/{}/manifests/{tag}", self.repo));
        let resp = c.send(
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            &Body::Bytes(bytes),
        )?;
        if resp.status != 201 {
            return Err(RegistryError::Registry(format!(
                "PUT manifest {}:{tag}: {}",
                self.repo,
                error_text(&resp)
            )));
        }
        if let Some(stored) = &resp.digest
            && digest != *stored
        {
            // The tag now names something other than what we sent: take it back if the
            // registry lets us (by the digest it gave, else by the digest of our bytes).
            let undone = [stored.clone(), digest.to_string()].iter().any(|d| {
                let url = c.url(&format!("/v2/{}/manifests/{d}", self.repo));
                c.send("DELETE", &url, &[], &Body::Empty)
                    .is_ok_and(|r| r.status == 202)
            });
            return Err(RegistryError::Digest(format!(
                "the registry stored the manifest of {}:{tag} as {stored}, not {digest} ({})",
                self.repo,
                if undone {
                    "deleted again"
                } else {
                    "the registry refused to delete it"
                }
            )));
        }
        Ok(digest)
    }
}

/// `sha256:0123456789ab` for messages.
fn short(digest: &Digest) -> String {
    let mut text = digest.to_string();
    text.truncate(19);
    text
}

/// The upload session URL an answer gives (its `Location`, resolved against the URL that
/// answered).
fn session_location(resp: &Response, what: &str, blob: &Blob) -> Result<String, RegistryError> {
    match &resp.location {
        Some(Ok(l)) => Ok(l.clone()),
        Some(Err(why)) => Err(RegistryError::Registry(format!(
            "{what} {}: {why}",
            short(&blob.digest)
        ))),
        None => Err(RegistryError::Registry(format!(
            "{what} {}: no Location in the answer",
            short(&blob.digest)
        ))),
    }
}

/// The session URL with `digest=` added to its query (which carries the session's state).
pub(crate) fn finish_url(location: &str, digest: &Digest) -> String {
    let digest = &digest.to_string();
    match url::Url::parse(location) {
        Ok(mut url) => {
            url.query_pairs_mut().append_pair("digest", digest);
            url.into()
        }
        Err(_) => location.to_string(),
    }
}

/// Check that a blob's bytes hash to its digest, before any of them is sent (a blob whose
/// digest was computed from its bytes is not read again).
fn verify(blob: &Blob) -> Result<(), RegistryError> {
    if blob.verified {
        return Ok(());
    }
    let mut reader = blob.open().map_err(|e| image_error(blob, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                read += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(image_error(blob, e)),
        }
    }
    if read != blob.size {
        return Err(RegistryError::Digest(format!(
            "{}: blob {} is {read} bytes, not {}: the image is corrupt; nothing was tagged",
            location_name(blob),
            blob.digest,
            blob.size
        )));
    }
    let got = Digest::sha256_of_hash(&hasher.finalize());
    if got != blob.digest {
        return Err(RegistryError::Digest(mismatch_text(blob, &got)));
    }
    Ok(())
}

/// One blob's bytes on their way out: read once, in order, across one request (monolithic) or
/// several (chunks), hashed and counted as they go. The read that would deliver the blob's
/// last bytes first checks the digest and fails instead when it does not match, so the
/// registry never receives a complete corrupt blob.
struct Upload<'a> {
    blob: &'a Blob,
    state: Arc<Mutex<UploadState>>,
}

struct UploadState {
    reader: Box<dyn Read + Send>,
    hasher: Sha256,
    read: u64,
    sent: u64,
    mismatch: Option<String>,
    progress: Option<Arc<AtomicU64>>,
}

impl<'a> Upload<'a> {
    fn new(blob: &'a Blob, progress: Option<Arc<AtomicU64>>) -> Result<Upload<'a>, RegistryError> {
        let reader = blob.open().map_err(|e| image_error(blob, e))?;
        Ok(Upload {
            blob,
            state: Arc::new(Mutex::new(UploadState {
                reader,
                hasher: Sha256::new(),
                read: 0,
                sent: 0,
                mismatch: None,
                progress,
            })),
        })
    }

    /// Back to the blob's first byte (the bytes sent so far stay counted).
    fn restart(&self) -> io::Result<()> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| io::Error::other("upload state poisoned"))?;
        if state.read > 0 {
            state.reader = self.blob.open()?;
            state.hasher = Sha256::new();
            state.read = 0;
            state.mismatch = None;
        }
        Ok(())
    }

    /// A reader over the next `len` bytes.
    fn take(&self, len: u64) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(Part {
            upload: self,
            left: len,
        }))
    }

    fn sent(&self) -> u64 {
        self.state.lock().map(|s| s.sent).unwrap_or(0)
    }

    /// The digest error found while sending, if any.
    fn check(&self) -> Result<(), RegistryError> {
        match self.state.lock().ok().and_then(|s| s.mismatch.clone()) {
            Some(m) => Err(RegistryError::Digest(m)),
            None => Ok(()),
        }
    }

    fn check_complete(&self) -> Result<(), RegistryError> {
        let state = self
            .state
            .lock()
            .map_err(|_| RegistryError::Digest("poisoned".into()))?;
        let got = sha256_digest(&state.hasher);
        if got != self.blob.digest {
            return Err(RegistryError::Digest(mismatch_text(self.blob, &got)));
        }
        Ok(())
    }
}

/// The digest of what a hasher has seen so far.
fn sha256_digest(hasher: &Sha256) -> Digest {
    Digest::sha256_of_hash(&hasher.clone().finalize())
}

fn mismatch_text(blob: &Blob, got: &Digest) -> String {
    format!(
        "{}: blob {} holds bytes that hash to {got}: the image is corrupt; nothing was tagged",
        location_name(blob),
        blob.digest
    )
}

fn location_name(blob: &Blob) -> String {
    blob.location.shown()
}

fn image_error(blob: &Blob, source: io::Error) -> RegistryError {
    RegistryError::ImageIo {
        path: location_name(blob),
        message: format!("blob {}: {source}", blob.digest),
        source,
    }
}

struct Part<'u, 'a> {
    upload: &'u Upload<'a>,
    left: u64,
}

impl Read for Part<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let mut state = self
            .upload
            .state
            .lock()
            .map_err(|_| io::Error::other("upload state poisoned"))?;
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = state.reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "blob {} is shorter than {} bytes",
                    self.upload.blob.digest, self.upload.blob.size
                ),
            ));
        }
        state.hasher.update(&buf[..n]);
        state.read += n as u64;
        if state.read == self.upload.blob.size {
            let got = sha256_digest(&state.hasher);
            if got != self.upload.blob.digest {
                state.mismatch = Some(mismatch_text(self.upload.blob, &got));
                return Err(io::Error::other("digest mismatch"));
            }
        }
        self.left -= n as u64;
        state.sent += n as u64;
        if let Some(p) = &state.progress {
            p.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Copy in fixed 64 KiB writes: the compressors' output depends on how the input is split,
/// so the split must not depend on the platform or the standard library.
fn copy_fixed(from: &mut dyn Read, to: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match from.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..filled])?;
        total += filled as u64;
    }
}

/// A cache entry: `sha256:<hex> <size>`; anything unreadable is no entry.
fn read_cache_entry(path: &Path) -> Option<(Digest, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (digest, size) = text.trim().split_once(' ')?;
    let digest = Digest::parse(digest).ok()?;
    (digest.algorithm() == crate::oci::digest::Algorithm::Sha256)
        .then_some(())
        .and(Some((digest, size.parse().ok()?)))
}

/// Best effort (the cache only saves work): written under a temporary name and renamed.
fn write_cache_entry(path: &Path, digest: &Digest, size: u64) {
    let Some(dir) = path.parent() else { return };
    let _ = std::fs::create_dir_all(dir);
    if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir)
        && writeln!(tmp, "{digest} {size}").is_ok()
    {
        let _ = tmp.persist(path);
    }
}

/// Compress one uncompressed layer with the pinned encoders into `path`, checking on the way
/// that its bytes hash to its digest (the diff_id).
fn compress_one(blob: &Blob, compression: Compression, path: &Path) -> Result<Blob, RegistryError> {
    let io_err = |e: io::Error| image_error(blob, e);
    let file = std::fs::File::create(path).map_err(io_err)?;
    let outer = Digester::new(io::BufWriter::new(file));
    let mut reader = blob.open().map_err(io_err)?;
    let enc = compression.encoder(outer).map_err(io_err)?;
    let mut inner = Digester::new(enc);
    copy_fixed(&mut reader, &mut inner).map_err(io_err)?;
    let (diff_id, _, enc) = inner.finish_digest();
    let (digest, size, mut w) = enc.finish().map_err(io_err)?.finish_digest();
    w.flush().map_err(io_err)?;
    if diff_id != blob.digest {
        return Err(RegistryError::Digest(mismatch_text(blob, &diff_id)));
    }
    Ok(Blob {
        media_type: compression.media_type().to_string(),
        digest,
        size,
        location: BlobLocation::File(path.to_path_buf()),
        // Its digest was computed from the bytes as they were written.
        verified: true,
    })
}

/// The manifest with each layer descriptor naming the blob that was pushed for it (keys in
/// the same order, compact JSON).
fn rewrite_layers(manifest: &[u8], reports: &[BlobReport]) -> Result<Vec<u8>, RegistryError> {
    let mut doc: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| RegistryError::Invalid(format!("manifest: {e}")))?;
    let layers = reports.iter().filter(|r| r.kind == "layer");
    if let Some(descs) = doc.get_mut("layers").and_then(|l| l.as_array_mut()) {
        for (desc, r) in descs.iter_mut().zip(layers) {
            if let Some(d) = desc.as_object_mut() {
                d.insert("mediaType".into(), r.media_type.clone().into());
                d.insert("digest".into(), r.digest.to_string().into());
                d.insert("size".into(), r.size.into());
            }
        }
    }
    serde_json::to_vec(&doc).map_err(|e| RegistryError::Invalid(format!("manifest: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_or_when_asked() {
        let r = |s: &str| Reference::parse(s).unwrap();
        assert!(!uses_tls(Transport::Auto, &r("127.0.0.1:5000/a")));
        assert!(!uses_tls(Transport::Auto, &r("localhost:5000/a")));
        assert!(!uses_tls(Transport::Auto, &r("[::1]:5000/a")));
        assert!(uses_tls(Transport::Auto, &r("10.0.0.1:5000/a")));
        assert!(uses_tls(Transport::Auto, &r("registry.example/a")));
        assert!(uses_tls(Transport::Auto, &r("a")));
        assert!(!uses_tls(Transport::PlainHttp, &r("registry.example/a")));
        assert!(uses_tls(Transport::Tls, &r("127.0.0.1:5000/a")));
    }

    fn blob_file(dir: &Path, data: &[u8], digest_of: &[u8]) -> Blob {
        let path = dir.join(format!("blob-{}", Digest::sha256_of(data).hex()));
        std::fs::write(&path, data).unwrap();
        Blob {
            media_type: crate::oci::media_type::OCI_LAYER.into(),
            digest: Digest::sha256_of(digest_of),
            size: data.len() as u64,
            location: BlobLocation::File(path),
            verified: false,
        }
    }

    #[test]
    fn the_last_bytes_of_a_corrupt_blob_are_never_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 100_000];
        let good = blob_file(dir.path(), &data, &data);
        let upload = Upload::new(&good, None).unwrap();
        let mut out = Vec::new();
        for len in [40_000, 40_000, 20_000] {
            upload.take(len).unwrap().read_to_end(&mut out).unwrap();
        }
        assert_eq!(out, data);
        assert!(upload.check().is_ok());
        upload.restart().unwrap();
        let mut again = Vec::new();
        upload
            .take(100_000)
            .unwrap()
            .read_to_end(&mut again)
            .unwrap();
        assert_eq!(again, data);
        assert!(upload.check().is_ok());

        let mut corrupt = data.clone();
        corrupt[99_999] = 8;
        let bad = blob_file(dir.path(), &corrupt, &data);
        let upload = Upload::new(&bad, None).unwrap();
        let mut out = Vec::new();
        let err = upload.take(100_000).unwrap().read_to_end(&mut out);
        assert!(err.is_err());
        assert!(out.len() < data.len(), "the last read is withheld");
        assert_eq!(upload.sent(), out.len() as u64);
        let msg = upload.check().unwrap_err().to_string();
        assert!(msg.contains("corrupt"), "{msg}");
    }

    #[test]
    fn compression_is_deterministic_and_rewrites_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let layer = blob_file(dir.path(), &data, &data);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": source::OCI_MANIFEST,
            "config": {"mediaType": source::OCI_CONFIG, "digest": "sha256:00", "size": 2},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
        });
        for c in [Compression::Gzip, Compression::Zstd] {
            let a = compress_one(&layer, c, &dir.path().join("a")).unwrap();
            let b = compress_one(&layer, c, &dir.path().join("b")).unwrap();
            assert_eq!((&a.digest, a.size), (&b.digest, b.size));
            assert_eq!(
                std::fs::read(dir.path().join("a")).unwrap(),
                std::fs::read(dir.path().join("b")).unwrap()
            );
            assert_eq!(a.media_type, c.media_type());
            assert!(a.size < 10_000);
            let report = BlobReport {
                kind: "layer",
                digest: a.digest.clone(),
                size: a.size,
                media_type: a.media_type.clone(),
                action: BlobAction::Uploaded,
                uploaded_bytes: a.size,
                chunks: 0,
                fell_back: false,
            };
            let bytes = rewrite_layers(&serde_json::to_vec(&manifest).unwrap(), &[report]).unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(doc["layers"][0]["digest"], a.digest.to_string().as_str());
            assert_eq!(doc["layers"][0]["mediaType"], c.media_type());
            assert_eq!(doc["config"], manifest["config"]);
        }
        // A corrupt layer is caught while compressing.
        let bad = blob_file(dir.path(), &data[1..], &data[1..]);
        let mut bytes = data[1..].to_vec();
        bytes[5] ^= 1;
        std::fs::write(
            match &bad.location {
                BlobLocation::File(p) => p.clone(),
                BlobLocation::InTar { path, .. } => path.clone(),
                BlobLocation::InDir { root, name } => root.join(name),
            },
            bytes,
        )
        .unwrap();
        assert!(compress_one(&bad, Compression::Gzip, &dir.path().join("c")).is_err());
    }

    #[test]
    fn an_index_names_the_manifests_that_were_pushed() {
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"digest": Digest::sha256_of(b"a").to_string(), "size": 1, "platform": {"architecture": "amd64"}},
            {"digest": Digest::sha256_of(b"b").to_string(), "size": 2, "platform": {"architecture": "arm64"}},
        ]});
        let pushed = std::collections::BTreeMap::from([(
            Digest::sha256_of(b"b"),
            (Digest::sha256_of(b"c"), 3),
        )]);
        let bytes = rewrite_manifests(&serde_json::to_vec(&index).unwrap(), &pushed).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["manifests"][0], index["manifests"][0]);
        assert_eq!(
            doc["manifests"][1]["digest"],
            Digest::sha256_of(b"c").to_string()
        );
        assert_eq!(doc["manifests"][1]["size"], 3);
        assert_eq!(doc["manifests"][1]["platform"]["architecture"], "arm64");
    }

    #[test]
    fn cache_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/gzip-ab");
        let digest = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        write_cache_entry(&p, &digest, 42);
        assert_eq!(read_cache_entry(&p), Some((digest, 42)));
        std::fs::write(&p, "sha256:zz 1\n").unwrap();
        assert_eq!(read_cache_entry(&p), None);
        assert_eq!(read_cache_entry(&dir.path().join("none")), None);
    }
}
