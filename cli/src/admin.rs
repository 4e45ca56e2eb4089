//! `boxyard admin ...`: organizations, keys, quotas, runners and join tokens (platform admins; `key` also for org
//! admins in their own org), plus `admin call` for any endpoint.

use boxyard::{Client, Method};
use clap::Subcommand;
use serde_json::{Value, json};

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
    Create { name: String },
    Ls,
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

pub async fn run(c: &Client, json_out: bool, cmd: AdminCmd) -> anyhow::Result<()> {
    let (v, cols): (Value, &[&str]) = match cmd {
        AdminCmd::Org(OrgCmd::Create { name }) => {
            (c.admin(Method::POST, "/v1/admin/orgs", Some(json!({"name": name}))).await?, &[])
        }
        AdminCmd::Org(OrgCmd::Ls) => {
            (c.admin(Method::GET, "/v1/admin/orgs", None).await?, &["id", "name", "created_at"])
        }
        AdminCmd::Key(KeyCmd::Create { name, role, org }) => {
            let path = org.map(|o| format!("/v1/admin/orgs/{o}/keys")).unwrap_or_else(|| "/v1/keys".into());
            (c.admin(Method::POST, &path, Some(json!({"name": name, "role": role}))).await?, &[])
        }
        AdminCmd::Key(KeyCmd::Ls { org }) => {
            let path = org.map(|o| format!("/v1/admin/orgs/{o}/keys")).unwrap_or_else(|| "/v1/keys".into());
            (c.admin(Method::GET, &path, None).await?, &["id", "name", "prefix", "role", "revoked_at"])
        }
        AdminCmd::Key(KeyCmd::Rm { key_id, org }) => {
            let path = match org {
                Some(o) => format!("/v1/admin/orgs/{o}/keys/{key_id}"),
                None => format!("/v1/keys/{key_id}"),
            };
            (c.admin(Method::DELETE, &path, None).await?, &[])
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
            let q = json!({"max_boxes": max_boxes, "max_vcpus": max_vcpus, "max_memory_mib": max_memory_mib,
                "max_box_vcpus": max_box_vcpus, "max_box_memory_mib": max_box_memory_mib, "max_box_disk_mib": max_box_disk_mib});
            (c.admin(Method::PUT, &format!("/v1/admin/orgs/{org_id}/quota"), Some(q)).await?, &[])
        }
        AdminCmd::Runner(RunnerCmd::Ls) => (
            c.admin(Method::GET, "/v1/admin/runners", None).await?,
            &["id", "name", "state", "cordoned", "draining", "running_boxes", "address"],
        ),
        AdminCmd::Runner(RunnerCmd::Cordon { runner_id }) => {
            (c.admin(Method::POST, &format!("/v1/admin/runners/{runner_id}/cordon"), Some(json!({}))).await?, &[])
        }
        AdminCmd::Runner(RunnerCmd::Drain { runner_id }) => {
            (c.admin(Method::POST, &format!("/v1/admin/runners/{runner_id}/drain"), Some(json!({}))).await?, &[])
        }
        AdminCmd::Runner(RunnerCmd::Uncordon { runner_id }) => {
            (c.admin(Method::POST, &format!("/v1/admin/runners/{runner_id}/uncordon"), Some(json!({}))).await?, &[])
        }
        AdminCmd::Runner(RunnerCmd::Rm { runner_id }) => {
            (c.admin(Method::DELETE, &format!("/v1/admin/runners/{runner_id}"), None).await?, &[])
        }
        AdminCmd::JoinToken(TokenCmd::Create { description, ttl }) => (
            c.admin(
                Method::POST,
                "/v1/admin/join-tokens",
                Some(json!({"description": description, "ttl_seconds": ttl})),
            )
            .await?,
            &[],
        ),
        AdminCmd::JoinToken(TokenCmd::Ls) => (
            c.admin(Method::GET, "/v1/admin/join-tokens", None).await?,
            &["id", "prefix", "description", "expires_at", "uses"],
        ),
        AdminCmd::JoinToken(TokenCmd::Rm { token_id }) => {
            (c.admin(Method::DELETE, &format!("/v1/admin/join-tokens/{token_id}"), None).await?, &[])
        }
        AdminCmd::Call { method, path, body } => {
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes())?;
            let body = body.map(|b| serde_json::from_str(&b)).transpose()?;
            (c.admin(m, &path, body).await?, &[])
        }
    };
    if json_out || cols.is_empty() {
        if !v.is_null() {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    } else {
        table(&v, cols);
    }
    Ok(())
}
