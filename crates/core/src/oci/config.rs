//! The JSON documents of an image: the container config a user gives (`Cmd`, `Env`, …), the
//! image config blob, descriptors, the OCI manifest and index, and docker-archive's
//! `manifest.json`. Maps are `BTreeMap`s and every document is written compactly, so the bytes
//! (and the digests) depend only on the values. Reading is lenient where other tools differ
//! (an index without `mediaType`), writing is not.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

/// `{}`: the value of `ExposedPorts` and `Volumes` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// The runtime config of the image (the `config` object of the image config), as nixpkgs'
/// `config` argument and the Docker/OCI image spec name its fields. Unknown keys are refused
/// so a typo is an error rather than a silently ignored setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
}

impl ContainerConfig {
    /// Parse a config file's text; errors carry serde's line and column.
    pub fn from_json(text: &str) -> Result<ContainerConfig, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Fields set in `over` replace those here; `Labels`, `ExposedPorts` and `Volumes` are
    /// merged key by key; `Env` is merged by variable name (see [`merge_env`]).
    pub fn overlay(&mut self, over: ContainerConfig) {
        fn set<T>(slot: &mut Option<T>, v: Option<T>) {
            if v.is_some() {
                *slot = v;
            }
        }
        fn merge<V>(slot: &mut Option<BTreeMap<String, V>>, v: Option<BTreeMap<String, V>>) {
            if let Some(v) = v {
                slot.get_or_insert_with(BTreeMap::new).extend(v);
            }
        }
        set(&mut self.cmd, over.cmd);
        set(&mut self.entrypoint, over.entrypoint);
        if let Some(env) = over.env {
            let base = self.env.take().unwrap_or_default();
            self.env = Some(merge_env(&base, &env));
        }
        merge(&mut self.exposed_ports, over.exposed_ports);
        merge(&mut self.labels, over.labels);
        set(&mut self.stop_signal, over.stop_signal);
        set(&mut self.user, over.user);
        merge(&mut self.volumes, over.volumes);
        set(&mut self.working_dir, over.working_dir);
    }
}

/// nixpkgs' Env merge for a base image: the base's entries then ours; for a name given more
/// than once the last value wins, at the place the name first appeared.
pub fn merge_env(base: &[String], ours: &[String]) -> Vec<String> {
    let mut order: Vec<&str> = Vec::new();
    let mut value: BTreeMap<&str, &String> = BTreeMap::new();
    for entry in base.iter().chain(ours) {
        let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
        if value.insert(name, entry).is_none() {
            order.push(name);
        }
    }
    order.into_iter().map(|n| value[n].clone()).collect()
}

/// One `history` entry: one per layer, none empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub created: String,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// The image config blob (Docker image spec v1.2 / OCI image config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub architecture: String,
    pub config: ContainerConfig,
    pub created: String,
    pub history: Vec<History>,
    pub os: String,
    pub rootfs: RootFs,
    /// The CPU variant (`v8` for arm64), for platforms that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// In an index: the platform the manifest is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<super::platform::Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciIndex {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: u32,
    /// Optional in the spec (older layouts leave it out); always written.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// One element of docker-archive's `manifest.json` (a JSON list of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerManifest {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// Compact JSON bytes of a document.
pub fn to_bytes<T: Serialize>(doc: &T) -> Vec<u8> {
    // Serialising these types cannot fail: every map key is a string.
    serde_json::to_vec(doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merge_is_last_wins_in_first_place() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let ours = vec!["B=2".to_string(), "PATH=/nix/bin".to_string()];
        assert_eq!(merge_env(&base, &ours), ["PATH=/nix/bin", "A=1", "B=2"]);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = ContainerConfig::from_json(r#"{"Cmd":["x"],"Cwd":"/"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `Cwd`"), "{err}");
    }

    #[test]
    fn empty_config_is_an_empty_object_and_maps_are_sorted() {
        assert_eq!(to_bytes(&ContainerConfig::default()), b"{}");
        let c = ContainerConfig::from_json(r#"{"ExposedPorts":{"9/udp":{},"80/tcp":{}}}"#).unwrap();
        assert_eq!(
            String::from_utf8(to_bytes(&c)).unwrap(),
            r#"{"ExposedPorts":{"80/tcp":{},"9/udp":{}}}"#
        );
    }

    #[test]
    fn overlay_replaces_and_merges() {
        let mut c = ContainerConfig::from_json(r#"{"Cmd":["a"],"Labels":{"x":"1"}}"#).unwrap();
        c.overlay(ContainerConfig::from_json(r#"{"Cmd":["b"],"Labels":{"y":"2"}}"#).unwrap());
        assert_eq!(c.cmd.as_deref(), Some(&["b".to_string()][..]));
        assert_eq!(c.labels.unwrap().len(), 2);
    }
}
