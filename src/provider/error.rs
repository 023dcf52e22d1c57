//! Provider errors: one variant per documented Layers error code, plus transport,
//! timeout and decode failures. Messages never contain secrets: API messages come from
//! the error envelope, and decode errors carry only a position, never the body.

use std::fmt;
use std::time::Duration;

/// What the API said when it refused a request (the error envelope, §2.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
    /// From the `Retry-After` header, when present.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request {id})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// 401: missing, wrong or revoked credential.
    #[error("unauthenticated: {0}")]
    Unauthenticated(ApiFailure),
    /// 403: the credential lacks a scope (e.g. `org:admin`).
    #[error("forbidden: {0}")]
    ForbiddenScope(ApiFailure),
    /// 404: unknown, or not a direct child (existence is never leaked).
    #[error("not found: {0}")]
    NotFound(ApiFailure),
    /// 422: the request was rejected as invalid.
    #[error("validation failed: {0}")]
    Validation(ApiFailure),
    /// 409 CONFLICT: the object's state forbids the action (e.g. archived).
    #[error("conflict: {0}")]
    Conflict(ApiFailure),
    /// 409: the idempotency key was already used with a different body.
    #[error("idempotency conflict: {0}")]
    IdempotencyConflict(ApiFailure),
    /// 409 whose details say the original request with this key is still executing: the
    /// same request may be re-sent (after `Retry-After`) and is then replayed.
    #[error("original request still in flight: {0}")]
    InFlight(ApiFailure),
    /// 400: the route requires an idempotency key.
    #[error("idempotency key required: {0}")]
    IdempotencyRequired(ApiFailure),
    /// 429: over the rate limit.
    #[error("rate limited: {0}")]
    RateLimited(ApiFailure),
    /// 503 KILL_SWITCH: the credential or its organization is suspended/killed.
    #[error("kill switch: {0}")]
    KillSwitch(ApiFailure),
    /// 402: the parent's balance cannot cover the transfer.
    #[error("billing exhausted: {0}")]
    BillingExhausted(ApiFailure),
    /// Any other 5xx.
    #[error("server error: {0}")]
    Server(ApiFailure),
    /// Any other 4xx or an unknown code.
    #[error("unexpected API error: {0}")]
    Unexpected(ApiFailure),
    /// Connection refused/reset, TLS, DNS... The request may or may not have been processed.
    #[error("transport error: {0}")]
    Transport(String),
    /// No response within the request timeout. The request may have been processed.
    #[error("request timed out")]
    Timeout,
    /// A 2xx response whose body did not match the expected shape.
    #[error("could not decode the response of {route}: {detail}")]
    Decode { route: String, detail: String },
    /// Rejected locally before sending (bad configuration or an unsafe id).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Not sent: this replica's leader fence is closed (`crate::fence`).
    #[error("not sent: {0}")]
    Fenced(#[from] crate::fence::Fenced),
    /// The provider accepted a change and applies it later (YouHodler may answer a suspend
    /// 201 with the old status): nothing to send meanwhile, only to look again.
    #[error("accepted, not applied yet: {0}")]
    Pending(String),
}

impl ProviderError {
    /// Builds the variant for an HTTP error response.
    pub fn from_api(failure: ApiFailure) -> ProviderError {
        match (failure.status, failure.code.as_str()) {
            (_, "UNAUTHENTICATED") | (401, _) => ProviderError::Unauthenticated(failure),
            (_, "FORBIDDEN_SCOPE") | (403, _) => ProviderError::ForbiddenScope(failure),
            (_, "NOT_FOUND") | (404, _) => ProviderError::NotFound(failure),
            (_, "VALIDATION") | (422, _) => ProviderError::Validation(failure),
            (_, "IDEMPOTENCY_CONFLICT") => ProviderError::IdempotencyConflict(failure),
            (_, "IDEMPOTENCY_REQUIRED") => ProviderError::IdempotencyRequired(failure),
            (_, "CONFLICT") | (409, _) => ProviderError::Conflict(failure),
            (_, "RATE_LIMITED") | (429, _) => ProviderError::RateLimited(failure),
            (_, "KILL_SWITCH") => ProviderError::KillSwitch(failure),
            (_, "BILLING_EXHAUSTED") | (402, _) => ProviderError::BillingExhausted(failure),
            (500..=599, _) => ProviderError::Server(failure),
            _ => ProviderError::Unexpected(failure),
        }
    }

    pub fn api_failure(&self) -> Option<&ApiFailure> {
        match self {
            ProviderError::Unauthenticated(f)
            | ProviderError::ForbiddenScope(f)
            | ProviderError::NotFound(f)
            | ProviderError::Validation(f)
            | ProviderError::Conflict(f)
            | ProviderError::IdempotencyConflict(f)
            | ProviderError::InFlight(f)
            | ProviderError::IdempotencyRequired(f)
            | ProviderError::RateLimited(f)
            | ProviderError::KillSwitch(f)
            | ProviderError::BillingExhausted(f)
            | ProviderError::Server(f)
            | ProviderError::Unexpected(f) => Some(f),
            _ => None,
        }
    }

    /// Transient: the same request may succeed later (transport, timeout, 5xx, 429).
    /// Whether it may be *re-sent* also depends on the request (see the client).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Transport(_)
                | ProviderError::Timeout
                | ProviderError::Server(_)
                | ProviderError::RateLimited(_)
                | ProviderError::InFlight(_)
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.api_failure().and_then(|f| f.retry_after)
    }

    /// The credential is refused (401, 403, 503 KILL_SWITCH): stop writes, retry slowly.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            ProviderError::Unauthenticated(_)
                | ProviderError::ForbiddenScope(_)
                | ProviderError::KillSwitch(_)
        )
    }

    /// Retrying will not help until a person changes the spec, the parent's balance or
    /// the credentials (the controller reports `Stalled`).
    pub fn needs_human(&self) -> bool {
        self.is_auth()
            || matches!(
                self,
                ProviderError::Validation(_)
                    | ProviderError::Conflict(_)
                    | ProviderError::IdempotencyConflict(_)
                    | ProviderError::IdempotencyRequired(_)
                    | ProviderError::BillingExhausted(_)
                    | ProviderError::Invalid(_)
            )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ProviderError::NotFound(_))
    }

    /// Stable machine-readable code (API code, or a local one such as `TRANSPORT`).
    pub fn code(&self) -> &str {
        match self {
            ProviderError::Transport(_) => "TRANSPORT",
            ProviderError::Timeout => "TIMEOUT",
            ProviderError::Decode { .. } => "DECODE",
            ProviderError::Invalid(_) => "INVALID_REQUEST",
            ProviderError::Fenced(_) => "FENCED",
            ProviderError::Pending(_) => "PENDING",
            other => other
                .api_failure()
                .map(|f| f.code.as_str())
                .unwrap_or("UNKNOWN"),
        }
    }

    /// Human-readable message, safe to show in conditions and Events.
    pub fn message(&self) -> &str {
        match self {
            ProviderError::Transport(m) | ProviderError::Invalid(m) | ProviderError::Pending(m) => {
                m
            }
            ProviderError::Timeout => "request timed out",
            ProviderError::Fenced(_) => "this replica's leader fence is closed",
            ProviderError::Decode { detail, .. } => detail,
            other => other
                .api_failure()
                .map(|f| f.message.as_str())
                .unwrap_or(""),
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        self.api_failure().and_then(|f| f.request_id.as_deref())
    }
}

/// A refusal as the API sends it, for tests across the crate.
#[cfg(test)]
pub(crate) fn test_failure(status: u16, code: &str) -> ApiFailure {
    ApiFailure {
        status,
        code: code.to_string(),
        message: "not allowed".to_string(),
        request_id: Some("req_1".to_string()),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::test_failure as failure;
    use super::*;

    #[test]
    fn documented_codes_map_to_their_variant() {
        let cases = [
            (401, "UNAUTHENTICATED", "UNAUTHENTICATED"),
            (403, "FORBIDDEN_SCOPE", "FORBIDDEN_SCOPE"),
            (404, "NOT_FOUND", "NOT_FOUND"),
            (422, "VALIDATION", "VALIDATION"),
            (409, "CONFLICT", "CONFLICT"),
            (409, "IDEMPOTENCY_CONFLICT", "IDEMPOTENCY_CONFLICT"),
            (400, "IDEMPOTENCY_REQUIRED", "IDEMPOTENCY_REQUIRED"),
            (429, "RATE_LIMITED", "RATE_LIMITED"),
            (503, "KILL_SWITCH", "KILL_SWITCH"),
            (402, "BILLING_EXHAUSTED", "BILLING_EXHAUSTED"),
            (500, "INTERNAL", "INTERNAL"),
        ];
        for (status, code, want) in cases {
            let err = ProviderError::from_api(failure(status, code));
            assert_eq!(err.code(), want);
            assert_eq!(err.request_id(), Some("req_1"));
        }
        assert!(matches!(
            ProviderError::from_api(failure(409, "IDEMPOTENCY_CONFLICT")),
            ProviderError::IdempotencyConflict(_)
        ));
        assert!(matches!(
            ProviderError::from_api(failure(503, "KILL_SWITCH")),
            ProviderError::KillSwitch(_)
        ));
        assert!(matches!(
            ProviderError::from_api(failure(503, "UNAVAILABLE")),
            ProviderError::Server(_)
        ));
        assert!(matches!(
            ProviderError::from_api(failure(418, "TEAPOT")),
            ProviderError::Unexpected(_)
        ));
    }

    #[test]
    fn classification_drives_the_controller() {
        let kill = ProviderError::from_api(failure(503, "KILL_SWITCH"));
        assert!(kill.is_auth() && kill.needs_human() && !kill.is_retryable());
        let server = ProviderError::from_api(failure(502, "BAD_GATEWAY"));
        assert!(server.is_retryable() && !server.needs_human() && !server.is_auth());
        let limited = ProviderError::from_api(ApiFailure {
            retry_after: Some(Duration::from_secs(3)),
            ..failure(429, "RATE_LIMITED")
        });
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
        let invalid = ProviderError::from_api(failure(422, "VALIDATION"));
        assert!(invalid.needs_human() && !invalid.is_retryable());
        assert!(ProviderError::Timeout.is_retryable());
        assert!(!ProviderError::from_api(failure(404, "NOT_FOUND")).needs_human());
    }
}
