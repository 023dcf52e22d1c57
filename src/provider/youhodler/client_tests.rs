//! Unit tests of `client`.

use super::*;

#[test]
fn ids_and_keys_are_checked_before_sending() {
    assert_eq!(
        client_path("9c3a4d22-1a8d-4b3f-9b1e-7a0f0c4f3e21", "suspend").unwrap(),
        "/clients/9c3a4d22-1a8d-4b3f-9b1e-7a0f0c4f3e21/suspend"
    );
    for bad in ["", "../x", "a/b", "a?b", &"x".repeat(129)] {
        assert!(client_path(bad, "").is_err(), "{bad}");
    }
    assert!(checked_key(&IdempotencyKey("k-1".into())).is_ok());
    assert!(checked_key(&IdempotencyKey("".into())).is_err());
    assert!(checked_key(&IdempotencyKey("a b".into())).is_err());
    assert!(checked_key(&IdempotencyKey("x".repeat(256))).is_err());
}

#[test]
fn lifecycle_keys_are_scoped_by_etag_and_call() {
    let k = IdempotencyKey("orgops-suspend-1".into());
    assert_eq!(
        scoped_key(&k, "W/\"a1b2c3d4\"", 0xbeef),
        "orgops-suspend-1.a1b2c3d4.0000beef"
    );
    assert_eq!(
        scoped_key(&k, "\"a1b2c3d4\"", 1),
        scoped_key(&k, "W/\"a1b2c3d4\"", 1)
    );
    assert_ne!(scoped_key(&k, "W/\"a1\"", 1), scoped_key(&k, "W/\"a2\"", 1));
    assert_ne!(scoped_key(&k, "W/\"a1\"", 1), scoped_key(&k, "W/\"a1\"", 2));
    assert_eq!(scoped_key(&k, "", 1), "orgops-suspend-1..00000001");
    let long = IdempotencyKey("k".repeat(250));
    let scoped = scoped_key(&long, "W/\"a1b2c3d4\"", 7);
    assert!(scoped.len() <= MAX_KEY_LEN && scoped.ends_with(".a1b2c3d4.00000007"));
    assert_eq!(scoped, scoped_key(&long, "W/\"a1b2c3d4\"", 7), "stable");
    assert!(checked_key(&IdempotencyKey(scoped)).is_ok());
}

#[test]
fn only_safe_requests_are_resent() {
    assert!(Call::new(Method::GET, "/r", "/r".into()).resend_safe);
    assert!(!Call::new(Method::POST, "/r", "/r".into()).resend_safe);
    assert!(
        Call::new(Method::POST, "/r", "/r".into())
            .key("k".into())
            .resend_safe
    );
    assert!(!Call::new(Method::PATCH, "/r", "/r".into()).resend_safe);
    assert!(
        Call::new(Method::PATCH, "/r", "/r".into())
            .if_match("W/\"1\"")
            .resend_safe
    );
    assert!(
        !Call::new(Method::POST, "/r", "/r".into())
            .if_match("W/\"1\"")
            .resend_safe
    );
}

#[test]
fn client_debug_shows_no_secret() {
    let cfg = YouhodlerConfig::new("http://127.0.0.1:1", "sa_1", Secret::new("supersecret"));
    let c = YouhodlerClient::new(cfg).unwrap();
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("supersecret") && shown.contains("sa_1"),
        "{shown}"
    );
}

#[test]
fn bad_configurations_are_refused() {
    let ok = || YouhodlerConfig::new("http://127.0.0.1:1", "sa_1", Secret::new("s"));
    assert!(YouhodlerClient::new(ok()).is_ok());
    let mut c = ok();
    c.base_url = "ftp://x".into();
    assert!(YouhodlerClient::new(c).is_err());
    let mut c = ok();
    c.client_secret = Secret::new(" ");
    assert!(YouhodlerClient::new(c).is_err());
    let mut c = ok();
    c.enterprise_id = Some("enterprises/../x".into());
    let err = YouhodlerClient::new(c).unwrap_err();
    assert!(
        err.to_string().contains("spec.youhodler.enterpriseId"),
        "{err}"
    );
    let mut c = ok();
    c.max_attempts = 0;
    assert!(YouhodlerClient::new(c).is_err());
}
