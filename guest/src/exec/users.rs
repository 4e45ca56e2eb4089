//! Resolves the `user` of an exec request against the guest's own /etc/passwd.
//!
//! The agent is a static binary: glibc's NSS (`getpwnam`) does not work in it, so the files are read directly.

use std::path::{Path, PathBuf};

/// Who a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unknown user {0:?}: it is not in the box's /etc/passwd; give a user name, a uid, or uid:gid")]
    Unknown(String),
    #[error("invalid user {0:?}: give a user name, a uid, or uid:gid")]
    Invalid(String),
}

struct Entry {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

fn entries(passwd: &str) -> impl Iterator<Item = Entry> + '_ {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(Entry { name: f[0].into(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5].into() })
    })
}

/// Resolves `spec` ("", "root", "box", "1000", "1000:1000") using the passwd file at `passwd_path`.
pub fn resolve(spec: &str, passwd_path: &Path) -> Result<Identity, UserError> {
    let passwd = std::fs::read_to_string(passwd_path).unwrap_or_default();
    resolve_in(spec, &passwd)
}

fn resolve_in(spec: &str, passwd: &str) -> Result<Identity, UserError> {
    let spec = spec.trim();
    let by_uid = |uid: u32| entries(passwd).find(|e| e.uid == uid);
    if spec.is_empty() {
        let home = by_uid(0).map(|e| e.home).unwrap_or_else(|| "/root".into());
        return Ok(Identity { uid: 0, gid: 0, name: "root".into(), home });
    }
    if let Some((u, g)) = spec.split_once(':') {
        let uid: u32 = u.parse().map_err(|_| UserError::Invalid(spec.into()))?;
        let gid: u32 = g.parse().map_err(|_| UserError::Invalid(spec.into()))?;
        let e = by_uid(uid);
        return Ok(Identity {
            uid,
            gid,
            name: e.as_ref().map(|e| e.name.clone()).unwrap_or_else(|| uid.to_string()),
            home: e.map(|e| e.home).unwrap_or_else(|| "/".into()),
        });
    }
    if let Ok(uid) = spec.parse::<u32>() {
        return Ok(match by_uid(uid) {
            Some(e) => Identity { uid, gid: e.gid, name: e.name, home: e.home },
            None => Identity { uid, gid: uid, name: uid.to_string(), home: "/".into() },
        });
    }
    entries(passwd)
        .find(|e| e.name == spec)
        .map(|e| Identity { uid: e.uid, gid: e.gid, name: e.name, home: e.home })
        .ok_or_else(|| UserError::Unknown(spec.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nbox:x:1000:1001:Box:/home/box:/bin/sh\nbroken line\n";

    #[test]
    fn resolves_names_and_ids() {
        assert_eq!(resolve_in("", PASSWD).unwrap().home, PathBuf::from("/root"));
        let b = resolve_in("box", PASSWD).unwrap();
        assert_eq!((b.uid, b.gid), (1000, 1001));
        assert_eq!(resolve_in("1000", PASSWD).unwrap().gid, 1001);
        let n = resolve_in("4242", PASSWD).unwrap();
        assert_eq!((n.uid, n.gid), (4242, 4242));
        assert_eq!(resolve_in("5:6", PASSWD).unwrap().gid, 6);
    }

    #[test]
    fn refuses_unknown_and_invalid() {
        assert_eq!(resolve_in("nobody2", PASSWD), Err(UserError::Unknown("nobody2".into())));
        assert_eq!(resolve_in("a:b", PASSWD), Err(UserError::Invalid("a:b".into())));
    }
}
