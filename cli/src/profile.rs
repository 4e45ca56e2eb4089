//! Profiles: named (API URL, key) pairs in `$XDG_CONFIG_HOME/boxyard/profiles.json` (mode 0600), chosen with
//! `--profile` / `BOXYARD_PROFILE`, else the default one; `BOXYARD_URL` + `BOXYARD_KEY` override everything.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub url: String,
    pub key: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Profiles {
    pub default: Option<String>,
    pub profiles: BTreeMap<String, Profile>,
}

pub fn config_dir() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("boxyard")
}

fn path() -> PathBuf {
    config_dir().join("profiles.json")
}

impl Profiles {
    pub fn load() -> anyhow::Result<Self> {
        match std::fs::read(path()) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("{} is not valid; fix or delete it", path().display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path().display())),
        }
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let p = path();
        std::fs::create_dir_all(p.parent().expect("has a parent"))?;
        let tmp = p.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))
    }

    /// Sets `name` and makes it the default.
    pub fn put(&mut self, name: &str, p: Profile) {
        self.profiles.insert(name.to_string(), p);
        self.default = Some(name.to_string());
    }
}

/// The profile to use.
pub fn resolve(name: Option<&str>) -> anyhow::Result<Profile> {
    if let (Ok(url), Ok(key)) = (std::env::var("BOXYARD_URL"), std::env::var("BOXYARD_KEY")) {
        return Ok(Profile { url, key });
    }
    let all = Profiles::load()?;
    let name = name.map(str::to_string).or(all.default.clone());
    let Some(name) = name else {
        bail!(
            "no profile: run `boxyard login --url URL --key KEY` (or `boxyard dev up`), or set BOXYARD_URL and BOXYARD_KEY"
        );
    };
    all.profiles.get(&name).cloned().with_context(|| format!("no profile named {name:?} in {}", path().display()))
}
