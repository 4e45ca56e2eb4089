//! The API's errors: the JSON body of every error response, and the stable error codes (docs/api.md, "Errors").

use serde::{Deserialize, Serialize};

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Stable identifier, e.g. `not_found`, `quota_exceeded`, `no_capacity` (every code is listed in docs/api.md).
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// Seconds after which a retry may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The request's id (also the response's `x-request-id` header): quote it in a bug report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The error codes. A code never changes meaning; new ones may be added (a client treats an unknown code by its
/// HTTP status).
pub mod codes {
    macro_rules! codes {
        ($( $(#[$meta:meta])* $name:ident = $code:literal; )+) => {
            $( $(#[$meta])* pub const $name: &str = $code; )+
            /// Every code an HTTP error response may carry, in the order of docs/api.md's table.
            pub const ALL: &[&str] = &[$($code),+];
        };
    }

    codes! {
        /// 400: the body is not JSON.
        INVALID_JSON = "invalid_json";
        /// 400: the body could not be read.
        INVALID_BODY = "invalid_body";
        /// 400: malformed or unknown query parameters.
        INVALID_QUERY = "invalid_query";
        /// 400: a list cursor this API did not return; an attach cursor beyond the output.
        INVALID_CURSOR = "invalid_cursor";
        /// 400: an `Idempotency-Key` that is empty, too long or not visible ASCII.
        INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key";
        /// 400: attach without a WebSocket upgrade.
        WEBSOCKET_REQUIRED = "websocket_required";
        /// 401: no key, or a malformed, unknown or revoked one.
        UNAUTHORIZED = "unauthorized";
        /// 403: the key's role is too small.
        FORBIDDEN = "forbidden";
        /// 404: unknown id, another org's object, an unknown endpoint.
        NOT_FOUND = "not_found";
        /// 405: the path exists, the method does not.
        METHOD_NOT_ALLOWED = "method_not_allowed";
        /// 409: the action is not possible in the object's state.
        INVALID_STATE = "invalid_state";
        /// 409: the box is not running.
        BOX_NOT_RUNNING = "box_not_running";
        /// 409: signal or resize of a finished execution.
        EXECUTION_FINISHED = "execution_finished";
        /// 409: a unique name in use.
        ALREADY_EXISTS = "already_exists";
        /// 409: deleting an org that still has boxes or snapshots.
        ORG_IN_USE = "org_in_use";
        /// 409: removing a runner that still has boxes.
        RUNNER_IN_USE = "runner_in_use";
        /// 409: the runner refused the call in the current state.
        FAILED_PRECONDITION = "failed_precondition";
        /// 409: a box's snapshot that is not active.
        SNAPSHOT_NOT_READY = "snapshot_not_ready";
        /// 409: deleting a snapshot that boxes use.
        SNAPSHOT_IN_USE = "snapshot_in_use";
        /// 409: the first request with this `Idempotency-Key` is still running.
        REQUEST_IN_PROGRESS = "request_in_progress";
        /// 413: a JSON body over 1 MiB.
        BODY_TOO_LARGE = "body_too_large";
        /// 422: well-formed JSON of the wrong shape, values out of range.
        INVALID_REQUEST = "invalid_request";
        /// 422: an execution without a command in a box whose snapshot has no default command.
        NO_COMMAND = "no_command";
        /// 422 (per-box limits) or 429 (the org's totals): over the org's quota.
        QUOTA_EXCEEDED = "quota_exceeded";
        /// 422: a snapshot image upload that broke off or was empty.
        UPLOAD_FAILED = "upload_failed";
        /// 422: an `Idempotency-Key` reused with another request.
        IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused";
        /// 429: the runner is out of a resource.
        RUNNER_BUSY = "runner_busy";
        /// 500: a bug or an unexpected database error.
        INTERNAL = "internal";
        /// 501: the runner does not implement the call.
        NOT_IMPLEMENTED = "not_implemented";
        /// 501: snapshots on a control plane without a snapshot bucket.
        SNAPSHOTS_DISABLED = "snapshots_disabled";
        /// 502: the runner failed the call.
        RUNNER_ERROR = "runner_error";
        /// 502: the box did not boot on its runner.
        BOOT_FAILED = "boot_failed";
        /// 502: a snapshot image whose digest is not the snapshot's.
        SNAPSHOT_CORRUPT = "snapshot_corrupt";
        /// 502: the snapshot bucket refused an upload.
        STORAGE_ERROR = "storage_error";
        /// 503: the database is unreachable or restarting.
        DATABASE_UNAVAILABLE = "database_unavailable";
        /// 503: the box's runner cannot be reached (also an attach `error` message: reconnect with the cursor).
        RUNNER_UNAVAILABLE = "runner_unavailable";
        /// 503: no runner has room for the box now.
        NO_CAPACITY = "no_capacity";
        /// 503: no ready runner has the labels of `runner_selector`.
        NO_RUNNER_MATCHES = "no_runner_matches";
    }

    /// Attach `error` message only: a client text frame the server does not understand (the connection stays open).
    pub const INVALID_MESSAGE: &str = "invalid_message";
    /// Attach `error` message only: the runner ended the stream without a result (reconnect with the cursor).
    pub const RUNNER_CLOSED: &str = "runner_closed";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes in docs/api.md's error table, in their order.
    fn documented() -> Vec<String> {
        let doc = include_str!("../../docs/api.md");
        let table = doc.split("| status | code | when |").nth(1).expect("docs/api.md has the error table");
        table
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.split('|').nth(2).expect("a code column").trim().trim_matches('`').to_string())
            .collect()
    }

    #[test]
    fn the_codes_are_the_documented_ones() {
        let mut doc = documented();
        // quota_exceeded has two rows (422 and 429): each code once, where it first appears.
        let mut seen = std::collections::HashSet::new();
        doc.retain(|c| seen.insert(c.clone()));
        assert_eq!(doc, codes::ALL, "docs/api.md's error table and boxyard_api::error::codes differ");
    }

    #[test]
    fn the_error_body_omits_an_absent_retry_after() {
        let b = ErrorBody {
            code: codes::NOT_FOUND.into(),
            message: "box x does not exist".into(),
            retry_after: None,
            request_id: None,
        };
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"code":"not_found","message":"box x does not exist"}"#);
        let b = ErrorBody { retry_after: Some(10), ..b };
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(s, r#"{"code":"not_found","message":"box x does not exist","retry_after":10}"#);
        assert_eq!(serde_json::from_str::<ErrorBody>(&s).unwrap(), b);
    }
}
