//! gennia-sim over real HTTP: every documented rule and error, the control API, faults,
//! counters and the state file.
use gennia_sim::{GenniaConfig, Started};
use reqwest::Method;
use serde_json::{Value, json};
use sim_kit::KitConfig;

struct T {
    s: Started,
    http: reqwest::Client,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

impl Resp {
    #[track_caller]
    fn assert_status(&self, status: u16) {
        assert_eq!(self.status, status, "{}", self.json);
    }
    fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }
    #[track_caller]
    fn err(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "{}", self.json);
        assert!(self.json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

impl T {
    async fn start() -> T {
        T::with(GenniaConfig::default()).await
    }
    async fn with(cfg: GenniaConfig) -> T {
        T {
            s: gennia_sim::spawn(cfg).await.expect("spawn"),
            http: reqwest::Client::new(),
        }
    }
    async fn send(&self, m: Method, path: &str, key: Option<&str>, body: Option<Value>) -> Resp {
        let url = if path.starts_with("/_sim") {
            format!("{}{path}", self.s.base_url())
        } else {
            format!("{}{path}", self.s.api_url())
        };
        let mut r = self.http.request(m, url);
        if let Some(k) = key {
            r = r.header("X-Api-Key", k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("send");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Resp {
            status,
            headers,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }
    async fn api(&self, m: Method, path: &str, body: Option<Value>) -> Resp {
        let key = self.s.api_key.clone();
        self.send(m, path, Some(&key), body).await
    }
    async fn ctl(&self, m: Method, path: &str, body: Option<Value>) -> Resp {
        self.send(m, path, None, body).await
    }
    async fn plan(&self, body: Value) -> String {
        let r = self.ctl(Method::POST, "/_sim/plans", Some(body)).await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.json["publicId"].as_str().unwrap().to_string()
    }
    async fn create(&self, body: Value) -> Resp {
        self.api(Method::POST, "/clients", Some(body)).await
    }
    /// An active client with an admin and a member.
    async fn active_client(&self, name: &str) -> Value {
        let plan = self
            .plan(json!({"name": format!("Plan {name}"), "creditsIncluded": 100}))
            .await;
        let r = self
            .create(json!({
                "workspaceName": name,
                "planPublicId": plan,
                "sendInvitations": true,
                "users": [
                    {"email": "ada@x.test", "name": "Ada", "role": "admin"},
                    {"email": "bob@x.test", "name": "Bob", "role": "member"}
                ]
            }))
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        r.json
    }
}

fn users(role_admin_only: bool) -> Value {
    if role_admin_only {
        json!([{"email": "a@x.test", "role": "admin"}])
    } else {
        json!([{"email": "a@x.test", "name": "A", "role": "member"}])
    }
}

#[tokio::test]
async fn auth_errors_and_health() {
    let t = T::start().await;
    t.send(Method::GET, "/clients", None, None)
        .await
        .err(401, "MISSING_API_KEY");
    t.send(Method::GET, "/clients", Some("not-a-key"), None)
        .await
        .err(401, "INVALID_API_KEY_FORMAT");
    t.send(Method::GET, "/clients", Some("gsk_wrongwrongwrong"), None)
        .await
        .err(401, "INVALID_API_KEY");
    t.send(Method::GET, "/health", None, None)
        .await
        .err(401, "MISSING_API_KEY");
    let h = t.api(Method::GET, "/health", None).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json["status"], "ok");
    assert!(h.json["workspacePublicId"].is_string() && h.json["apiKeyPublicId"].is_string());
    // Authorization: Bearer works too.
    let r = t
        .http
        .get(format!("{}/clients", t.s.api_url()))
        .bearer_auth(&t.s.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        gennia_sim::spawn(GenniaConfig {
            api_key: Some("plainkey".into()),
            ..Default::default()
        })
        .await
        .is_err()
    );
}

#[tokio::test]
async fn create_statuses_plans_and_validation() {
    let t = T::start().await;
    let plan = t
        .plan(
            json!({"name": "Pro", "priceCents": 4990, "creditsIncluded": 700, "seatsIncluded": 3}),
        )
        .await;
    let c = t
        .create(json!({"workspaceName": "Acme", "planPublicId": plan, "users": users(true)}))
        .await;
    assert_eq!(c.status, 201, "{}", c.json);
    assert_eq!(c.json["subscriptionStatus"], "active");
    assert_eq!(c.json["plan"]["publicId"], plan.as_str());
    assert_eq!(c.json["creditsBalance"], 700);
    assert_eq!(c.json["seatsLimit"], 3);
    assert_eq!(c.json["usersCount"], 1);
    assert!(c.json["currentPeriodEnd"].is_string());
    assert_eq!(c.json["pendingInvitations"], json!([]));

    // Duplicate workspace name, case-insensitive and trimmed.
    t.create(json!({"workspaceName": " acme ", "users": users(true)}))
        .await
        .err(400, "WORKSPACE_NAME_TAKEN");
    // No plan: pending onboarding; credits override.
    let c2 = t
        .create(json!({"workspaceName": "NoPlan", "users": users(true), "creditsOverride": 5}))
        .await;
    assert_eq!(c2.json["subscriptionStatus"], "pending_onboarding");
    assert_eq!(c2.json["creditsBalance"], 5);
    assert!(
        c2.json.get("plan").is_none(),
        "absent values are omitted, never null"
    );
    // Trial needs a trial plan.
    t.create(json!({"workspaceName": "Tr", "users": users(true), "inviteToTrial": true}))
        .await
        .err(400, "TRIAL_NOT_ENABLED");
    t.plan(json!({"name": "Trial", "trial": true})).await;
    let tr = t
        .create(json!({"workspaceName": "Tr", "users": users(true), "inviteToTrial": true, "planPublicId": plan}))
        .await;
    assert_eq!(tr.json["subscriptionStatus"], "trialing");
    assert_eq!(tr.json["plan"]["name"], "Trial");

    let bad = [
        json!({"workspaceName": "X", "users": users(true), "extra": 1}),
        json!({"workspaceName": "X", "users": [{"email": "a@x.test", "role": "admin", "phone": "1"}]}),
        json!({"workspaceName": "X", "users": [{"email": "a@x.test", "name": "A"}]}),
        json!({"workspaceName": "X", "users": users(false)}),
        json!({"workspaceName": "X", "users": []}),
        json!({"workspaceName": "X"}),
        json!({"workspaceName": "", "users": users(true)}),
        json!({"workspaceName": "x".repeat(151), "users": users(true)}),
        json!({"workspaceName": "X", "users": [{"email": "nope", "role": "admin"}]}),
        json!({"workspaceName": "X", "users": [{"email": "a@x.test", "role": "owner"}]}),
        json!({"workspaceName": "X", "users": users(true), "planPublicId": "nope"}),
        json!({"workspaceName": "X", "users": users(true), "creditsOverride": 1.5}),
        json!({"workspaceName": "X", "users": users(true), "periodEndOverride": "2001-01-01T00:00:00Z"}),
        json!({"workspaceName": null, "users": users(true)}),
        json!([1, 2]),
    ];
    for b in bad {
        let r = t.create(b.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "VALIDATION_ERROR"),
            "{b} -> {}",
            r.json
        );
    }
    t.create(json!({"workspaceName": "X", "users": users(true), "planPublicId": "9c3a4d22-1a8d-4b3f-9b1e-7a0f0c4f3e21"}))
        .await
        .err(400, "PLAN_NOT_FOUND");
    // Malformed JSON and a non-JSON content type.
    let r = t
        .http
        .post(format!("{}/clients", t.s.api_url()))
        .header("X-Api-Key", &t.s.api_key)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = t
        .http
        .post(format!("{}/clients", t.s.api_url()))
        .header("X-Api-Key", &t.s.api_key)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn list_pagination_filters_and_get() {
    let t = T::start().await;
    for i in 0..5 {
        let r = t
            .create(json!({"workspaceName": format!("Co {i}"), "users": [{"email": format!("u{i}@x.test"), "name": format!("User{i}"), "role": "admin"}]}))
            .await;
        assert_eq!(r.status, 201);
    }
    let p = t.api(Method::GET, "/clients?page=2&limit=2", None).await;
    assert_eq!(p.status, 200);
    assert_eq!(
        (p.json["total"].as_i64(), p.json["totalPages"].as_i64()),
        (Some(5), Some(3))
    );
    let names: Vec<&str> = p.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["workspaceName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Co 2", "Co 1"], "newest first");
    let q = t.api(Method::GET, "/clients?q=user3", None).await;
    assert_eq!(q.json["total"], 1);
    let q = t.api(Method::GET, "/clients?q=U4%40X.TEST", None).await;
    assert_eq!(q.json["items"][0]["workspaceName"], "Co 4");
    let s = t
        .api(Method::GET, "/clients?status=pending_onboarding", None)
        .await;
    assert_eq!(s.json["total"], 5);
    let s = t.api(Method::GET, "/clients?status=active", None).await;
    assert_eq!(s.json["total"], 0);
    for bad in ["limit=101", "limit=0", "page=0", "page=x", "status=gone"] {
        t.api(Method::GET, &format!("/clients?{bad}"), None)
            .await
            .err(400, "VALIDATION_ERROR");
    }
    let id = q.json["items"][0]["publicId"].as_str().unwrap().to_string();
    let g = t.api(Method::GET, &format!("/clients/{id}"), None).await;
    assert_eq!(g.json["workspaceName"], "Co 4");
    t.api(
        Method::GET,
        "/clients/9c3a4d22-1a8d-4b3f-9b1e-7a0f0c4f3e21",
        None,
    )
    .await
    .err(404, "CLIENT_NOT_FOUND");
    t.api(Method::GET, "/clients/not-a-uuid", None)
        .await
        .err(404, "CLIENT_NOT_FOUND");
    let r = t.api(Method::PUT, "/clients", None).await;
    assert_eq!(r.status, 405);
    assert!(r.headers.get("allow").is_some());
}

#[tokio::test]
async fn suspend_reactivate_state_rules() {
    let t = T::start().await;
    let c = t.active_client("Acme").await;
    let id = c["publicId"].as_str().unwrap();
    let sus = format!("/clients/{id}/suspend");
    let rea = format!("/clients/{id}/reactivate");
    t.api(Method::POST, &rea, None)
        .await
        .err(400, "CLIENT_NOT_SUSPENDED");
    t.api(
        Method::POST,
        &sus,
        Some(json!({"cancellationReason": "bogus"})),
    )
    .await
    .err(400, "VALIDATION_ERROR");
    t.api(Method::POST, &sus, Some(json!({"reason": "x".repeat(501)})))
        .await
        .err(400, "VALIDATION_ERROR");
    t.api(Method::POST, &sus, Some(json!({"why": "x"})))
        .await
        .err(400, "VALIDATION_ERROR");
    let s = t
        .api(
            Method::POST,
            &sus,
            Some(json!({"reason": "refund review", "cancellationReason": "customer_request"})),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.json);
    assert_eq!(s.json["subscriptionStatus"], "suspended");
    t.api(Method::POST, &sus, None)
        .await
        .err(400, "CLIENT_NOT_SUSPENDABLE");
    let state = t.ctl(Method::GET, "/_sim/state", None).await;
    assert_eq!(state.json["clients"][0]["suspendReason"], "refund review");
    assert_eq!(
        state.json["clients"][0]["cancellationReason"],
        "customer_request"
    );
    assert!(
        !state.json.to_string().contains(&t.s.api_key),
        "state view never shows the key"
    );
    t.api(Method::POST, &rea, Some(json!({"reason": "x"})))
        .await
        .err(400, "VALIDATION_ERROR");
    let r = t.api(Method::POST, &rea, None).await;
    assert_eq!(r.json["subscriptionStatus"], "active");
    // Billing states set through /_sim/: past_due and canceled cannot be suspended.
    for st in ["past_due", "canceled", "trialing"] {
        let r = t
            .ctl(
                Method::PUT,
                &format!("/_sim/clients/{id}/status"),
                Some(json!({"status": st})),
            )
            .await;
        assert_eq!(r.json["subscriptionStatus"], st);
        t.api(Method::POST, &sus, None)
            .await
            .err(400, "CLIENT_NOT_SUSPENDABLE");
        t.api(Method::POST, &rea, None)
            .await
            .err(400, "CLIENT_NOT_SUSPENDED");
    }
    let r = t
        .ctl(
            Method::PUT,
            &format!("/_sim/clients/{id}/status"),
            Some(json!({"status": "gone"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("status")
    );
    t.api(
        Method::POST,
        "/clients/9c3a4d22-1a8d-4b3f-9b1e-7a0f0c4f3e21/suspend",
        None,
    )
    .await
    .err(404, "CLIENT_NOT_FOUND");
}

#[tokio::test]
async fn users_last_admin_and_invitations() {
    let t = T::start().await;
    let c = t.active_client("Acme").await;
    let id = c["publicId"].as_str().unwrap();
    let ada = c["users"][0]["publicId"].as_str().unwrap();
    let bob = c["users"][1]["publicId"].as_str().unwrap();
    let user = |u: &str| format!("/clients/{id}/users/{u}");
    t.api(Method::PATCH, &user(ada), Some(json!({"role": "member"})))
        .await
        .err(400, "LAST_ADMIN");
    t.api(Method::DELETE, &user(ada), None)
        .await
        .err(400, "LAST_ADMIN");
    t.api(Method::PATCH, &user(bob), Some(json!({"name": "Bobby"})))
        .await
        .err(400, "VALIDATION_ERROR");
    t.api(
        Method::PATCH,
        &user(bob),
        Some(json!({"role": "admin", "email": "x@y"})),
    )
    .await
    .err(400, "VALIDATION_ERROR");
    let r = t
        .api(
            Method::PATCH,
            &user(bob),
            Some(json!({"role": "admin", "name": "Bobby"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["users"][1]["role"], "admin");
    assert_eq!(r.json["users"][1]["name"], "Bobby");
    // Now Ada may be demoted and then removed.
    let r = t
        .api(Method::PATCH, &user(ada), Some(json!({"role": "viewer"})))
        .await;
    assert_eq!(r.json["users"][0]["role"], "viewer");
    let r = t.api(Method::DELETE, &user(ada), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["usersCount"], 1);
    assert_eq!(
        r.json["pendingInvitations"].as_array().unwrap().len(),
        1,
        "the removed user's invitation is gone"
    );
    t.api(Method::DELETE, &user(ada), None)
        .await
        .err(404, "USER_NOT_FOUND");
    t.api(Method::PATCH, &user("nope"), Some(json!({"role": "admin"})))
        .await
        .err(404, "USER_NOT_FOUND");
    t.api(Method::DELETE, &user(bob), None)
        .await
        .err(400, "LAST_ADMIN");

    // Resend renews the expiry; an expired invitation says so.
    let inv = r.json["pendingInvitations"][0].clone();
    let inv_id = inv["publicId"].as_str().unwrap();
    let adv = t
        .ctl(
            Method::POST,
            "/_sim/clock",
            Some(json!({"advanceSeconds": 8 * 86400})),
        )
        .await;
    assert_eq!(adv.json["offsetSeconds"], 8 * 86400);
    let g = t.api(Method::GET, &format!("/clients/{id}"), None).await;
    assert_eq!(g.json["pendingInvitations"][0]["isExpired"], true);
    let re = t
        .api(
            Method::POST,
            &format!("/clients/{id}/invitations/{inv_id}/resend"),
            None,
        )
        .await;
    assert_eq!(re.status, 200);
    assert_eq!(re.json["isExpired"], false);
    assert!(re.json["expiresAt"].as_str().unwrap() > inv["expiresAt"].as_str().unwrap());
    t.api(
        Method::POST,
        &format!("/clients/{id}/invitations/{ada}/resend"),
        None,
    )
    .await
    .err(404, "INVITATION_NOT_FOUND");
    let bad = t
        .ctl(Method::POST, "/_sim/clock", Some(json!({"advance": 1})))
        .await;
    assert_eq!(bad.status, 422);
}

#[tokio::test]
async fn control_plans_validation_and_reset() {
    let t = T::start().await;
    let r = t
        .ctl(Method::POST, "/_sim/plans", Some(json!({"priceCents": 1})))
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("name"),
        "{}",
        r.json
    );
    let r = t
        .ctl(
            Method::POST,
            "/_sim/plans",
            Some(json!({"name": "Pro", "bogus": 1})),
        )
        .await;
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bogus")
    );
    let r = t
        .ctl(
            Method::POST,
            "/_sim/plans",
            Some(json!({"name": "Pro", "billingType": "weekly"})),
        )
        .await;
    assert_eq!(r.status, 422);
    t.active_client("Acme").await;
    let r = t.ctl(Method::POST, "/_sim/reset", None).await;
    assert_eq!(r.status, 200);
    let l = t.api(Method::GET, "/clients", None).await;
    assert_eq!(l.json["total"], 0);
    assert_eq!(
        t.ctl(Method::GET, "/_sim/plans", None).await.json["plans"],
        json!([])
    );
    let r = t.ctl(Method::GET, "/_sim/nope", None).await;
    assert_eq!(r.status, 404);
    // Without --control, /_sim/ does not exist.
    let t2 = T::with(GenniaConfig {
        kit: KitConfig {
            control: false,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    assert_eq!(t2.ctl(Method::GET, "/_sim/state", None).await.status, 404);
}

#[tokio::test]
async fn faults_commit_then_lose_and_counters() {
    let t = T::start().await;
    let set = |f: Value| t.ctl(Method::PUT, "/_sim/faults", Some(f));
    let r = set(json!({"write": {"error5xx": 2.0}})).await;
    assert_eq!(r.status, 422);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("write.error5xx")
    );

    // Commit-then-lose on create: a 502, yet the client exists exactly once; the retry
    // (no idempotency at Gennia) is a duplicate name.
    set(json!({"loseResponse": 1.0, "loseResponseMode": "badGateway"})).await;
    let body = json!({"workspaceName": "Lost", "users": users(true)});
    t.create(body.clone()).await.err(502, "BAD_GATEWAY");
    set(json!({})).await;
    let l = t.api(Method::GET, "/clients?q=Lost", None).await;
    assert_eq!(l.json["total"], 1);
    t.create(body).await.err(400, "WORKSPACE_NAME_TAKEN");

    // Dropped connection after the commit.
    set(json!({"loseResponse": 1.0, "loseResponseMode": "drop"})).await;
    let dropped = t
        .http
        .post(format!("{}/clients", t.s.api_url()))
        .header("X-Api-Key", &t.s.api_key)
        .json(&json!({"workspaceName": "Dropped", "users": users(true)}))
        .send()
        .await;
    assert!(dropped.is_err(), "connection closed without a response");
    set(json!({})).await;
    assert_eq!(
        t.api(Method::GET, "/clients?q=Dropped", None).await.json["total"],
        1
    );

    // Before execution: 5xx, 429 with Retry-After, reset; nothing is created.
    set(json!({"write": {"error5xx": 1.0}})).await;
    let five = t
        .create(json!({"workspaceName": "Five", "users": users(true)}))
        .await;
    assert!([500, 502, 503].contains(&five.status));
    assert_eq!(
        t.api(Method::GET, "/clients", None).await.status,
        200,
        "reads unaffected by write override"
    );
    set(json!({"rateLimit429": 1.0})).await;
    let r = t.api(Method::GET, "/clients", None).await;
    r.err(429, "RATE_LIMITED");
    assert_eq!(r.headers.get("retry-after").unwrap(), "1");
    set(json!({"reset": 1.0})).await;
    assert!(
        t.http
            .get(format!("{}/clients", t.s.api_url()))
            .send()
            .await
            .is_err()
    );
    set(json!({})).await;
    assert_eq!(
        t.api(Method::GET, "/clients?q=Five", None).await.json["total"],
        0
    );

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
    assert_eq!(
        count("POST", "/public/api/v1/clients", 502),
        1 + u64::from(five.status == 502),
        "the lost response and, when the injected 5xx was a 502, that one"
    );
    assert_eq!(
        count("POST", "/public/api/v1/clients", 500) + count("POST", "/public/api/v1/clients", 503),
        u64::from(five.status != 502)
    );
    assert_eq!(count("POST", "/public/api/v1/clients", 0), 1);
    assert_eq!(count("GET", "/public/api/v1/clients", 0), 1);
    assert_eq!(count("GET", "/public/api/v1/clients", 429), 1);
    assert!(c["faultsInjected"].as_u64().unwrap() >= 5);
    assert_eq!(
        t.s.sim
            .sim
            .counters
            .total(&http::Method::POST, "/public/api/v1/clients"),
        4
    );
}

#[tokio::test]
async fn state_file_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gennia.json");
    let cfg = GenniaConfig {
        kit: KitConfig {
            state_file: Some(path.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let t = T::with(cfg.clone()).await;
    let c = t.active_client("Persisted").await;
    let key = t.s.api_key.clone();
    t.s.sim.shutdown().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let t = T::with(cfg).await;
    assert_eq!(t.s.api_key, key, "the key survives a restart");
    let g = t
        .api(
            Method::GET,
            &format!("/clients/{}", c["publicId"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json["workspaceName"], "Persisted");
    assert_eq!(
        t.ctl(Method::GET, "/_sim/plans", None).await.json["plans"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    std::fs::write(&path, "{broken").unwrap();
    let err = gennia_sim::spawn(GenniaConfig {
        kit: KitConfig {
            state_file: Some(path),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .err()
    .expect("a broken state file is refused");
    assert!(err.to_string().contains("not valid"), "{err}");
}

// ---------- assumption switches (issue #28) ----------

async fn switched(assumptions: gennia_sim::Assumptions) -> T {
    T::with(GenniaConfig {
        assumptions,
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn error_dialects_change_only_the_shape_of_business_errors() {
    use gennia_sim::{Assumptions, ErrorDialect};
    let t = switched(Assumptions {
        error_dialect: ErrorDialect::Validation,
        ..Default::default()
    })
    .await;
    let c = t.active_client("Dialect").await;
    let id = c["publicId"].as_str().unwrap();
    let dup = t
        .create(json!({"workspaceName": "Dialect", "users": users(true)}))
        .await;
    dup.err(400, "VALIDATION_ERROR");
    assert!(
        dup.json["message"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    t.api(Method::POST, &format!("/clients/{id}/reactivate"), None)
        .await
        .err(400, "VALIDATION_ERROR");
    // The documented 401 codes keep their shape.
    t.send(Method::GET, "/clients", None, None)
        .await
        .err(401, "MISSING_API_KEY");
    // Switched at run time to Spring Boot's default error body.
    let r = t
        .ctl(
            Method::PATCH,
            "/_sim/assumptions",
            Some(json!({"errorDialect": "spring"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["errorDialect"].clone()),
        (200, json!("spring"))
    );
    let r = t
        .api(Method::POST, &format!("/clients/{id}/reactivate"), None)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json.get("code").is_none(), "{}", r.json);
    assert_eq!(r.json["status"], 400);
    assert_eq!(r.json["error"], "Bad Request");
    assert_eq!(
        r.json["path"],
        format!("/public/api/v1/clients/{id}/reactivate")
    );
    assert!(r.json["timestamp"].is_string() && r.json["message"].is_string());
    t.ctl(
        Method::PATCH,
        "/_sim/assumptions",
        Some(json!({"bogus": true})),
    )
    .await
    .assert_status(422);
}

#[tokio::test]
async fn nulls_mode_writes_every_property() {
    let t = switched(gennia_sim::Assumptions {
        nulls: true,
        ..Default::default()
    })
    .await;
    let c = t.active_client("Nulls").await;
    assert!(
        c["pendingPlan"].is_null() && c.get("pendingPlan").is_some(),
        "{c}"
    );
    assert!(c["users"][0]["lastSeenAt"].is_null() && c["users"][0].get("lastSeenAt").is_some());
    let bare = t
        .create(json!({"workspaceName": "No plan", "users": users(true)}))
        .await;
    assert_eq!(bare.status, 201);
    for f in [
        "plan",
        "pendingInvitations",
        "currentPeriodEnd",
        "subscriptionStatus",
    ] {
        assert!(
            bare.json.get(f).is_some_and(Value::is_null),
            "{f}: {}",
            bare.json
        );
    }
    let list = t.api(Method::GET, "/clients", None).await;
    let row = list.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workspaceName"] == "No plan")
        .unwrap()
        .clone();
    assert!(row.get("planName").is_some_and(Value::is_null), "{row}");
}

#[tokio::test]
async fn pending_onboarding_blocks_suspend_until_a_user_onboards() {
    let t = switched(gennia_sim::Assumptions {
        initial_status: gennia_sim::InitialStatus::PendingOnboarding,
        ..Default::default()
    })
    .await;
    let c = t.active_client("Onboarding").await;
    assert_eq!(c["subscriptionStatus"], "pending_onboarding");
    let id = c["publicId"].as_str().unwrap();
    t.api(Method::POST, &format!("/clients/{id}/suspend"), None)
        .await
        .err(400, "CLIENT_NOT_SUSPENDABLE");
    let r = t
        .ctl(Method::POST, &format!("/_sim/clients/{id}/onboard"), None)
        .await;
    assert_eq!(r.json["subscriptionStatus"], "active");
    assert_eq!(r.json["users"][0]["completedOnboarding"], true);
    let r = t
        .api(Method::POST, &format!("/clients/{id}/suspend"), None)
        .await;
    assert_eq!(r.json["subscriptionStatus"], "suspended");
}

#[tokio::test]
async fn unique_login_emails_and_seat_limits() {
    let t = switched(gennia_sim::Assumptions {
        unique_login_email: true,
        seats: Some(2),
        ..Default::default()
    })
    .await;
    let c = t.active_client("First").await;
    assert_eq!(c["seatsLimit"], 2);
    let again = t
        .create(json!({"workspaceName": "Second",
                       "users": [{"email": "ADA@x.test", "role": "admin"}]}))
        .await;
    again.err(400, "EMAIL_TAKEN");
    let crowd = t
        .create(json!({"workspaceName": "Crowd", "users": [
            {"email": "1@y.test", "role": "admin"}, {"email": "2@y.test", "role": "admin"},
            {"email": "3@y.test", "role": "admin"}]}))
        .await;
    crowd.err(400, "SEAT_LIMIT");
}

#[tokio::test]
async fn a_stricter_key_format_and_the_billing_plans_list() {
    let strict = gennia_sim::Assumptions {
        api_key_min_chars: 10,
        ..Default::default()
    };
    assert!(
        gennia_sim::spawn(GenniaConfig {
            api_key: Some("gsk_123456789".into()),
            assumptions: strict.clone(),
            ..Default::default()
        })
        .await
        .is_err(),
        "9 characters after gsk_ are too few for Gennia's CLI rule"
    );
    let t = switched(strict).await;
    t.send(Method::GET, "/clients", Some("gsk_123456789"), None)
        .await
        .err(401, "INVALID_API_KEY_FORMAT");
    let c = t.active_client("Planned").await;
    let plans = t.api(Method::GET, "/billing/plans", None).await;
    assert_eq!(plans.status, 200, "{}", plans.json);
    assert_eq!(plans.json["total"], 1);
    let p = &plans.json["items"][0];
    assert_eq!(p["publicId"], c["plan"]["publicId"]);
    assert_eq!(p["activeSubscriptions"], 1);
    let one = t
        .api(
            Method::GET,
            &format!("/billing/plans/{}", p["publicId"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(one.json["name"], p["name"]);
}

#[tokio::test]
async fn relaxed_rules_accept_whatever_the_schema_allows() {
    let t = switched(gennia_sim::Assumptions {
        business_rules: gennia_sim::BusinessRules::Relaxed,
        ..Default::default()
    })
    .await;
    let body = json!({"workspaceName": "Same", "users": users(true),
                      "planPublicId": "00000000-0000-4000-8000-000000000000", "inviteToTrial": true});
    let a = t.create(body.clone()).await;
    let b = t.create(body).await;
    assert_eq!((a.status, b.status), (201, 201), "{} {}", a.json, b.json);
    let id = a.json["publicId"].as_str().unwrap();
    let r = t
        .api(Method::POST, &format!("/clients/{id}/reactivate"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let admin = a.json["users"][0]["publicId"].as_str().unwrap();
    let r = t
        .api(
            Method::DELETE,
            &format!("/clients/{id}/users/{admin}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    // The schema requires only a user's role.
    let r = t
        .create(
            json!({"workspaceName": "Roles only", "users": [{"role": "viewer"}],
                       "creditsOverride": -5}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
}

#[tokio::test]
async fn an_integer_written_with_a_zero_fraction_is_an_integer() {
    let t = T::start().await;
    let r = t
        .create(json!({"workspaceName": "Float", "users": users(true), "creditsOverride": 5000.0}))
        .await;
    assert_eq!(
        (r.status, r.json["creditsBalance"].clone()),
        (201, json!(5000)),
        "{}",
        r.json
    );
    t.create(json!({"workspaceName": "Half", "users": users(true), "creditsOverride": 1.5}))
        .await
        .err(400, "VALIDATION_ERROR");
}
