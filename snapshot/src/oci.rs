//! Import of container images: an OCI image layout or a `docker save` archive (a tar file, or a directory holding
//! its contents) becomes a root filesystem tree and [`Metadata`].
//!
//! Layers are applied in order, as a container runtime would: regular files, directories, symlinks and hard links
//! with their modes and owners; `.wh.<name>` deletes `<name>` from the layers below, `.wh..wh..opq` empties its
//! directory of what the layers below put there. The image config gives the environment, the command
//! (`Entrypoint` + `Cmd`), the working directory and the user. Gzip layers are decompressed; zstd layers are
//! refused with a clear error.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::image::Metadata;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} is neither an OCI image layout (index.json) nor a docker save archive (manifest.json)")]
    UnknownFormat(PathBuf),
    #[error("invalid image: {0}")]
    Invalid(String),
    #[error("layer {0} is compressed with a format this importer does not read (only tar and tar+gzip)")]
    Compression(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OciError + '_ {
    move |source| OciError::Io { path: path.to_path_buf(), source }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, OciError> {
    let f = File::open(path).map_err(io(path))?;
    serde_json::from_reader(BufReader::new(f)).map_err(|e| OciError::Invalid(format!("{}: {e}", path.display())))
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(rename = "mediaType", default)]
    media_type: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ImageConfig {
    #[serde(default)]
    config: Option<ContainerConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

fn blob(root: &Path, digest: &str) -> Result<PathBuf, OciError> {
    let (alg, hex) = digest.split_once(':').ok_or_else(|| OciError::Invalid(format!("bad digest {digest:?}")))?;
    if alg.contains('/') || hex.contains('/') || hex.contains("..") {
        return Err(OciError::Invalid(format!("bad digest {digest:?}")));
    }
    Ok(root.join("blobs").join(alg).join(hex))
}

/// Imports the image at `src` (a tar archive or a directory) into `dest` (created; must not exist or be empty),
/// returning its metadata. `scratch` holds the unpacked archive while importing.
pub fn import(src: &Path, dest: &Path, scratch: &Path) -> Result<Metadata, OciError> {
    let root = if src.is_dir() {
        src.to_path_buf()
    } else {
        let dir = scratch.join("archive");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let f = File::open(src).map_err(io(src))?;
        tar::Archive::new(BufReader::new(f)).unpack(&dir).map_err(io(src))?;
        dir
    };
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let (config_path, layers): (PathBuf, Vec<(PathBuf, String)>) = if root.join("index.json").is_file() {
        let index: Index = read_json(&root.join("index.json"))?;
        let first = index.manifests.first().ok_or_else(|| OciError::Invalid("index.json lists no manifest".into()))?;
        let mut manifest_path = blob(&root, &first.digest)?;
        // An index of indexes (multi-platform): take the first manifest of the first nested index.
        if first.media_type.contains("index") {
            let nested: Index = read_json(&manifest_path)?;
            let m =
                nested.manifests.first().ok_or_else(|| OciError::Invalid("nested index lists no manifest".into()))?;
            manifest_path = blob(&root, &m.digest)?;
        }
        let m: Manifest = read_json(&manifest_path)?;
        let layers = m
            .layers
            .iter()
            .map(|l| Ok((blob(&root, &l.digest)?, l.media_type.clone())))
            .collect::<Result<_, OciError>>()?;
        (blob(&root, &m.config.digest)?, layers)
    } else if root.join("manifest.json").is_file() {
        let ms: Vec<DockerManifest> = read_json(&root.join("manifest.json"))?;
        let m = ms.into_iter().next().ok_or_else(|| OciError::Invalid("manifest.json is empty".into()))?;
        let layers = m.layers.iter().map(|l| (root.join(l), String::new())).collect();
        (root.join(m.config), layers)
    } else {
        return Err(OciError::UnknownFormat(src.to_path_buf()));
    };
    for (path, media_type) in &layers {
        apply_layer(path, media_type, dest)?;
    }
    let cfg: ImageConfig = read_json(&config_path)?;
    let c = cfg.config.unwrap_or_default();
    let env: BTreeMap<String, String> = c
        .env
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let mut cmd = c.entrypoint.unwrap_or_default();
    cmd.extend(c.cmd.unwrap_or_default());
    Ok(Metadata {
        cmd,
        env,
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
        user: c.user.filter(|u| !u.is_empty()),
    })
}

/// A layer's path inside the tree, refusing anything that climbs out of it.
fn clean(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

fn apply_layer(path: &Path, media_type: &str, dest: &Path) -> Result<(), OciError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(io(path))?;
    let f = File::open(path).map_err(io(path))?;
    let reader: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(f)))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] || media_type.contains("zstd") {
        return Err(OciError::Compression(path.display().to_string()));
    } else {
        Box::new(BufReader::new(f))
    };
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(true);
    for entry in ar.entries().map_err(io(path))? {
        let mut entry = entry.map_err(io(path))?;
        let raw = entry.path().map_err(io(path))?.into_owned();
        let Some(rel) = clean(&raw) else { continue };
        let name = rel.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
        if name == ".wh..wh..opq" {
            // Opaque directory: what lower layers put there is gone.
            if let Ok(rd) = std::fs::read_dir(&parent) {
                for e in rd.flatten() {
                    remove_any(&e.path());
                }
            }
            continue;
        }
        if let Some(target) = name.strip_prefix(".wh.") {
            remove_any(&parent.join(target));
            continue;
        }
        let out = dest.join(&rel);
        // A file replacing a directory (or the other way round) from a lower layer.
        if let Ok(m) = std::fs::symlink_metadata(&out)
            && (m.is_dir() != entry.header().entry_type().is_dir())
        {
            remove_any(&out);
        }
        entry.unpack_in(dest).map_err(io(&out))?;
    }
    Ok(())
}
