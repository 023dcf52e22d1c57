//! youhodler-sim over real HTTP: OAuth tokens, enterprises, clients with idempotency keys,
//! ETags and If-Match, lifecycle codes, the error envelope, faults, counters, state file.
use reqwest::Method;
use serde_json::{Value, json};
use sim_kit::KitConfig;
use youhodler_sim::{Started, YouHodlerConfig};

struct T {
    s: Started,
    http: reqwest::Client,
    token: String,
}

struct Resp {
    status: u16,
    etag: Option<String>,
    replayed: bool,
    json: Value,
}

impl Resp {
    #[track_caller]
    fn err(&self, status: u16, code: &str, reason: Option<&str>) {
        assert_eq!(self.status, status, "{}", self.json);
        assert_eq!(self.json["code"], code, "{}", self.json);
        assert!(self.json["message"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(r) = reason {
            assert_eq!(self.json["details"]["reason"], r, "{}", self.json);
        }
    }
}

impl T {
    async fn with(cfg: YouHodlerConfig) -> T {
        let s = youhodler_sim::spawn(cfg).await.expect("spawn");
        let mut t = T {
            s,
            http: reqwest::Client::new(),
            token: String::new(),
        };
        t.token = t.new_token().await;
        t
    }
    async fn start() -> T {
        T::with(YouHodlerConfig::default()).await
    }
    async fn token_resp(&self, body: Value) -> Resp {
        self.send(Method::POST, "/oauth/token", Some(body), &[], None)
            .await
    }
    async fn new_token(&self) -> String {
        let r = self
            .token_resp(json!({"client_id": self.s.client_id, "client_secret": self.s.client_secret, "grant_type": "client_credentials"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.json["access_token"].as_str().unwrap().to_string()
    }
    async fn send(
        &self,
        m: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
        token: Option<&str>,
    ) -> Resp {
        let mut r = self.http.request(m, format!("{}{path}", self.s.base_url()));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("send");
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string());
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        let text = resp.text().await.unwrap();
        Resp {
            status,
            etag,
            replayed,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }
    async fn api(
        &self,
        m: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.send(m, path, body, headers, Some(&self.token)).await
    }
    async fn ctl(&self, m: Method, path: &str, body: Option<Value>) -> Resp {
        self.send(m, path, body, &[], None).await
    }
    fn scope(&self) -> String {
        format!("enterprises/{}", self.s.enterprise_id)
    }
    async fn create(&self, name: &str, key: Option<&str>) -> Resp {
        let body = json!({"display_name": name, "external_id": format!("ext-{name}"), "metadata": {"tier": "gold"}, "scope_ref": self.scope()});
        let h: Vec<(&str, &str)> = key
            .map(|k| vec![("idempotency-key", k)])
            .unwrap_or_default();
        self.api(Method::POST, "/clients", Some(body), &h).await
    }
}

#[tokio::test]
async fn oauth_tokens_expiry_and_revocation() {
    let t = T::start().await;
    let r = t.token_resp(json!({"client_id": t.s.client_id, "client_secret": t.s.client_secret, "grant_type": "client_credentials"})).await;
    assert_eq!(
        (r.json["token_type"].as_str(), r.json["expires_in"].as_u64()),
        (Some("Bearer"), Some(3600))
    );
    assert!(r.json["issued_token_type"].is_string());
    assert_eq!(
        r.json["access_token"].as_str().unwrap().split('.').count(),
        3,
        "JWT-shaped"
    );
    t.token_resp(json!({"client_id": t.s.client_id, "client_secret": "wrong", "grant_type": "client_credentials"}))
        .await.err(401, "unauthorized", Some("invalid_client"));
    t.token_resp(json!({"client_id": t.s.client_id})).await.err(
        400,
        "invalid_request",
        Some("missing_required_field"),
    );
    t.token_resp(json!({"client_id": t.s.client_id, "client_secret": t.s.client_secret, "grant_type": "password"}))
        .await.err(400, "invalid_request", Some("unsupported_grant_type"));
    t.send(Method::GET, "/clients", None, &[], None).await.err(
        401,
        "unauthorized",
        Some("missing_token"),
    );
    t.send(Method::GET, "/clients", None, &[], Some("a.b.c"))
        .await
        .err(401, "unauthorized", Some("invalid_token"));
    assert_eq!(t.api(Method::GET, "/clients", None, &[]).await.status, 200);
    // Expiry on the simulator clock.
    t.ctl(
        Method::POST,
        "/_sim/clock",
        Some(json!({"advanceSeconds": 3601})),
    )
    .await;
    t.api(Method::GET, "/clients", None, &[])
        .await
        .err(401, "unauthorized", Some("token_expired"));
    let fresh = t.new_token().await;
    assert_eq!(
        t.send(Method::GET, "/clients", None, &[], Some(&fresh))
            .await
            .status,
        200
    );
    // Revoking the secret: no new tokens, and tokens issued under it stop working.
    t.ctl(Method::POST, "/_sim/credentials/revoke", None).await;
    t.send(Method::GET, "/clients", None, &[], Some(&fresh))
        .await
        .err(401, "unauthorized", Some("credentials_revoked"));
    t.token_resp(json!({"client_id": t.s.client_id, "client_secret": t.s.client_secret, "grant_type": "client_credentials"}))
        .await.err(401, "unauthorized", Some("credentials_revoked"));
    t.ctl(Method::POST, "/_sim/credentials/restore", None).await;
    t.new_token().await;
    let state = t
        .ctl(Method::GET, "/_sim/state", None)
        .await
        .json
        .to_string();
    assert!(
        !state.contains(&t.s.client_secret) && !state.contains(&fresh),
        "no secrets in the state view"
    );
}

#[tokio::test]
async fn enterprises_create_idempotency_and_list() {
    let t = T::start().await;
    let e = t.api(Method::GET, "/enterprises", None, &[]).await;
    assert_eq!(e.json["items"][0]["id"], t.s.enterprise_id.to_string());
    let c = t.create("Acme", Some("k1")).await;
    assert_eq!(c.status, 201, "{}", c.json);
    assert_eq!(c.json["status"], "active");
    assert_eq!(c.json["resource"], "client");
    assert!(
        c.json["default_client_account"]
            .as_str()
            .unwrap()
            .starts_with("client-accounts/")
    );
    assert!(c.json["etag"].as_str().unwrap().starts_with("W/\""));
    assert_eq!(c.etag.as_deref(), c.json["etag"].as_str());
    let again = t.create("Acme", Some("k1")).await;
    assert_eq!((again.status, again.replayed), (201, true));
    assert_eq!(again.json["id"], c.json["id"]);
    t.create("Other", Some("k1")).await.err(
        409,
        "idempotency_conflict",
        Some("key_payload_mismatch"),
    );
    t.create("Acme", None)
        .await
        .err(409, "state_conflict", Some("external_id_taken"));
    let bad = [
        json!({"display_name": "X", "scope_ref": t.scope(), "extra": 1}),
        json!({"scope_ref": t.scope()}),
        json!({"display_name": "X"}),
        json!({"display_name": "X", "scope_ref": "enterprise/1"}),
        json!({"display_name": "X", "scope_ref": t.scope(), "metadata": {"a": 1}}),
    ];
    for b in bad {
        let r = t.api(Method::POST, "/clients", Some(b.clone()), &[]).await;
        assert_eq!(
            (r.status, r.json["code"].as_str()),
            (400, Some("invalid_request")),
            "{b}: {}",
            r.json
        );
    }
    t.api(Method::POST, "/clients", Some(json!({"display_name": "X", "scope_ref": format!("enterprises/{}", uuid::Uuid::new_v4())})), &[])
        .await.err(403, "forbidden_capability_scope", Some("scope_not_permitted"));
    for i in 0..4 {
        assert_eq!(t.create(&format!("C{i}"), None).await.status, 201);
    }
    let p1 = t.api(Method::GET, "/clients?page_size=2", None, &[]).await;
    assert_eq!(p1.json["items"].as_array().unwrap().len(), 2);
    let tok = p1.json["next_page_token"].as_str().unwrap().to_string();
    let p2 = t
        .api(
            Method::GET,
            &format!("/clients?page_size=2&page_token={tok}"),
            None,
            &[],
        )
        .await;
    let tok2 = p2.json["next_page_token"].as_str().unwrap().to_string();
    let p3 = t
        .api(
            Method::GET,
            &format!("/clients?page_size=2&page_token={tok2}"),
            None,
            &[],
        )
        .await;
    assert_eq!(p3.json["items"].as_array().unwrap().len(), 1);
    assert!(p3.json["next_page_token"].is_null());
    t.api(Method::GET, "/clients?page_token=zzz", None, &[])
        .await
        .err(400, "invalid_request", Some("invalid_page_token"));
    t.api(Method::GET, "/clients?page_size=101", None, &[])
        .await
        .err(400, "invalid_request", None);
    let by_ext = t
        .api(Method::GET, "/clients?external_id=ext-C2", None, &[])
        .await;
    assert_eq!(by_ext.json["items"][0]["display_name"], "C2");
    t.api(
        Method::GET,
        "/clients/00000000-0000-0000-0000-000000000000",
        None,
        &[],
    )
    .await
    .err(404, "resource_not_found", None);
    t.ctl(
        Method::PUT,
        "/_sim/capabilities",
        Some(json!({"clients": false})),
    )
    .await;
    t.api(Method::GET, "/clients", None, &[]).await.err(
        403,
        "forbidden_capability_scope",
        Some("missing_capability"),
    );
}

#[tokio::test]
async fn patch_if_match_and_lifecycle() {
    let t = T::start().await;
    let c = t.create("Acme", None).await;
    let id = c.json["id"].as_str().unwrap().to_string();
    let path = format!("/clients/{id}");
    let etag1 = c.json["etag"].as_str().unwrap().to_string();
    t.api(
        Method::PATCH,
        &path,
        Some(json!({"display_name": "Acme 2"})),
        &[],
    )
    .await
    .err(400, "invalid_request", Some("missing_if_match"));
    let p = t
        .api(
            Method::PATCH,
            &path,
            Some(json!({"display_name": "Acme 2", "metadata": {"tier": "silver"}})),
            &[("if-match", &etag1)],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.json);
    let etag2 = p.json["etag"].as_str().unwrap().to_string();
    assert_ne!(etag1, etag2, "a new ETag on every change");
    assert_eq!(p.json["metadata"], json!({"tier": "silver"}));
    t.api(
        Method::PATCH,
        &path,
        Some(json!({"display_name": "Stale"})),
        &[("if-match", &etag1)],
    )
    .await
    .err(412, "precondition_failed", None);
    t.api(
        Method::PATCH,
        &path,
        Some(json!({"status": "x"})),
        &[("if-match", &etag2)],
    )
    .await
    .err(400, "invalid_request", Some("unknown_field"));
    // Suspend: 201, reason kept, If-Match honoured, second suspend is a state conflict.
    let sus = format!("{path}/suspend");
    t.api(
        Method::POST,
        &sus,
        Some(json!({"reason": null})),
        &[("if-match", &etag1)],
    )
    .await
    .err(412, "precondition_failed", None);
    t.ctl(
        Method::PUT,
        &format!("/_sim/clients/{id}/hold"),
        Some(json!({"hold": true})),
    )
    .await;
    t.api(Method::POST, &sus, Some(json!({"reason": "r"})), &[])
        .await
        .err(422, "not_admissible", Some("pending_approvals"));
    t.ctl(
        Method::PUT,
        &format!("/_sim/clients/{id}/hold"),
        Some(json!({"hold": false})),
    )
    .await;
    let s = t
        .api(
            Method::POST,
            &sus,
            Some(json!({"reason": "fraud review"})),
            &[("if-match", &etag2), ("idempotency-key", "s1")],
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    assert_eq!(s.json["status"], "suspended");
    assert_ne!(s.json["etag"], etag2.as_str());
    let replay = t
        .api(
            Method::POST,
            &sus,
            Some(json!({"reason": "fraud review"})),
            &[("if-match", &etag2), ("idempotency-key", "s1")],
        )
        .await;
    assert_eq!((replay.status, replay.replayed), (201, true));
    t.api(Method::POST, &sus, Some(json!({"reason": "again"})), &[])
        .await
        .err(409, "state_conflict", Some("already_suspended"));
    let st = t.ctl(Method::GET, "/_sim/state", None).await;
    assert_eq!(st.json["clients"][0]["last_reason"], "fraud review");
    let r = t
        .api(
            Method::POST,
            &format!("{path}/reactivate"),
            Some(json!({"reason": "cleared"})),
            &[],
        )
        .await;
    assert_eq!((r.status, r.json["status"].as_str()), (201, Some("active")));
    t.api(
        Method::POST,
        &format!("{path}/reactivate"),
        Some(json!({"reason": "x"})),
        &[],
    )
    .await
    .err(409, "state_conflict", Some("not_suspended"));
}

#[tokio::test]
async fn faults_commit_then_lose_counters_and_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("yh.json");
    let cfg = YouHodlerConfig {
        kit: KitConfig {
            state_file: Some(path.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let t = T::with(cfg.clone()).await;
    let set = |f: Value| t.ctl(Method::PUT, "/_sim/faults", Some(f));
    // Commit-then-lose on create, then the retry with the same key replays the committed client.
    set(json!({"write": {"loseResponse": 1.0}, "loseResponseMode": "badGateway"})).await;
    t.create("Lost", Some("lost-1"))
        .await
        .err(502, "upstream_error", None);
    set(json!({})).await;
    let retry = t.create("Lost", Some("lost-1")).await;
    assert_eq!((retry.status, retry.replayed), (201, true));
    let all = t.api(Method::GET, "/clients", None, &[]).await;
    assert_eq!(
        all.json["items"].as_array().unwrap().len(),
        1,
        "exactly one client"
    );
    set(json!({"loseResponse": 1.0, "loseResponseMode": "drop"})).await;
    assert!(
        t.http
            .post(format!("{}/clients", t.s.base_url()))
            .bearer_auth(&t.token)
            .header("idempotency-key", "drop-1")
            .json(&json!({"display_name": "Drop", "scope_ref": t.scope()}))
            .send()
            .await
            .is_err()
    );
    set(json!({"rateLimit429": 1.0})).await;
    t.api(Method::GET, "/clients", None, &[])
        .await
        .err(429, "rate_limited", None);
    let r = t.api(Method::GET, "/clients", None, &[]).await;
    assert_eq!(r.json["details"]["retry_after_ms"], 1000);
    set(json!({"error5xx": 1.0})).await;
    let r = t.api(Method::GET, "/clients", None, &[]).await;
    let code = match r.status {
        500 => "internal_error",
        502 => "upstream_error",
        _ => "temporarily_unavailable",
    };
    r.err(r.status, code, None);
    set(json!({})).await;
    let c = t.ctl(Method::GET, "/_sim/counters", None).await.json;
    let count = |m: &str, route: &str, status: u64| -> u64 {
        c["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == m && r["route"] == route && r["status"] == status)
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(count("POST", "/clients", 502), 1);
    assert_eq!(count("POST", "/clients", 0), 1);
    assert_eq!(count("GET", "/clients", 429), 2);
    assert_eq!(count("POST", "/oauth/token", 200), 1);
    // State file: clients, credentials and idempotency keys survive a restart.
    let (id, secret) = (t.s.client_id.clone(), t.s.client_secret.clone());
    t.s.sim.shutdown().await;
    let t = T::with(cfg).await;
    assert_eq!(
        (t.s.client_id.clone(), t.s.client_secret.clone()),
        (id, secret)
    );
    let all = t.api(Method::GET, "/clients", None, &[]).await;
    assert_eq!(
        all.json["items"].as_array().unwrap().len(),
        2,
        "the dropped create was committed too"
    );
    let again = t.create("Lost", Some("lost-1")).await;
    assert!(again.replayed, "idempotency keys persist");
}

// ---------- assumption switches (issue #28) ----------

async fn switched(assumptions: youhodler_sim::Assumptions) -> T {
    T::with(YouHodlerConfig {
        assumptions,
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn async_lifecycle_answers_201_with_the_old_status_and_applies_later() {
    let t = switched(youhodler_sim::Assumptions {
        lifecycle: "async:30".parse().unwrap(),
        ..Default::default()
    })
    .await;
    let c = t.create("Async", Some("k1")).await;
    let id = c.json["id"].as_str().unwrap();
    let etag = c.etag.clone().unwrap();
    let r = t
        .api(
            Method::POST,
            &format!("/clients/{id}/suspend"),
            Some(json!({"reason": null})),
            &[("if-match", &etag), ("idempotency-key", "s1")],
        )
        .await;
    assert_eq!((r.status, r.json["status"].clone()), (201, json!("active")));
    assert_eq!(
        r.etag.as_deref(),
        Some(etag.as_str()),
        "nothing changed yet"
    );
    let g = t
        .api(Method::GET, &format!("/clients/{id}"), None, &[])
        .await;
    assert_eq!(g.json["status"], "active");
    t.ctl(
        Method::POST,
        "/_sim/clock",
        Some(json!({"advanceSeconds": 31})),
    )
    .await;
    let g = t
        .api(Method::GET, &format!("/clients/{id}"), None, &[])
        .await;
    assert_eq!(g.json["status"], "suspended");
    assert_ne!(g.etag.as_deref(), Some(etag.as_str()));
    let state = t.ctl(Method::GET, "/_sim/state", None).await;
    assert_eq!(state.json["clients"][0]["transitions_accepted"], 1);
    // Runtime switch back to sync, and a bad value refused.
    let r = t
        .ctl(
            Method::PATCH,
            "/_sim/assumptions",
            Some(json!({"lifecycle": "sync"})),
        )
        .await;
    assert_eq!(r.json["lifecycle"], "sync");
    let r = t
        .ctl(
            Method::PATCH,
            "/_sim/assumptions",
            Some(json!({"lifecycle": "later"})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.json);
}

#[tokio::test]
async fn page_token_spelling_page_size_and_unknown_query_parameters() {
    let t = switched(youhodler_sim::Assumptions {
        page_token_param: Some("pageToken".into()),
        max_page_size: 2,
        ..Default::default()
    })
    .await;
    for n in ["a", "b", "c"] {
        assert_eq!(t.create(n, None).await.status, 201);
    }
    t.api(Method::GET, "/clients?page_size=3", None, &[])
        .await
        .err(400, "invalid_request", Some("invalid_field"));
    let p1 = t.api(Method::GET, "/clients", None, &[]).await;
    assert_eq!(
        p1.json["items"].as_array().unwrap().len(),
        2,
        "default 20, capped at 2"
    );
    let next = p1.json["next_page_token"].as_str().unwrap().to_string();
    // The usual spelling is ignored: page 1 again.
    let again = t
        .api(
            Method::GET,
            &format!("/clients?page_token={next}"),
            None,
            &[],
        )
        .await;
    assert_eq!(again.json["items"][0]["id"], p1.json["items"][0]["id"]);
    let p2 = t
        .api(
            Method::GET,
            &format!("/clients?pageToken={next}"),
            None,
            &[],
        )
        .await;
    assert_eq!(p2.json["items"].as_array().unwrap().len(), 1);
    assert!(p2.json["next_page_token"].is_null());
    // Strict about unknown parameters: 400 instead of page 1.
    t.ctl(
        Method::PATCH,
        "/_sim/assumptions",
        Some(json!({"unknownQuery": "reject"})),
    )
    .await;
    t.api(
        Method::GET,
        &format!("/clients?page_token={next}"),
        None,
        &[],
    )
    .await
    .err(400, "invalid_request", Some("unknown_query_parameter"));
}

#[tokio::test]
async fn merge_patch_metadata_removes_only_null_keys_and_state_conflicts_can_be_422() {
    let t = switched(youhodler_sim::Assumptions {
        patch_metadata: youhodler_sim::PatchMetadata::Merge,
        state_conflict: youhodler_sim::StateConflict::NotAdmissible,
        unique_external_id: false,
        ..Default::default()
    })
    .await;
    let c = t.create("Merge", None).await;
    let id = c.json["id"].as_str().unwrap();
    let r = t
        .api(
            Method::PATCH,
            &format!("/clients/{id}"),
            Some(json!({"metadata": {"plan": "x"}})),
            &[("if-match", c.etag.as_deref().unwrap())],
        )
        .await;
    assert_eq!(
        r.json["metadata"],
        json!({"tier": "gold", "plan": "x"}),
        "merged"
    );
    let r = t
        .api(
            Method::PATCH,
            &format!("/clients/{id}"),
            Some(json!({"metadata": {"tier": null}})),
            &[("if-match", r.etag.as_deref().unwrap())],
        )
        .await;
    assert_eq!(
        r.json["metadata"],
        json!({"plan": "x"}),
        "null removes a key"
    );
    t.api(
        Method::POST,
        &format!("/clients/{id}/reactivate"),
        Some(json!({"reason": null})),
        &[],
    )
    .await
    .err(422, "not_admissible", Some("not_suspended"));
    assert_eq!(
        t.create("Merge", None).await.status,
        201,
        "external_id may repeat"
    );
}
