//! Shared helpers: start the simulator in-process and talk to it over real HTTP.
#![allow(dead_code)]

use layers_sim::{RunningSim, SimConfig, Tier};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

pub struct Sim {
    pub sim: RunningSim,
    pub http: reqwest::Client,
    pub key: String,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts an error response with the documented envelope.
    /// Length of a list response's `items`.
    pub fn item_count(&self) -> usize {
        self.json["items"].as_array().expect("items").len()
    }

    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(self.code(), code, "body: {}", self.text);
        let rid = self.json["error"]["requestId"].as_str().unwrap_or("");
        assert!(rid.starts_with("req_"), "requestId missing: {}", self.text);
        assert!(
            self.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(self.header("x-request-id").is_some());
    }
}

pub fn cfg() -> SimConfig {
    SimConfig {
        tier: Tier::Unlimited,
        control: true,
        ..SimConfig::default()
    }
}

impl Sim {
    pub async fn start() -> Sim {
        Sim::with(cfg()).await
    }

    pub async fn with(cfg: SimConfig) -> Sim {
        let sim = layers_sim::spawn(cfg).await.expect("spawn sim");
        let key = sim.parent_key.clone();
        Sim {
            sim,
            http: reqwest::Client::new(),
            key,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.sim.base_url(), path)
    }

    /// A request authenticated with the parent key.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.key)
    }

    pub fn req_as(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(key)
    }

    pub async fn get(&self, path: &str) -> Resp {
        send(self.req(Method::GET, path)).await
    }

    /// A JSON write with a fresh Idempotency-Key, as seed 002 does.
    pub async fn write(&self, method: Method, path: &str, body: Value) -> Resp {
        send(
            self.req(method, path)
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .json(&body),
        )
        .await
    }

    pub async fn create_org(&self, name: &str) -> String {
        let r = self
            .write(
                Method::POST,
                "/v1/organizations",
                serde_json::json!({ "name": name }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json["id"].as_str().expect("id").to_string()
    }

    /// Mints a `content:read` key named `k` in `org` with the parent key.
    pub async fn mint_read_key(&self, org: &str) -> Resp {
        self.write(
            Method::POST,
            &format!("/v1/organizations/{org}/api-keys"),
            serde_json::json!({ "name": "k", "scopes": ["content:read"] }),
        )
        .await
    }

    /// A `/_sim/` control call with a JSON body.
    pub async fn ctl(&self, method: Method, path: &str, body: Value) -> Resp {
        send(self.http.request(method, self.url(path)).json(&body)).await
    }

    /// Moves the simulator's clock forward.
    pub async fn advance(&self, secs: i64) {
        let r = self
            .ctl(
                Method::POST,
                "/_sim/clock",
                serde_json::json!({ "advanceSeconds": secs }),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    /// Debits `credits` of usage in child `org` (`POST /_sim/spend`).
    pub async fn spend(&self, org: &str, credits: i64) -> Resp {
        self.ctl(
            Method::POST,
            "/_sim/spend",
            serde_json::json!({ "orgId": org, "credits": credits }),
        )
        .await
    }

    /// Allocates `credits` to `org` with a fresh Idempotency-Key.
    pub async fn allocate(&self, org: &str, credits: i64) -> Resp {
        self.write(
            Method::POST,
            &format!("/v1/organizations/{org}/credits/allocate"),
            serde_json::json!({ "credits": credits }),
        )
        .await
    }

    /// The child's ledger, newest first.
    pub async fn events(&self, org: &str) -> Vec<Value> {
        let r = self
            .get(&format!("/v1/organizations/{org}/credits/events?limit=100"))
            .await;
        r.json["items"].as_array().cloned().unwrap_or_default()
    }

    pub async fn state(&self) -> Value {
        send(self.http.get(self.url("/_sim/state"))).await.json
    }
}

pub async fn send(rb: RequestBuilder) -> Resp {
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        json,
    }
}
