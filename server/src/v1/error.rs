//! Queuey v1 error answers: `{"status": "error", "error_msg": {field:
//! message}}`, with the status code the contract gives each failure.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::cluster::ClusterFailure;
use crate::disk_space::DiskFull;

/// One v1 failure: a status and the field (or error class) it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Error {
    /// The HTTP status.
    pub status: StatusCode,
    /// The key of `error_msg`.
    pub field: String,
    /// The message.
    pub message: String,
}

impl V1Error {
    /// An error with any status.
    pub fn new(status: StatusCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        V1Error {
            status,
            field: field.into(),
            message: message.into(),
        }
    }

    /// 400 naming `field`.
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        V1Error::new(StatusCode::BAD_REQUEST, field, message)
    }

    /// 404 for an unknown queue (or a name no queue can have).
    pub fn no_queue(name: &str) -> Self {
        let shown: String = name.chars().take(60).collect();
        V1Error::new(
            StatusCode::NOT_FOUND,
            "InvalidQueueName",
            format!("Queue \"{shown}\" does not exist."),
        )
    }

    /// 404 for an unknown application.
    pub fn no_app(name: &str) -> Self {
        let shown: String = name.chars().take(60).collect();
        V1Error::new(
            StatusCode::NOT_FOUND,
            "InvalidApplicationName",
            format!("Application \"{shown}\" does not exist."),
        )
    }

    /// 401 for a key no application has.
    pub fn bad_key() -> Self {
        V1Error::new(
            StatusCode::UNAUTHORIZED,
            "InvalidApplicationKey",
            "Invalid application key specified.",
        )
    }

    /// 403 for a caller without permission.
    pub fn forbidden() -> Self {
        V1Error::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Access was denied to this resource.",
        )
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let mut error_msg = serde_json::Map::new();
        error_msg.insert(self.field, serde_json::Value::String(self.message));
        let body = serde_json::json!({"status": "error", "error_msg": error_msg});
        (self.status, Json(body)).into_response()
    }
}

impl From<DiskFull> for V1Error {
    fn from(full: DiskFull) -> Self {
        V1Error::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            full.to_string(),
        )
    }
}

impl From<ClusterFailure> for V1Error {
    fn from(failure: ClusterFailure) -> Self {
        match failure {
            ClusterFailure::Unavailable(e) => V1Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                e.to_string(),
            ),
            ClusterFailure::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                V1Error::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e)
            }
        }
    }
}
