//! The API error envelope and the crate's own error type.
use serde_json::{Value, json};
use sim_kit::Reply;

/// An API error; rendered as `{"error":{"code","message","requestId","details"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(422, "VALIDATION", message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(404, "NOT_FOUND", format!("{what} not found"))
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "CONFLICT", message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(401, "UNAUTHENTICATED", message)
    }
    pub fn forbidden_scope(scope: &str) -> Self {
        Self::new(
            403,
            "FORBIDDEN_SCOPE",
            format!("this API key lacks the required scope {scope}"),
        )
        .with_details(json!({ "requiredScope": scope }))
    }
    pub fn kill_switch(scope: &str) -> Self {
        Self::new(
            503,
            "KILL_SWITCH",
            format!("kill switch engaged ({scope}); requests are refused"),
        )
        .with_details(json!({ "scope": scope }))
    }

    /// The error as a response (with `Retry-After` when set).
    pub fn reply(&self, request_id: &str) -> Reply {
        let mut r = Reply::json(self.status, &self.body(request_id));
        if let Some(s) = self.retry_after {
            r.headers.push(("retry-after", s.to_string()));
        }
        r
    }

    pub fn body(&self, request_id: &str) -> Value {
        json!({ "error": {
            "code": self.code,
            "message": self.message,
            "requestId": request_id,
            "details": self.details.clone().unwrap_or_else(|| json!({})),
        }})
    }
}

/// Errors of the simulator process itself (not of API requests): sim-kit's.
pub use sim_kit::KitError as SimError;
