//! The one error type of the crate.

use serde_json::Value;

/// A `metav1.Status` failure from the server (or an HTTP error the server answered
/// without one, turned into the same shape).
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// HTTP status code (`code` of the Status).
    pub code: u16,
    /// `reason`, e.g. `NotFound`, `AlreadyExists`, `Conflict`, `Expired`.
    pub reason: String,
    pub message: String,
    /// `details`, when the server sent any.
    pub details: Option<Value>,
}

impl Status {
    /// Reads a `Status` body; falls back to the HTTP code and the raw text.
    pub fn from_body(http_code: u16, body: &[u8]) -> Status {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        match parsed {
            Some(v) if v.get("kind").and_then(Value::as_str) == Some("Status") => {
                Status::from_value(&v, http_code)
            }
            // The etcd gateway's shape: {"error", "code" (gRPC), "message"}.
            Some(v) if v.get("code").is_some_and(Value::is_u64) => {
                match v.get("message").and_then(Value::as_str) {
                    Some(message) => Status {
                        code: http_code,
                        reason: reason_for(http_code).to_string(),
                        message: message.to_string(),
                        details: None,
                    },
                    None => Status::from_raw(http_code, body),
                }
            }
            _ => Status::from_raw(http_code, body),
        }
    }

    /// The HTTP code and the body as text.
    fn from_raw(http_code: u16, body: &[u8]) -> Status {
        let text = String::from_utf8_lossy(body).trim().to_string();
        Status {
            code: http_code,
            reason: reason_for(http_code).to_string(),
            message: if text.is_empty() {
                format!("the server answered HTTP {http_code}")
            } else {
                text
            },
            details: None,
        }
    }

    /// A Status object (as in a watch `ERROR` event); `default_code` when it has none.
    pub fn from_value(v: &Value, default_code: u16) -> Status {
        let code = v
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(default_code);
        Status {
            code,
            reason: v
                .get("reason")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| reason_for(code).to_string()),
            message: v
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            details: v.get("details").cloned(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code == 404 && self.reason == "NotFound"
    }
}

/// The `reason` kube-apiserver uses for an HTTP code.
fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        c if c >= 500 => "InternalError",
        _ => "Unknown",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the request with a `Status`.
    #[error("Error from server ({}): {}", .0.reason, .0.message)]
    Api(Status),
    /// The kubeconfig could not be read or is not usable.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    /// Bad client configuration (no endpoint, bad certificate...).
    #[error("{0}")]
    Config(String),
    /// Every attempt on every endpoint failed (connection errors, 5xx with Retry-After).
    #[error("no endpoint answered after {attempts} attempts; last error: {last}")]
    Unavailable { attempts: usize, last: String },
    /// A transport error that is not retried (e.g. the body broke mid-way), with its
    /// causes on one line.
    #[error("{endpoint}: {message}")]
    Http { endpoint: String, message: String },
    /// The server answered something this client cannot read.
    #[error("unexpected response from {endpoint}: {message}")]
    Decode { endpoint: String, message: String },
    /// A resource name, short name or kind that discovery does not list.
    #[error("the server doesn't have a resource type \"{0}\"")]
    UnknownResource(String),
    /// A manifest that cannot be applied (no kind, no name, bad YAML...).
    #[error("{0}")]
    Manifest(String),
}

impl Error {
    /// The server's Status, when this is one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Api(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status().is_some_and(Status::is_not_found)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
