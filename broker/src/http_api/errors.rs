//! One error type for every answer that is not a success.
//!
//! [`ApiError`] maps each broker error to its status and code (exhaustively,
//! so a new broker error must choose one), turns axum's extractor
//! rejections into the same JSON body, and keeps store internals — file
//! paths, OS errors — in the log, never in a response.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::json::ErrorBody;
use crate::error::BrokerError;

/// Every error the API answers with; the body is an [`ErrorBody`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The broker refused or failed: 400, 404, 409, 413, 500 or 503
    /// according to the variant (table in the module doc).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// 400 Bad Request: a query, path, JSON text or message batch that
    /// cannot be parsed.
    #[error("{0}")]
    BadRequest(String),
    /// 401 Unauthorized: no `Authorization: Bearer` key.
    #[error("this route needs the broker key as Authorization: Bearer <key>")]
    Unauthorized,
    /// 403 Forbidden: another key, or a checker URL outside the allow-list.
    #[error("{0}")]
    Forbidden(String),
    /// 405 Method Not Allowed: the path exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413 Payload Too Large: the body is over the route's limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 Unsupported Media Type: the body's content type is not the
    /// route's.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 Unprocessable Entity: valid JSON with missing or mistyped fields.
    #[error("{0}")]
    Unprocessable(String),
    /// 500 Internal Server Error: a fault of the server itself; logged, and
    /// answered without details.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// The machine-readable `code` of the body.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use BrokerError as B;
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            // Exhaustive on purpose: a new broker error must choose its status.
            ApiError::Broker(e) => match e {
                B::TopicNotFound(_) => (StatusCode::NOT_FOUND, "topic_not_found"),
                B::QueueNotFound { .. } => (StatusCode::NOT_FOUND, "queue_not_found"),
                B::UnknownMember { .. } => (StatusCode::NOT_FOUND, "unknown_member"),
                B::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
                B::InvalidMessage(_) => (StatusCode::BAD_REQUEST, "invalid_message"),
                B::InvalidTopic { .. } => (StatusCode::BAD_REQUEST, "invalid_topic"),
                B::TopicConflict { .. } => (StatusCode::CONFLICT, "topic_conflict"),
                B::GroupModeConflict { .. } => (StatusCode::CONFLICT, "group_mode_conflict"),
                B::Fenced(_) => (StatusCode::CONFLICT, "fenced"),
                B::OffsetBackwards { .. } => (StatusCode::CONFLICT, "offset_backwards"),
                B::OffsetOwnerLimit { .. } => (StatusCode::CONFLICT, "offset_owner_limit"),
                B::MessageTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "message_too_large"),
                B::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
                B::StorageFailed(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_failed"),
                B::DiskFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
                B::FlushTimeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "flush_timeout"),
                B::Corruption { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "corruption"),
                B::Io { .. } | B::Layout(_) | B::StoreLocked(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal")
                }
                B::Remote(_) => (StatusCode::BAD_GATEWAY, "remote"),
            },
        }
    }

    /// The message shown to the caller. Errors whose text may carry file
    /// paths or OS details get a fixed sentence instead.
    fn public_message(&self) -> String {
        use BrokerError as B;
        match self {
            ApiError::Internal(_) => "internal server error; see the broker log".into(),
            ApiError::Broker(B::StorageFailed(_)) => {
                "broker storage failed; it refuses writes until restarted".into()
            }
            ApiError::Broker(B::Corruption { .. }) => {
                "the broker's store is corrupted; see the broker log".into()
            }
            ApiError::Broker(B::Io { .. } | B::Layout(_) | B::StoreLocked(_)) => {
                "internal storage error; see the broker log".into()
            }
            ApiError::Broker(B::Remote(_)) => "an upstream broker failed".into(),
            other => other.to_string(),
        }
    }

    /// An extractor's rejection, keeping the status axum chose for it.
    fn rejected(status: StatusCode, text: String) -> ApiError {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(text),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(text),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(text),
            s if s.is_server_error() => ApiError::Internal(text),
            _ => ApiError::BadRequest(text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            // The full error (paths, OS errors) goes to the log only.
            tracing::error!(code, status = status.as_u16(), error = %self, "broker API request failed");
        } else {
            tracing::debug!(code, status = status.as_u16(), error = %self, "broker API request refused");
        }
        let body = ErrorBody {
            error: self.public_message(),
            code: code.to_owned(),
        };
        (status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// What every handler returns.
pub(super) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_body_hides_store_internals() {
        let io = ApiError::Broker(BrokerError::io(
            "write /var/lib/broker/commitlog/00000000000000000000",
            std::io::Error::other("disk on fire"),
        ));
        assert_eq!(io.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!io.public_message().contains("/var/lib"));
        let failed = ApiError::Broker(BrokerError::StorageFailed(
            "fdatasync /var/lib/broker/x: EIO".into(),
        ));
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!failed.public_message().contains("/var/lib"));
    }
}
