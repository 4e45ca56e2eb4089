//! `boxyard admin ...`: organizations, keys, quotas, runners and join tokens (platform admins; `key` also for org
//! admins in their own org), plus `admin call` for any endpoint.

use boxyard::{Client, CreateJoinToken, CreateKey, CreateOrg, Quota, Role};
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCmd),
    /// API keys (of your org, or of --org for platform admins).
    #[command(subcommand)]
    Key(KeyCmd),
    /// Set an org's quota.
    Quota {
        org_id: String,
        #[arg(long)]
        max_boxes: i64,
        #[arg(long)]
        max_vcpus: i64,
        #[arg(long)]
        max_memory_mib: i64,
        #[arg(long)]
        max_box_vcpus: i64,
        #[arg(long)]
        max_box_memory_mib: i64,
        #[arg(long)]
        max_box_disk_mib: i64,
    },
    /// Runners.
    #[command(subcommand)]
    Runner(RunnerCmd),
    /// Runner join tokens.
    #[command(subcommand, name = "join-token")]
    JoinToken(TokenCmd),
    /// Any endpoint: `boxyard admin call GET /v1/admin/audit`.
    Call { method: String, path: String, body: Option<String> },
}

#[derive(Subcommand)]
pub enum OrgCmd {
    /// Create an org (with the platform's default quota).
    Create { name: String },
    /// List every org.
    Ls,
    /// Delete an org. Refused while it has boxes (other than deleted ones) or snapshots; its keys stop working.
    Rm {
        /// The org's id (see `boxyard admin org ls`).
        org_id: String,
    },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Create a key (its secret is printed once).
    Create {
        name: String,
        /// member or admin.
        #[arg(long, default_value = "member")]
        role: String,
        /// Another org (platform admins).
        #[arg(long)]
        org: Option<String>,
    },
    Ls {
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke a key.
    Rm {
        key_id: String,
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum RunnerCmd {
    Ls,
    /// No new boxes; its boxes keep running.
    Cordon {
        runner_id: String,
    },
    /// Cordon, before maintenance.
    Drain {
        runner_id: String,
    },
    /// Back in service.
    Uncordon {
        runner_id: String,
    },
    /// Remove a runner without boxes from the fleet.
    Rm {
        runner_id: String,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Issue a token (its secret is printed once).
    Create {
        #[arg(long, default_value = "")]
        description: String,
        /// Lifetime, seconds.
        #[arg(long, default_value_t = 86400)]
        ttl: i64,
    },
    Ls,
    Rm {
        token_id: String,
    },
}

fn table(v: &Value, cols: &[&str]) {
    let cell = |it: &Value, c: &str| match &it[c] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        x => x.to_string(),
    };
    let items: Vec<&Value> = v["items"].as_array().into_iter().flatten().collect();
    let widths: Vec<usize> =
        cols.iter().map(|c| items.iter().map(|it| cell(it, c).len()).chain([c.len()]).max().unwrap_or(0) + 2).collect();
    let line = |cells: Vec<String>| {
        let s: String = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", s.trim_end());
    };
    line(cols.iter().map(|c| c.to_uppercase()).collect());
    for it in items {
        line(cols.iter().map(|c| cell(it, c)).collect());
    }
}

/// The answer of a call as JSON (what is printed), None for an answer without a body.
fn json(v: impl serde::Serialize) -> anyhow::Result<Option<Value>> {
    Ok(Some(serde_json::to_value(v)?))
}

/// A role as the API names it.
fn role(s: &str) -> anyhow::Result<Role> {
    Role::parse(s).ok_or_else(|| anyhow::anyhow!("invalid_request: role {s:?} is not member, admin or platform_admin"))
}

/// A quota value from the command line in the API's range.
fn i32_arg(name: &str, v: i64) -> anyhow::Result<i32> {
    i32::try_from(v).map_err(|_| anyhow::anyhow!("invalid_request: --{name} {v} is out of range"))
}

pub async fn run(c: &Client, json_out: bool, cmd: AdminCmd) -> anyhow::Result<()> {
    let (v, cols): (Option<Value>, &[&str]) = match cmd {
        AdminCmd::Org(OrgCmd::Create { name }) => (json(c.create_org(&CreateOrg { name, quota: None }).await?)?, &[]),
        AdminCmd::Org(OrgCmd::Ls) => (json(c.list_orgs().await?)?, &["id", "name", "created_at"]),
        AdminCmd::Org(OrgCmd::Rm { org_id }) => {
            c.delete_org(&org_id).await?;
            (None, &[])
        }
        AdminCmd::Key(KeyCmd::Create { name, role: r, org }) => {
            let req = CreateKey { name, role: Some(role(&r)?) };
            let created = match org {
                Some(o) => c.create_org_key(o, &req).await?,
                None => c.create_key(&req).await?,
            };
            (json(created)?, &[])
        }
        AdminCmd::Key(KeyCmd::Ls { org }) => {
            let keys = match org {
                Some(o) => c.list_org_keys(o).await?,
                None => c.list_keys().await?,
            };
            (json(keys)?, &["id", "name", "prefix", "role", "revoked_at"])
        }
        AdminCmd::Key(KeyCmd::Rm { key_id, org }) => {
            let key = match org {
                Some(o) => c.revoke_org_key(o, key_id).await?,
                None => c.revoke_key(key_id).await?,
            };
            (json(key)?, &[])
        }
        AdminCmd::Quota {
            org_id,
            max_boxes,
            max_vcpus,
            max_memory_mib,
            max_box_vcpus,
            max_box_memory_mib,
            max_box_disk_mib,
        } => {
            let q = Quota {
                max_boxes: i32_arg("max-boxes", max_boxes)?,
                max_vcpus: i32_arg("max-vcpus", max_vcpus)?,
                max_memory_mib,
                max_box_vcpus: i32_arg("max-box-vcpus", max_box_vcpus)?,
                max_box_memory_mib,
                max_box_disk_mib,
            };
            (json(c.set_quota(org_id, &q).await?)?, &[])
        }
        AdminCmd::Runner(RunnerCmd::Ls) => (
            json(c.list_runners().await?)?,
            &["id", "name", "state", "cordoned", "draining", "running_boxes", "address"],
        ),
        AdminCmd::Runner(RunnerCmd::Cordon { runner_id }) => (json(c.cordon_runner(runner_id).await?)?, &[]),
        AdminCmd::Runner(RunnerCmd::Drain { runner_id }) => (json(c.drain_runner(runner_id).await?)?, &[]),
        AdminCmd::Runner(RunnerCmd::Uncordon { runner_id }) => (json(c.uncordon_runner(runner_id).await?)?, &[]),
        AdminCmd::Runner(RunnerCmd::Rm { runner_id }) => {
            c.delete_runner(runner_id).await?;
            (None, &[])
        }
        AdminCmd::JoinToken(TokenCmd::Create { description, ttl }) => {
            (json(c.create_join_token(&CreateJoinToken { description, ttl_seconds: Some(ttl) }).await?)?, &[])
        }
        AdminCmd::JoinToken(TokenCmd::Ls) => {
            (json(c.list_join_tokens().await?)?, &["id", "prefix", "description", "expires_at", "uses"])
        }
        AdminCmd::JoinToken(TokenCmd::Rm { token_id }) => (json(c.revoke_join_token(token_id).await?)?, &[]),
        AdminCmd::Call { method, path, body } => {
            let body: Option<Value> = body.map(|b| serde_json::from_str(&b)).transpose()?;
            (c.call_raw(&method, &path, body.as_ref()).await?, &[])
        }
    };
    let Some(v) = v else { return Ok(()) };
    if json_out || cols.is_empty() {
        if !v.is_null() {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    } else {
        table(&v, cols);
    }
    Ok(())
}
