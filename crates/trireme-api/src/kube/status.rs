//! Kubernetes `metav1.Status` errors: the one place kube errors become responses.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use trireme_raft::{ProposeError, ReadError};
use trireme_store::StoreError;

#[derive(Debug)]
pub struct KubeError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl KubeError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        KubeError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(kind_plural: &str, group: &str, name: &str) -> Self {
        KubeError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{kind_plural} \"{name}\" not found"),
        )
        .with_details(details(name, group, kind_plural))
    }

    pub fn no_route() -> Self {
        KubeError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(kind_plural: &str, group: &str, name: &str) -> Self {
        KubeError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{kind_plural} \"{name}\" already exists"),
        )
        .with_details(details(name, group, kind_plural))
    }

    pub fn conflict(kind_plural: &str, group: &str, name: &str) -> Self {
        KubeError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {kind_plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(details(name, group, kind_plural))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        KubeError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 422 with one field cause, as kubectl prints it.
    pub fn invalid(kind: &str, name: &str, field: &str, value: &str, why: &str) -> Self {
        let cause = format!("Invalid value: \"{value}\": {why}");
        KubeError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {field}: {cause}"),
        )
        .with_details(json!({
            "name": name,
            "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": field}]
        }))
    }

    pub fn required(kind: &str, field: &str, why: &str) -> Self {
        KubeError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{kind} \"\" is invalid: {field}: Required value: {why}"),
        )
        .with_details(json!({
            "kind": kind,
            "causes": [{"reason": "FieldValueRequired", "message": format!("Required value: {why}"), "field": field}]
        }))
    }

    pub fn unauthorized() -> Self {
        KubeError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed() -> Self {
        KubeError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unsupported_media(accepted: &str) -> Self {
        KubeError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: {accepted}"),
        )
    }

    pub fn expired(message: impl Into<String>) -> Self {
        KubeError::new(StatusCode::GONE, "Expired", message)
    }

    pub fn too_large() -> Self {
        KubeError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "the request is too large",
        )
    }

    /// The JSON `Status` object.
    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

fn details(name: &str, group: &str, kind_plural: &str) -> Value {
    let mut d = json!({"name": name, "kind": kind_plural});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

impl From<StoreError> for KubeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { compact_revision } => KubeError::expired(format!(
                "too old resource version (compacted at {compact_revision})"
            )),
            StoreError::FutureRevision { current } => KubeError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!("Too large resource version, current: {current}"),
            ),
            StoreError::TooLarge { .. } => KubeError::too_large(),
            // Not retryable here, but another replica can take the request.
            e @ (StoreError::Propose(ProposeError::Removed)
            | StoreError::ReadIndex(ReadError::Removed)) => KubeError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("this API server's replica cannot serve: {e}"),
            ),
            e if e.is_retryable() => KubeError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("the store is unavailable: {e}"),
            ),
            e => KubeError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            ),
        }
    }
}

impl IntoResponse for KubeError {
    fn into_response(self) -> Response {
        let code = self.code;
        let mut resp = (code, axum::Json(self.status())).into_response();
        if code == StatusCode::SERVICE_UNAVAILABLE
            || code == StatusCode::TOO_MANY_REQUESTS
            || code == StatusCode::GATEWAY_TIMEOUT
        {
            // client-go retries these silently when they carry Retry-After.
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        resp
    }
}
