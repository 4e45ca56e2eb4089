//! The runner registry (`boxyard.registry.v1.Registry`), served to runners on its own port.
//!
//! - **Register**: a join token (issued by a platform admin) buys a runner identity and a credential.
//! - **Heartbeat**: the runner's endpoint, capacity and full inventory. The registry records them, brings boxes and
//!   executions up to date from the inventory (a runner that was `lost` and returns gets its boxes back), and answers
//!   with the boxes the runner must destroy (deleted meanwhile, or unknown here).

use boxyard_proto::registry as pb;
use boxyard_proto::registry::registry_server::{Registry, RegistryServer};
use boxyard_proto::runner as rpb;
use sqlx::types::Json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::auth;
use crate::state::AppState;

/// The gRPC service runners register with and send heartbeats to.
#[derive(Clone)]
pub struct RegistryService {
    st: AppState,
}

impl RegistryService {
    /// The service over the replica's shared state.
    pub fn new(st: AppState) -> Self {
        RegistryService { st }
    }

    /// The tonic server of the service (inventories of up to 64 MiB per heartbeat).
    pub fn into_server(self) -> RegistryServer<Self> {
        RegistryServer::new(self).max_decoding_message_size(64 << 20)
    }
}

fn db_err(e: sqlx::Error) -> Status {
    let api = crate::error::ApiError::from(e);
    if api.status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        Status::unavailable(format!("{}; retrying is safe", api.body.message))
    } else {
        Status::internal(api.body.message)
    }
}

fn api_err(e: crate::error::ApiError) -> Status {
    if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        Status::unavailable(format!("{}; retrying is safe", e.body.message))
    } else {
        Status::internal(e.body.message)
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

fn check_endpoint(ep: &Option<pb::Endpoint>) -> Result<&pb::Endpoint, Status> {
    let ep = ep.as_ref().ok_or_else(|| Status::invalid_argument("endpoint is required"))?;
    if ep.address.is_empty() || ep.tls_ca_pem.is_empty() || ep.tls_server_name.is_empty() || ep.api_token.len() < 16 {
        return Err(Status::invalid_argument(
            "endpoint needs address, tls_server_name, tls_ca_pem and an api_token of at least 16 characters",
        ));
    }
    Ok(ep)
}

fn check_capacity(c: &Option<pb::Capacity>) -> Result<pb::Capacity, Status> {
    match c {
        Some(c) if c.vcpus > 0 && c.memory_mib > 0 && c.vcpus <= 100_000 && c.memory_mib <= i64::MAX as u64 => Ok(*c),
        _ => Err(Status::invalid_argument("capacity needs vcpus > 0 and memory_mib > 0")),
    }
}

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        let st = &self.st;
        let bad_token = || {
            Status::unauthenticated(
                "the join token is invalid, expired or revoked; ask a platform admin for a new one \
                 (POST /v1/admin/join-tokens)",
            )
        };
        let prefix = auth::prefix_of("byj", &r.join_token).ok_or_else(bad_token)?;
        if !valid_name(&r.name) {
            return Err(Status::invalid_argument(format!(
                "runner name {:?} is not valid: use [a-z0-9][a-z0-9.-]*, at most 63 bytes",
                r.name
            )));
        }
        let ep = check_endpoint(&r.endpoint)?;
        let cap = check_capacity(&r.capacity)?;
        let mut tx = st.db.begin().await.map_err(db_err)?;
        let tok: Option<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT id, hash FROM join_tokens WHERE prefix = $1 AND revoked_at IS NULL AND expires_at > now() FOR UPDATE",
        )
        .bind(prefix)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some((token_id, hash)) = tok else { return Err(bad_token()) };
        if !auth::hashes_equal(&hash, &auth::hash(&r.join_token)) {
            return Err(bad_token());
        }
        let live_after = chrono::Duration::from_std(st.config.runner_unresponsive_after).unwrap_or_default();
        let existing: Option<(Uuid, String, chrono::DateTime<chrono::Utc>)> =
            sqlx::query_as("SELECT id, state, last_heartbeat_at FROM runners WHERE name = $1 FOR UPDATE")
                .bind(&r.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let (credential, cred_hash) = auth::runner_credential();
        let labels = Json(r.labels.clone().into_iter().collect::<std::collections::BTreeMap<_, _>>());
        if let Some((_, state, hb)) = &existing
            && state == "ready"
            && chrono::Utc::now() - *hb < live_after
        {
            return Err(Status::already_exists(format!(
                "a live runner named {:?} is registered; pick another name, or stop that runner first",
                r.name
            )));
        }
        // A known name is the same host again (its state directory was lost): it keeps its identity (and so its
        // boxes) and gets a new credential.
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO runners (id, name, address, tls_server_name, tls_ca_pem, api_token, credential_hash,
                    labels, capacity_vcpus, capacity_memory_mib, capacity_disk_mib, version, backend, state,
                    join_token_id, snapshots_enabled)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'ready', $14, $15)
             ON CONFLICT (name) DO UPDATE SET address = excluded.address, tls_server_name = excluded.tls_server_name,
                    tls_ca_pem = excluded.tls_ca_pem, api_token = excluded.api_token,
                    credential_hash = excluded.credential_hash, labels = excluded.labels,
                    capacity_vcpus = excluded.capacity_vcpus, capacity_memory_mib = excluded.capacity_memory_mib,
                    capacity_disk_mib = excluded.capacity_disk_mib, version = excluded.version,
                    backend = excluded.backend, state = 'ready', last_heartbeat_at = now(),
                    join_token_id = excluded.join_token_id, snapshots_enabled = excluded.snapshots_enabled
             RETURNING id",
        )
        .bind(existing.map(|(id, _, _)| id).unwrap_or_else(Uuid::now_v7))
        .bind(&r.name)
        .bind(&ep.address)
        .bind(&ep.tls_server_name)
        .bind(&ep.tls_ca_pem)
        .bind(&ep.api_token)
        .bind(&cred_hash)
        .bind(&labels)
        .bind(cap.vcpus as i32)
        .bind(cap.memory_mib as i64)
        .bind(cap.disk_mib as i64)
        .bind(&r.version)
        .bind(&r.backend)
        .bind(token_id)
        .bind(r.snapshots_enabled)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("UPDATE join_tokens SET uses = uses + 1 WHERE id = $1")
            .bind(token_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        crate::db::audit(&mut *tx, None, None, "runner.register", &r.name, serde_json::json!({"runner_id": id}))
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        tracing::info!(runner = %r.name, %id, address = %ep.address, "runner registered");
        Ok(Response::new(pb::RegisterResponse {
            runner_id: id.to_string(),
            credential,
            heartbeat_interval_ms: st.config.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let st = &self.st;
        let credential = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let r = req.into_inner();
        let unknown =
            || Status::unauthenticated("unknown runner or wrong credential: register again with a join token");
        let id = Uuid::parse_str(&r.runner_id).map_err(|_| unknown())?;
        let credential = credential.ok_or_else(unknown)?;
        let row: Option<(String, String, Vec<u8>, bool, bool)> =
            sqlx::query_as("SELECT name, state, credential_hash, draining, cordoned FROM runners WHERE id = $1")
                .bind(id)
                .fetch_optional(&st.db)
                .await
                .map_err(db_err)?;
        let Some((name, prev_state, hash, draining, cordoned)) = row else { return Err(unknown()) };
        if !auth::hashes_equal(&hash, &auth::hash(&credential)) {
            return Err(unknown());
        }
        let ep = check_endpoint(&r.endpoint)?;
        let cap = check_capacity(&r.capacity)?;
        let inv = r.inventory.clone().unwrap_or_default();
        let running = inv.boxes.iter().filter(|b| b.state() == rpb::BoxState::Running).count();
        sqlx::query(
            "UPDATE runners SET address = $2, tls_server_name = $3, tls_ca_pem = $4, api_token = $5, labels = $6,
                    capacity_vcpus = $7, capacity_memory_mib = $8, capacity_disk_mib = $9, version = $10,
                    backend = $11, reported_boxes = $12, reported_running = $13, cached_snapshots = $14,
                    snapshots_enabled = $15, state = 'ready', last_heartbeat_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(&ep.address)
        .bind(&ep.tls_server_name)
        .bind(&ep.tls_ca_pem)
        .bind(&ep.api_token)
        .bind(Json(r.labels.clone().into_iter().collect::<std::collections::BTreeMap<_, _>>()))
        .bind(cap.vcpus as i32)
        .bind(cap.memory_mib as i64)
        .bind(cap.disk_mib as i64)
        .bind(&r.version)
        .bind(&r.backend)
        .bind(inv.boxes.len() as i32)
        .bind(running as i32)
        .bind(&r.cached_snapshots)
        .bind(r.snapshots_enabled)
        .execute(&st.db)
        .await
        .map_err(db_err)?;
        if prev_state != "ready" {
            tracing::info!(runner = %name, "runner is back (was {prev_state}); reconciling its boxes");
        }
        let destroy = crate::lifecycle::heartbeat::reconcile(st, id, &name, &inv).await.map_err(api_err)?;
        st.metrics.heartbeats.inc();
        Ok(Response::new(pb::HeartbeatResponse {
            destroy_boxes: destroy,
            draining,
            cordoned,
            heartbeat_interval_ms: st.config.heartbeat_interval.as_millis() as u64,
        }))
    }
}
