//! A base image (`--from`): a docker-archive (or strata's docker+OCI tar) whose layers go
//! first, unchanged, and whose config's `Env` is merged into ours the way nixpkgs does. The
//! rest of the base config is not kept (as in nixpkgs).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::ImageError;
use super::archive::{Digester, Sink};
use super::config::DockerManifest;
use super::layer::Compression;

/// A base layer as found in the archive.
#[derive(Debug, Clone)]
pub struct BaseLayer {
    pub name: String,
    offset: u64,
    pub size: u64,
    /// `sha256:<hex>` from the base config.
    pub diff_id: String,
}

#[derive(Debug, Clone)]
pub struct BaseImage {
    path: PathBuf,
    pub layers: Vec<BaseLayer>,
    pub env: Vec<String>,
    /// The bytes of the base config (part of the inputs hash).
    pub config_bytes: Vec<u8>,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid(format!("--from '{}': {why}", path.display()))
}

fn read_member(file: &mut File, offset: u64, size: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    file.take(size).read_to_end(&mut data)?;
    Ok(data)
}

impl BaseImage {
    pub fn open(path: &Path) -> Result<BaseImage, ImageError> {
        let file = File::open(path).map_err(ImageError::io(path))?;
        let mut archive = ::tar::Archive::new(&file);
        let mut members: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for entry in archive
            .entries()
            .map_err(|e| invalid(path, format!("not a tar: {e}")))?
        {
            let entry = entry.map_err(|e| invalid(path, format!("not a tar: {e}")))?;
            let name = entry
                .path()
                .map_err(|e| invalid(path, e))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
        let mut file = File::open(path).map_err(ImageError::io(path))?;
        let mut member = |name: &str| -> Result<Vec<u8>, ImageError> {
            let (off, size) = members
                .get(name.trim_start_matches("./"))
                .copied()
                .ok_or_else(|| invalid(path, format!("no '{name}' in the archive")))?;
            read_member(&mut file, off, size).map_err(ImageError::io(path))
        };
        let manifest: Vec<DockerManifest> = serde_json::from_slice(&member("manifest.json")?)
            .map_err(|e| invalid(path, format!("manifest.json: {e}")))?;
        let [manifest] = manifest.as_slice() else {
            return Err(invalid(
                path,
                "manifest.json must describe exactly one image",
            ));
        };
        let config_bytes = member(&manifest.config)?;
        let config: serde_json::Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(path, format!("{}: {e}", manifest.config)))?;
        let diff_ids = strings(&config["rootfs"]["diff_ids"]);
        if diff_ids.len() != manifest.layers.len() {
            return Err(invalid(
                path,
                format!(
                    "{} layers but {} diff_ids",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let env = strings(&config["config"]["Env"]);
        let mut layers = Vec::new();
        for (name, diff_id) in manifest.layers.iter().zip(diff_ids) {
            let (offset, size) = members
                .get(name.trim_start_matches("./"))
                .copied()
                .ok_or_else(|| invalid(path, format!("no layer '{name}' in the archive")))?;
            layers.push(BaseLayer {
                name: name.clone(),
                offset,
                size,
                diff_id,
            });
        }
        Ok(BaseImage {
            path: path.to_path_buf(),
            layers,
            env,
            config_bytes,
        })
    }

    /// Copy a base layer into the output as a blob; returns its digest and compression.
    pub fn copy_layer(
        &self,
        layer: &BaseLayer,
        sink: &mut Sink,
    ) -> Result<(String, Compression), ImageError> {
        let mut file = File::open(&self.path).map_err(ImageError::io(&self.path))?;
        let head = read_member(&mut file, layer.offset, layer.size.min(8))
            .map_err(ImageError::io(&self.path))?;
        file.seek(SeekFrom::Start(layer.offset))
            .map_err(ImageError::io(&self.path))?;
        sink.begin_blob()
            .map_err(|e| ImageError::Stream(e.to_string()))?;
        let mut w = Digester::new(sink.blob_writer());
        let n = io::copy(&mut (&mut file).take(layer.size), &mut w)
            .map_err(ImageError::io(&self.path))?;
        let (digest, _, _) = w.finish();
        if n != layer.size {
            return Err(invalid(
                &self.path,
                format!("layer '{}' is cut short", layer.name),
            ));
        }
        sink.end_blob(&digest, layer.size)
            .map_err(|e| ImageError::Stream(e.to_string()))?;
        Ok((digest, Compression::sniff(&head)))
    }
}

/// The strings of a JSON array (none if it is not one).
fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
