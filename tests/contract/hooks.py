"""Boxyard's own checks for schemathesis (loaded through SCHEMATHESIS_HOOKS by scripts/fuzz-api.sh).

They replace two built-in checks with stricter or more exact ones:

- `boxyard_no_server_error` (instead of `not_a_server_error`): no 5xx at all, except a documented 503 that says
  when to retry (`retry_after` in the body and a `Retry-After` header).
- `boxyard_valid_data_accepted` (instead of `positive_data_acceptance`): a request the schema allows is never
  refused as malformed (400 or 422), except with one of the codes for rules that depend on stored state and so
  cannot be in a schema (docs/api.md lists them): a per-box quota, an execution without a command in a box whose
  snapshot has none, a failed image upload, a reused idempotency key, an attach that is not a WebSocket upgrade,
  an attach cursor beyond the output; and a file upload whose bytes are not a tar stream.

Every error answer must also be the API's error body with the request id.
"""

import uuid

import schemathesis

# Refusals of schema-valid requests that depend on stored state, by (status, code).
STATEFUL_REFUSALS = {
    (422, "quota_exceeded"),
    (422, "no_command"),
    (422, "upload_failed"),
    (422, "idempotency_key_reused"),
    (400, "websocket_required"),
    (400, "invalid_cursor"),
}


@schemathesis.hook
def before_call(context, case, kwargs):
    """A valid Idempotency-Key gets a fresh value: generated keys repeat ("0", "a"), and a repeated key rightly
    replays the first answer (a box since deleted, another request's outcome), which the resource checks would
    take for a bug. The header's negative cases stay as generated; tests/api_flow.rs covers replays."""
    headers = case.headers or {}
    meta = case.meta
    if "Idempotency-Key" in headers and meta is not None and meta.generation.mode.is_positive:
        headers["Idempotency-Key"] = str(uuid.uuid4())


def _body(response):
    try:
        return response.json()
    except Exception:  # noqa: BLE001 - any undecodable body is the finding
        return None


@schemathesis.check
def boxyard_no_server_error(ctx, response, case):
    status = response.status_code
    if status < 500:
        return None
    body = _body(response) or {}
    if status == 503 and isinstance(body.get("retry_after"), int) and "retry-after" in response.headers:
        return None
    raise AssertionError(f"server error {status}: {response.text[:500]}")


@schemathesis.check
def boxyard_valid_data_accepted(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status not in (400, 422):
        return None
    body = _body(response) or {}
    if (status, body.get("code")) in STATEFUL_REFUSALS:
        return None
    # A file upload's body is a tar stream: a schema says "binary", not "tar", so the box's refusal of bytes that
    # are not an archive is the rule no schema can state.
    if case.method.upper() == "PUT" and case.path == "/v1/boxes/{id}/files" and status == 422:
        return None
    raise AssertionError(f"a request the schema allows was refused with {status}: {response.text[:500]}")


@schemathesis.check
def boxyard_error_body(ctx, response, case):
    status = response.status_code
    if status < 400:
        return None
    body = _body(response)
    if not isinstance(body, dict) or not isinstance(body.get("code"), str) or not isinstance(body.get("message"), str):
        raise AssertionError(f"error {status} without the API's error body: {response.text[:500]}")
    # Header names are lower case, values lists.
    rid = (response.headers.get("x-request-id") or [None])[0]
    if not rid or body.get("request_id") != rid:
        raise AssertionError(f"error {status}: request_id {body.get('request_id')!r} is not the x-request-id header {rid!r}")
    return None
