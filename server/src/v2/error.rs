//! Native API error answers: `{"error": {"code", "message", ...details}}`
//! with the status the contract gives each failure. The details name what
//! a client needs to recover: the message index, the expected sequence,
//! the member's current assignment.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::cluster::ClusterFailure;
use crate::disk_space::DiskFull;
use crate::v1::error::V1Error;

/// One v2 failure.
#[derive(Debug, Clone, PartialEq)]
pub struct V2Error {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`InvalidMessage`, `OutOfSequence`).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Extra fields merged into the error object.
    pub details: Map<String, Value>,
}

impl V2Error {
    /// An error with any status.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        V2Error {
            status,
            code: code.into(),
            message: message.into(),
            details: Map::new(),
        }
    }

    /// 400 `InvalidRequest` naming the field at fault.
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        V2Error::new(StatusCode::BAD_REQUEST, "InvalidRequest", message).with("field", field.into())
    }

    /// 400 `InvalidMessage` naming the message by its index in the request.
    pub fn bad_message(index: usize, message: impl Into<String>) -> Self {
        V2Error::new(StatusCode::BAD_REQUEST, "InvalidMessage", message).with("index", index)
    }

    /// 500 for what should not happen.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(error = %message, "internal error");
        V2Error::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// Adds a detail field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let mut error = self.details;
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), json!(self.message));
        error.insert("status".into(), json!(self.status.as_u16()));
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

/// The v1 lookups, permission checks and setting validators are shared:
/// their errors keep their status; a 400 becomes `InvalidRequest` naming
/// the field, any other keeps the v1 error class as its code.
impl From<V1Error> for V2Error {
    fn from(e: V1Error) -> Self {
        if e.status == StatusCode::BAD_REQUEST {
            V2Error::bad(e.field, e.message)
        } else {
            V2Error::new(e.status, e.field, e.message)
        }
    }
}

impl From<DiskFull> for V2Error {
    fn from(full: DiskFull) -> Self {
        V2Error::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            full.to_string(),
        )
    }
}

impl From<ClusterFailure> for V2Error {
    fn from(failure: ClusterFailure) -> Self {
        V1Error::from(failure).into()
    }
}
