//! The registry sink: an image plan pushed straight to a registry, with no image tar written
//! and read back. It exists because after a small change most layers are unchanged: their
//! digests and sizes are in the layer cache, so one `HEAD` each tells whether the registry has
//! them, and neither the store nor the cache is read for them.
//!
//! For each layer, in order:
//!
//! - a layer the plan knows already (a cache hit): `HEAD` its digest; if the registry has it,
//!   nothing is read; otherwise its bytes are taken as below;
//! - any other layer: the plan streams it ([`ImagePlan::write_layer`], each store file read
//!   once) into an [`Upload`]. Its bytes are held up to one chunk; a blob that fits in one
//!   chunk is looked up with `HEAD` once its digest is known, and sent in one `PUT` only if
//!   the registry lacks it. A bigger one goes up as it is made, through a chunked upload
//!   session (`POST`, `PATCH`…, `PUT ?digest=`), and is never held whole. A registry that
//!   refuses the first chunk gets the blob monolithic, spooled to a temporary file.
//!
//! Then the config blob and the OCI manifest: the very bytes the layout sink writes, so
//! `push-image` of mkimage's tar and this push give the same manifest digest. The HTTP client,
//! auth (credentials only to the registry's origin), the plain-HTTP rule and timeouts are
//! `registry`'s, shared with `push-image`.

use std::io::{self, Write};
use std::sync::atomic::Ordering;

use super::ImageError;
use super::archive::BlobOut;
use super::config::{MEDIA_CONFIG, MEDIA_MANIFEST};
use super::plan::{ImageDocuments, ImagePlan};
use super::sink::{ImageSink, emit};
use super::temp::{Temp, reclaim};
use crate::oci::Digest;
use crate::registry::RegistryError;
use crate::registry::client::{Body, Response, error_text};
use crate::registry::push::{
    BlobAction, BlobReport, PushOptions, PushReport, Pusher, check_options, connect, finish_url,
    refuses_chunks,
};
use crate::registry::reference::Reference;
use crate::registry::source::{Blob, BlobLocation};

/// Chunk size of a streamed upload when `PushOptions::chunk_size` gives none.
pub const STREAM_CHUNK: u64 = 16 << 20;

/// The prefix of a blob spooled in `$TMPDIR` for a registry that refuses chunks
/// (`mkimage-spool-XXXXXX.tmp`).
const SPOOL_PREFIX: &str = "mkimage-spool-";

/// Push `plan` to `dest`: every layer the registry lacks, then the config and manifest.
/// `each` is called with a layer's number before it is taken, `on_blob` when a blob is done.
pub fn push_plan(
    plan: &mut ImagePlan<'_>,
    dest: &Reference,
    opts: &PushOptions,
    each: &mut dyn FnMut(usize),
    on_blob: &dyn Fn(&BlobReport),
) -> Result<(ImageDocuments, PushReport), ImageError> {
    check_options(opts)?;
    let client = connect(dest, opts)?;
    let tag = dest.tag.clone().unwrap_or_else(|| plan.tag.clone());
    let mut report = None;
    let sink = RegistrySink {
        pusher: Pusher {
            client: &client,
            repo: &dest.repository,
            opts,
        },
        reference: dest.display_with(&tag),
        tag,
        chunk: opts.chunk_size.unwrap_or(STREAM_CHUNK),
        blobs: Vec::new(),
        on_blob,
        report: &mut report,
    };
    let docs = emit(plan, sink, each)?;
    let report =
        report.ok_or_else(|| ImageError::Stream("the push did not reach the manifest".into()))?;
    Ok((docs, report))
}

/// Pushes a plan's blobs as the plan yields them; the report is left in `report`.
struct RegistrySink<'a> {
    pusher: Pusher<'a>,
    tag: String,
    reference: String,
    chunk: u64,
    blobs: Vec<BlobReport>,
    on_blob: &'a dyn Fn(&BlobReport),
    report: &'a mut Option<PushReport>,
}

impl RegistrySink<'_> {
    fn done(&mut self, report: BlobReport) {
        (self.on_blob)(&report);
        self.blobs.push(report);
    }

    /// Whether the registry has the blob `digest` (`sha256:…`).
    fn has(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let c = self.pusher.client;
        let url = c.url(&format!("/v2/{}/blobs/{digest}", self.pusher.repo));
        let head = c.send("HEAD", &url, &[], &Body::Empty)?;
        match head.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(RegistryError::Registry(format!(
                "HEAD blob {} in {}: {}",
                short(digest),
                self.pusher.repo,
                error_text(&head)
            ))),
        }
    }
}

impl ImageSink for RegistrySink<'_> {
    fn layer(&mut self, plan: &mut ImagePlan<'_>, i: usize) -> Result<(), ImageError> {
        if let Some(known) = &plan.layers[i].blob
            && self.has(&known.digest)?
        {
            let report = skipped("layer", &known.digest, known.size, known.media_type);
            self.done(report);
            return Ok(());
        }
        // The media type is the plan's, known once the layer is written.
        let mut up = Upload::new(&self.pusher, self.chunk, "layer", "");
        let written = plan.write_layer(i, &mut up);
        let facts = match written {
            Ok(f) => f.clone(),
            Err(e) => {
                up.abandon();
                return Err(up.failure.take().map_or(e, ImageError::from));
            }
        };
        let mut report = up
            .report
            .take()
            .ok_or_else(|| ImageError::Stream(format!("layer {} was not uploaded", i + 1)))?;
        report.media_type = facts.media_type.to_string();
        self.done(report);
        Ok(())
    }

    fn finish(mut self, _plan: &ImagePlan<'_>, docs: &ImageDocuments) -> Result<(), ImageError> {
        let mut up = Upload::new(&self.pusher, self.chunk, "config", MEDIA_CONFIG);
        let sent = up
            .begin_blob()
            .and_then(|()| up.write_all(&docs.config))
            .and_then(|()| up.end_blob(docs.config_digest.hex(), docs.config.len() as u64));
        if let Err(e) = sent {
            up.abandon();
            return Err(match up.failure.take() {
                Some(f) => f.into(),
                None => ImageError::Stream(e.to_string()),
            });
        }
        if let Some(r) = up.report.take() {
            self.done(r);
        }
        let digest = self
            .pusher
            .manifest(&docs.manifest, MEDIA_MANIFEST, &self.tag)?;
        *self.report = Some(PushReport {
            reference: self.reference.clone(),
            digest,
            manifest_size: docs.manifest.len() as u64,
            uploaded_bytes: self.blobs.iter().map(|b| b.uploaded_bytes).sum(),
            blobs: std::mem::take(&mut self.blobs),
        });
        Ok(())
    }
}

fn skipped(kind: &'static str, digest: &Digest, size: u64, media_type: &str) -> BlobReport {
    BlobReport {
        kind,
        digest: digest.clone(),
        size,
        media_type: media_type.to_string(),
        action: BlobAction::Skipped,
        uploaded_bytes: 0,
        chunks: 0,
        fell_back: false,
    }
}

/// `sha256:0123456789ab` for messages.
fn short(digest: &Digest) -> String {
    let text = digest.to_string();
    text[..text.len().min(19)].to_string()
}

/// One blob on its way to the registry while it is being made (a [`BlobOut`]): bytes held up
/// to a chunk, then sent in `PATCH`es of a session; at the end, `PUT ?digest=` with the digest
/// of exactly the bytes sent (the registry checks it). A blob that never filled a chunk is
/// looked up first and sent only if missing.
struct Upload<'s, 'a> {
    pusher: &'s Pusher<'a>,
    chunk: u64,
    kind: &'static str,
    media_type: &'static str,
    buf: Vec<u8>,
    /// The session's current `Location`, once the first chunk went.
    session: Option<String>,
    offset: u64,
    sent: u64,
    chunks: u64,
    /// The registry refused chunks: the blob is spooled here and sent whole at the end (a
    /// temporary of the build's: removed on a signal, reclaimed after a kill).
    spool: Option<Temp>,
    /// The registry error behind an `io::Error` handed to the plan.
    failure: Option<RegistryError>,
    report: Option<BlobReport>,
}

impl<'s, 'a> Upload<'s, 'a> {
    fn new(
        pusher: &'s Pusher<'a>,
        chunk: u64,
        kind: &'static str,
        media_type: &'static str,
    ) -> Upload<'s, 'a> {
        Upload {
            pusher,
            chunk: chunk.max(1),
            kind,
            media_type,
            buf: Vec::new(),
            session: None,
            offset: 0,
            sent: 0,
            chunks: 0,
            spool: None,
            failure: None,
            report: None,
        }
    }

    /// Keep `e` for the caller; hand the plan an `io::Error` saying the same.
    fn fail(&mut self, e: RegistryError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.failure = Some(e);
        err
    }

    fn count(&mut self, n: u64) {
        self.sent += n;
        if let Some(p) = &self.pusher.opts.progress {
            p.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn start_session(&mut self) -> Result<String, RegistryError> {
        let c = self.pusher.client;
        let url = c.url(&format!("/v2/{}/blobs/uploads/", self.pusher.repo));
        let resp = c.send("POST", &url, &[], &Body::Bytes(b""))?;
        if resp.status != 202 {
            return Err(self.refused("starting an upload to", &resp));
        }
        location(&resp, "starting an upload")
    }

    fn refused(&self, what: &str, resp: &Response) -> RegistryError {
        RegistryError::Registry(format!("{what} {}: {}", self.pusher.repo, error_text(resp)))
    }

    /// Send the first `n` held bytes as the next chunk.
    fn send_chunk(&mut self, n: usize) -> Result<(), RegistryError> {
        let loc = match &self.session {
            Some(l) => l.clone(),
            None => {
                let l = self.start_session()?;
                self.session = Some(l.clone());
                l
            }
        };
        let range = format!("{}-{}", self.offset, self.offset + n as u64 - 1);
        let resp = self.pusher.client.send(
            "PATCH",
            &loc,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            &Body::Bytes(&self.buf[..n]),
        )?;
        self.chunks += 1;
        if resp.status != 202 {
            if self.offset == 0 && refuses_chunks(resp.status) {
                // Whole, then: the rest goes to a temporary file and up in one PUT at the end.
                self.abandon();
                let file_err =
                    |e: io::Error| RegistryError::Invalid(format!("temporary file: {e}"));
                let tmpdir = std::env::temp_dir();
                reclaim(&tmpdir, SPOOL_PREFIX);
                let spool = Temp::file(&tmpdir, SPOOL_PREFIX).map_err(file_err)?;
                spool.file_handle().write_all(&self.buf).map_err(file_err)?;
                self.buf.clear();
                self.spool = Some(spool);
                return Ok(());
            }
            return Err(self.refused("uploading a chunk to", &resp));
        }
        self.count(n as u64);
        self.session = Some(location(&resp, "uploading a chunk")?);
        self.offset += n as u64;
        self.buf.drain(..n);
        Ok(())
    }

    /// Best effort: cancel the session.
    fn abandon(&mut self) {
        if let Some(l) = self.session.take() {
            let _ = self.pusher.client.send("DELETE", &l, &[], &Body::Empty);
        }
    }

    fn check_stored(&self, digest: &Digest, resp: &Response) -> Result<(), RegistryError> {
        if resp.status != 201 {
            return Err(RegistryError::Registry(format!(
                "uploading blob {} to {}: {}",
                short(digest),
                self.pusher.repo,
                error_text(resp)
            )));
        }
        match &resp.digest {
            Some(d) if Digest::parse(d).ok().as_ref() != Some(digest) => Err(
                RegistryError::Digest(format!("the registry stored blob {digest} as {d}")),
            ),
            _ => Ok(()),
        }
    }

    fn finish(&mut self, digest: &Digest, size: u64) -> Result<BlobReport, RegistryError> {
        let mut report = skipped(self.kind, digest, size, self.media_type);
        if let Some(spool) = self.spool.take() {
            let file_err = |e: io::Error| RegistryError::Invalid(format!("temporary file: {e}"));
            spool.file_handle().write_all(&self.buf).map_err(file_err)?;
            self.buf.clear();
            let blob = Blob {
                media_type: self.media_type.to_string(),
                digest: digest.clone(),
                size,
                location: BlobLocation::File(spool.path().to_path_buf()),
                // Hashed on its way into the spool: the digest is of these bytes.
                verified: true,
            };
            let mut r = self.pusher.blob(self.kind, &blob)?;
            r.fell_back = true;
            r.chunks += self.chunks;
            return Ok(r);
        }
        let c = self.pusher.client;
        let resp = match self.session.take() {
            None => {
                let url = c.url(&format!("/v2/{}/blobs/{digest}", self.pusher.repo));
                let head = c.send("HEAD", &url, &[], &Body::Empty)?;
                match head.status {
                    200 => return Ok(report),
                    404 => {}
                    _ => {
                        return Err(self.refused(&format!("HEAD blob {} in", short(digest)), &head));
                    }
                }
                let loc = self.start_session()?;
                self.session = Some(loc.clone());
                let resp = c.send(
                    "PUT",
                    &finish_url(&loc, digest),
                    &[("Content-Type", "application/octet-stream")],
                    &Body::Bytes(&self.buf),
                )?;
                self.count(self.buf.len() as u64);
                resp
            }
            Some(loc) => {
                self.session = Some(loc);
                if !self.buf.is_empty() {
                    self.send_chunk(self.buf.len())?;
                }
                let loc = self.session.clone().unwrap_or_default();
                c.send("PUT", &finish_url(&loc, digest), &[], &Body::Bytes(b""))?
            }
        };
        self.check_stored(digest, &resp)?;
        self.session = None;
        self.buf.clear();
        report.action = BlobAction::Uploaded;
        report.uploaded_bytes = self.sent;
        report.chunks = self.chunks;
        Ok(report)
    }
}

/// The upload session URL an answer gives.
fn location(resp: &Response, what: &str) -> Result<String, RegistryError> {
    match &resp.location {
        Some(Ok(l)) => Ok(l.clone()),
        Some(Err(why)) => Err(RegistryError::Registry(format!("{what}: {why}"))),
        None => Err(RegistryError::Registry(format!(
            "{what}: no Location in the answer"
        ))),
    }
}

impl Write for Upload<'_, '_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(spool) = &self.spool {
            return spool.file_handle().write(data);
        }
        self.buf.extend_from_slice(data);
        while self.spool.is_none() && self.buf.len() as u64 >= self.chunk {
            let n = self.chunk as usize;
            if let Err(e) = self.send_chunk(n) {
                return Err(self.fail(e));
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobOut for Upload<'_, '_> {
    fn begin_blob(&mut self) -> io::Result<()> {
        self.abandon();
        self.buf.clear();
        self.offset = 0;
        self.sent = 0;
        self.chunks = 0;
        self.spool = None;
        self.report = None;
        Ok(())
    }

    fn blob_writer(&mut self) -> &mut (dyn Write + Send) {
        self
    }

    fn end_blob(&mut self, digest: &str, size: u64) -> io::Result<()> {
        let digest = match Digest::sha256(digest) {
            Ok(d) => d,
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        match self.finish(&digest, size) {
            Ok(r) => {
                self.report = Some(r);
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn abort_blob(&mut self) -> io::Result<()> {
        self.abandon();
        self.buf.clear();
        self.spool = None;
        Ok(())
    }
}
