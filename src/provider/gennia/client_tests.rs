//! Unit tests of `client`.

use super::*;
use reqwest::header::HeaderValue;
use std::time::Duration;

#[test]
fn refusals_map_to_distinguishable_errors() {
    let h = HeaderMap::new();
    let e = map_error(
        StatusCode::BAD_REQUEST,
        &h,
        br#"{"code":"WORKSPACE_NAME_TAKEN","message":"Duplicate workspace name"}"#,
    );
    assert!(matches!(e, ProviderError::Conflict(_)));
    assert_eq!(error_kind(&e), Some(GenniaErrorKind::NameTaken));
    let e = map_error(
        StatusCode::BAD_REQUEST,
        &h,
        br#"{"code":"VALIDATION_ERROR","message":"users: required"}"#,
    );
    assert!(matches!(e, ProviderError::Validation(_)) && e.needs_human());
    // No code in the body: the documented message decides.
    let e = map_error(
        StatusCode::BAD_REQUEST,
        &h,
        br#"{"message":"Client is not suspended"}"#,
    );
    assert_eq!(e.code(), "CLIENT_NOT_SUSPENDED");
    let e = map_error(
        StatusCode::UNAUTHORIZED,
        &h,
        br#"{"code":"INVALID_API_KEY"}"#,
    );
    assert!(e.is_auth() && e.code() == "INVALID_API_KEY");
    let mut h429 = HeaderMap::new();
    h429.insert("retry-after", HeaderValue::from_static("2"));
    let e = map_error(StatusCode::TOO_MANY_REQUESTS, &h429, b"");
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    let e = map_error(StatusCode::BAD_GATEWAY, &h, b"<html>gsk_leak</html>");
    assert!(matches!(e, ProviderError::Server(_)));
    assert!(!e.to_string().contains("gsk_leak"));
}

#[test]
fn ids_and_creates_are_checked_before_sending() {
    assert!(safe_id("9c3a4d22-1a8d-4b3f-9b1e-7a0f0c4f3e21").is_ok());
    assert!(safe_id("../x").is_err() && safe_id("").is_err());
    let admin = NewUser {
        email: "a@x.test".into(),
        name: None,
        role: Role::Admin,
    };
    assert!(validate_new(&NewClient::new("Acme", vec![admin.clone()])).is_ok());
    assert!(validate_new(&NewClient::new("  ", vec![admin.clone()])).is_err());
    assert!(validate_new(&NewClient::new("x".repeat(151), vec![admin])).is_err());
    let member = NewUser {
        email: "m@x.test".into(),
        name: None,
        role: Role::Member,
    };
    let err = validate_new(&NewClient::new("Acme", vec![member])).unwrap_err();
    assert!(err.to_string().contains("admin"));
}

#[test]
fn only_reads_and_state_calls_are_retry_safe() {
    assert!(Request::new(Method::GET, "/r", "/r".into()).retry_safe);
    assert!(Request::new(Method::DELETE, "/r", "/r".into()).retry_safe);
    assert!(!Request::new(Method::POST, "/r", "/r".into()).retry_safe);
    assert!(
        Request::new(Method::POST, "/r", "/r".into())
            .idempotent_by_state()
            .retry_safe
    );
    assert!(ambiguous(&ProviderError::Timeout));
    assert!(!ambiguous(&ProviderError::Invalid("x".into())));
}
