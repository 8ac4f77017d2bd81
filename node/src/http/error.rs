//! The one place gateway errors become HTTP: an exhaustive status mapping and a body in
//! the caller's dialect (Anthropic or OpenAI). Internal causes are logged, never sent.

use crate::gateway::auth::AuthError;
use crate::gateway::gate::GateError;
use crate::gateway::routing::RouteError;
use crate::governance::admission::AdmissionError;
use crate::governance::limits::RateLimited;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which API the caller speaks; errors are written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Anthropic,
    OpenAi,
    /// The admin API: `{"error": {"type", "message"}}` like OpenAI, with a `field` when known.
    Admin,
}

impl Dialect {
    /// As request records name it.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Anthropic => "anthropic",
            Dialect::OpenAi => "openai",
            Dialect::Admin => "admin",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No usable virtual key (missing, unknown or rotated, disabled).
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    BudgetExhausted(String),
    #[error("{message}")]
    RateLimited { message: String, retry_after_s: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    InvalidField { field: String, message: String },
    #[error("request body is larger than the limit of {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// The provider refused the request itself (a 4xx it sent); relayed with its status.
    #[error("{message}")]
    UpstreamRejected {
        status: u16,
        message: String,
        kind: String,
    },
    #[error("{0}")]
    UpstreamRateLimited(String, u64),
    #[error("{0}")]
    UpstreamFailed(String),
    #[error("{0}")]
    UpstreamTimeout(String),
    #[error("the gateway is shutting down or overloaded; retry shortly")]
    Unavailable,
    /// Every provider config the request could use has its circuit breaker open.
    #[error("{message}")]
    ProvidersUnavailable { message: String, retry_after_s: u64 },
    /// The cluster cannot commit or confirm right now (no leader, no quorum). The field
    /// is the internal cause: logged, never sent.
    #[error("the cluster cannot commit or confirm this right now (no leader or no quorum); retry shortly")]
    ClusterUnavailable(String),
    /// This node cannot trust its view of the cluster (it has not heard from it lately);
    /// another node can serve the request.
    #[error("{0}")]
    NodeIsolated(String),
    /// A fault of the gateway itself. The field is the internal cause: logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::EmptyModel => ApiError::InvalidField {
                field: "model".into(),
                message: e.to_string(),
            },
            RouteError::NotAllowed(message) => ApiError::PermissionDenied(message),
        }
    }
}

impl From<RateLimited> for ApiError {
    fn from(e: RateLimited) -> Self {
        ApiError::RateLimited {
            message: e.message,
            retry_after_s: e.retry_after_s,
        }
    }
}

impl From<AdmissionError> for ApiError {
    fn from(e: AdmissionError) -> Self {
        match e {
            AdmissionError::Exhausted(message) => ApiError::BudgetExhausted(message),
            AdmissionError::Untrusted => ApiError::NodeIsolated(e.to_string()),
            AdmissionError::Cluster(cause) => ApiError::ClusterUnavailable(cause.to_string()),
        }
    }
}

impl From<GateError> for ApiError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Route(e) => e.into(),
            GateError::RateLimited(e) => e.into(),
            GateError::NoPrice { .. } => ApiError::PermissionDenied(e.to_string()),
            GateError::Admission(e) => e.into(),
        }
    }
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated(_) | ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::BudgetExhausted(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::RateLimited { .. } | ApiError::UpstreamRateLimited(..) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::BadRequest(_) | ApiError::InvalidField { .. } => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UpstreamRejected { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable
            | ApiError::ClusterUnavailable(_)
            | ApiError::NodeIsolated(_)
            | ApiError::ProvidersUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Anthropic `error.type` (also used as the OpenAI `type`).
    pub fn error_type(&self) -> &str {
        match self {
            ApiError::Unauthenticated(_) | ApiError::Unauthorized(_) => "authentication_error",
            ApiError::PermissionDenied(_) => "permission_error",
            ApiError::BudgetExhausted(_) => "billing_error",
            ApiError::RateLimited { .. } | ApiError::UpstreamRateLimited(..) => "rate_limit_error",
            ApiError::BadRequest(_)
            | ApiError::InvalidField { .. }
            | ApiError::Conflict(_)
            | ApiError::MethodNotAllowed(_) => "invalid_request_error",
            ApiError::BodyTooLarge { .. } => "request_too_large",
            ApiError::NotFound(_) => "not_found_error",
            ApiError::UpstreamRejected { kind, .. } => kind,
            ApiError::UpstreamFailed(_) | ApiError::UpstreamTimeout(_) | ApiError::Internal(_) => {
                "api_error"
            }
            ApiError::Unavailable
            | ApiError::ClusterUnavailable(_)
            | ApiError::NodeIsolated(_)
            | ApiError::ProvidersUnavailable { .. } => "overloaded_error",
        }
    }

    /// What went wrong inside the gateway, for its log: never part of the answer.
    pub fn internal_cause(&self) -> Option<&str> {
        match self {
            ApiError::ClusterUnavailable(cause) | ApiError::Internal(cause) => Some(cause),
            _ => None,
        }
    }

    /// Terminal errors tell clients such as Claude Code not to retry
    /// (it otherwise retries even a 401 for minutes).
    fn is_terminal(&self) -> bool {
        matches!(
            self.status_code().as_u16(),
            400 | 401 | 402 | 403 | 404 | 405 | 409 | 413 | 422
        )
    }

    pub fn into_response_in(self, dialect: Dialect) -> Response {
        let status = self.status_code();
        if let Some(cause) = self.internal_cause() {
            tracing::warn!(
                status = status.as_u16(),
                cause,
                "answered with an internal cause withheld"
            );
        }
        let message = self.to_string();
        let kind = self.error_type().to_owned();
        let body = match dialect {
            Dialect::Anthropic => {
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
            Dialect::OpenAi => {
                json!({"error": {"message": message, "type": kind, "code": openai_code(status)}})
            }
            Dialect::Admin => match &self {
                ApiError::InvalidField { field, .. } => {
                    json!({"error": {"type": kind, "message": message, "field": field}})
                }
                _ => json!({"error": {"type": kind, "message": message}}),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if self.is_terminal() {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let ApiError::RateLimited { retry_after_s, .. }
        | ApiError::UpstreamRateLimited(_, retry_after_s)
        | ApiError::ProvidersUnavailable { retry_after_s, .. } = &self
        {
            if let Ok(v) = HeaderValue::from_str(&retry_after_s.max(&1).to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

fn openai_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "invalid_api_key",
        402 => "insufficient_quota",
        403 => "model_not_allowed",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "request_too_large",
        429 => "rate_limit_exceeded",
        400 => "invalid_request",
        _ => "upstream_error",
    }
}

/// A refusal the gateway wrote in Anthropic's shape, read back by a front door that
/// answers in its own client's shape (`http::bedrock`, `http::vertex`).
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    pub kind: Option<String>,
    /// What the client acts on: `retry-after`, `x-should-retry`, the request id.
    headers: axum::http::HeaderMap,
}

/// Largest refusal body read back (the gateway's are small).
const MAX_REFUSAL_BYTES: usize = 64 * 1024;

impl Refusal {
    pub async fn read(response: Response) -> Refusal {
        let (mut parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_REFUSAL_BYTES)
            .await
            .unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let mut headers = axum::http::HeaderMap::new();
        for keep in [
            header::RETRY_AFTER.as_str(),
            "x-should-retry",
            "x-tollgate-request-id",
        ] {
            if let Some(v) = parts.headers.remove(keep) {
                headers.insert(keep, v);
            }
        }
        Refusal {
            status: parts.status,
            message: value["error"]["message"]
                .as_str()
                .unwrap_or("the request failed")
                .to_owned(),
            kind: value["error"]["type"].as_str().map(str::to_owned),
            headers,
        }
    }

    /// The refusal with `body` (JSON), keeping the headers the client acts on.
    pub fn respond(self, body: serde_json::Value) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}
