//! Property test: random methods, paths, headers and bodies never crash the simulator and
//! every error carries the JSON envelope.
mod common;

use std::sync::OnceLock;

use layers_sim::RunningSim;
use proptest::prelude::*;

struct World {
    rt: tokio::runtime::Runtime,
    sim: RunningSim,
    http: reqwest::Client,
    org: String,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (sim, org) = rt.block_on(async {
            let sim = layers_sim::spawn(common::cfg()).await.unwrap();
            let r = reqwest::Client::new()
                .post(format!("{}/v1/organizations", sim.base_url()))
                .bearer_auth(&sim.parent_key)
                .json(&serde_json::json!({ "name": "fuzz" }))
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            (sim, v["id"].as_str().unwrap().to_string())
        });
        World {
            rt,
            sim,
            http: reqwest::Client::new(),
            org,
        }
    })
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v1".to_string()),
        Just("organizations".to_string()),
        Just("ORG".to_string()),
        Just("api-keys".to_string()),
        Just("credits".to_string()),
        Just("allocate".to_string()),
        Just("credit-config".to_string()),
        Just("webhook-endpoints".to_string()),
        Just("suspend".to_string()),
        Just("whoami".to_string()),
        Just("_sim".to_string()),
        Just("%ff%00".to_string()),
        "[a-zA-Z0-9_.%-]{0,12}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        "\\{\"(name|credits|metadata|scopes|events|url)\":(null|1|-1|\"x\"|\\[\\]|\\{\\}|1e400|\"\\\\ud800\")\\}"
            .prop_map(String::into_bytes),
        Just(b"{\"name\":\"ok\",\"metadata\":{\"a\":\"b\"}}".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn never_crashes(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PATCH"), Just("DELETE"), Just("PUT"), Just("OPTIONS")],
        segs in proptest::collection::vec(segment(), 0..6),
        query in "[a-z=&%0-9]{0,20}",
        auth in prop_oneof![Just(None), Just(Some("PARENT".to_string())), "[ -~]{0,40}".prop_map(Some)],
        idem in proptest::option::of("[ -~]{0,300}"),
        acting in proptest::option::of(prop_oneof![Just("ORG".to_string()), "[ -~]{0,40}"]),
        content_type in prop_oneof![Just("application/json"), Just("text/plain"), Just("application/merge-patch+json")],
        body in body(),
    ) {
        let w = world();
        let path = segs.join("/").replace("ORG", &w.org);
        let url = format!("{}/{}?{}", w.sim.base_url(), path, query);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = w.http.request(method, url).header("content-type", content_type).body(body);
        if let Some(a) = auth {
            let a = if a == "PARENT" { w.sim.parent_key.clone() } else { a };
            rb = rb.header("authorization", format!("Bearer {a}"));
        }
        if let Some(i) = idem { rb = rb.header("idempotency-key", i); }
        if let Some(o) = acting { rb = rb.header("x-layers-organization", o.replace("ORG", &w.org)); }
        let (status, has_rid, text) = w.rt.block_on(async {
            let r = rb.send().await.expect("the server must answer (no faults configured)");
            let status = r.status().as_u16();
            let has_rid = r.headers().contains_key("x-request-id");
            (status, has_rid, r.text().await.unwrap_or_default())
        });
        prop_assert!(has_rid);
        prop_assert!((200..600).contains(&status));
        if status >= 400 {
            let v: serde_json::Value = serde_json::from_str(&text).expect("error body is JSON");
            let code = v["error"]["code"].as_str().unwrap_or("");
            prop_assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "bad code in {}", text);
            prop_assert!(v["error"]["requestId"].as_str().is_some_and(|r| r.starts_with("req_")));
            prop_assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
}
