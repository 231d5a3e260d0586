//! The layer cache: a directory of finished layer blobs, each under a key that hashes the
//! layer's exact inputs (format version, compression, ownership and mtime, the store dir, and
//! each path's name, NAR hash and NAR size in layer order). Store paths are immutable, so an
//! unchanged key means unchanged bytes: a hit is copied into the output without reading the
//! store. Entries are written to a temporary name and renamed, so concurrent builds sharing a
//! cache never see half an entry; a temporary blob left by a killed build is reclaimed by the
//! next one that opens the cache.
//!
//! A blob is not trusted because its record says so: its size is checked when it is looked
//! up and its digest while it is copied into the output (see `archive::copy_blob`); one that does
//! not match is rebuilt from the store and written again.
//!
//! Layout: `<key>.blob` (the blob as written to the image) and `<key>.json`
//! (`{"diff_id":…,"digest":…,"size":…}`, at most 64 KiB).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::archive::hex;
use super::input::MAX_CACHE_RECORD;
use super::tar::Owner;
use super::temp::{Temp, reclaim};
use crate::nix::path_info::PathInfo;

/// What the cache records about a layer blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Hex SHA-256 of the blob.
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

/// The cache key of a store layer.
pub fn layer_key(compression: &str, owner: &Owner, store_dir: &str, paths: &[&PathInfo]) -> String {
    let mut h = Sha256::new();
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field("strata-mkimage-store-layer-v1");
    field(compression);
    field(&owner.uid.to_string());
    field(&owner.gid.to_string());
    field(&owner.uname);
    field(&owner.gname);
    field(&owner.mtime.to_string());
    field(store_dir);
    for info in paths {
        field(&info.path.to_string());
        field(&info.nar_hash.0.to_typed_nix32());
        field(&info.nar_size.to_string());
    }
    hex(&h.finalize())
}

/// The prefix of temporary blobs (`.blob-XXXXXX.tmp`).
const TEMP_PREFIX: &str = ".blob-";

impl LayerCache {
    pub fn open(dir: &Path) -> io::Result<LayerCache> {
        fs::create_dir_all(dir)?;
        reclaim(dir, TEMP_PREFIX);
        Ok(LayerCache {
            dir: dir.to_path_buf(),
        })
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.blob"))
    }

    /// A complete entry for `key`: its record and blob path (the blob's size is checked).
    pub fn get(&self, key: &str) -> Option<(CachedLayer, PathBuf)> {
        let file = File::open(self.dir.join(format!("{key}.json"))).ok()?;
        let mut text = Vec::new();
        file.take(MAX_CACHE_RECORD + 1)
            .read_to_end(&mut text)
            .ok()?;
        if text.len() as u64 > MAX_CACHE_RECORD {
            return None;
        }
        let record: CachedLayer = serde_json::from_slice(&text).ok()?;
        let blob = self.blob(key);
        let meta = fs::metadata(&blob).ok()?;
        (meta.is_file() && meta.len() == record.size).then_some((record, blob))
    }

    /// A temporary file to write a blob into, later [`LayerCache::commit`]ted (removed if
    /// dropped).
    pub(crate) fn create_temp(&self) -> io::Result<Temp> {
        Temp::file(&self.dir, TEMP_PREFIX)
    }

    /// Move a finished blob into place and record it (blob first, then the record).
    pub(crate) fn commit(&self, key: &str, tmp: Temp, record: &CachedLayer) -> io::Result<()> {
        tmp.persist(&self.blob(key))?;
        let json = serde_json::to_vec(record).map_err(io::Error::other)?;
        let rec_tmp = self
            .dir
            .join(format!(".tmp-{key}.json.{}", std::process::id()));
        fs::write(&rec_tmp, json)?;
        fs::rename(rec_tmp, self.dir.join(format!("{key}.json")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_then_get() {
        let t = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(t.path()).unwrap();
        assert!(cache.get("k").is_none());
        let tmp = cache.create_temp().unwrap();
        fs::write(tmp.path(), b"blob").unwrap();
        let rec = CachedLayer {
            diff_id: "sha256:x".into(),
            digest: "y".into(),
            size: 4,
        };
        cache.commit("k", tmp, &rec).unwrap();
        let (got, path) = cache.get("k").unwrap();
        assert_eq!(got, rec);
        assert_eq!(fs::read(path).unwrap(), b"blob");
        // A truncated blob is a miss.
        fs::write(cache.blob("k"), b"bl").unwrap();
        assert!(cache.get("k").is_none());
        // So is a record over the limit.
        fs::write(cache.blob("k"), b"blob").unwrap();
        let mut big = serde_json::to_vec(&rec).unwrap();
        big.extend(std::iter::repeat_n(b' ', MAX_CACHE_RECORD as usize));
        fs::write(t.path().join("k.json"), big).unwrap();
        assert!(cache.get("k").is_none());
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 2);
    }

    #[test]
    fn key_depends_on_every_input() {
        let o = Owner::default();
        let a = layer_key("none", &o, "/nix/store", &[]);
        assert_eq!(a, layer_key("none", &o, "/nix/store", &[]));
        assert_ne!(a, layer_key("gzip", &o, "/nix/store", &[]));
        let o2 = Owner {
            mtime: 2,
            ..Owner::default()
        };
        assert_ne!(a, layer_key("none", &o2, "/nix/store", &[]));
    }
}
