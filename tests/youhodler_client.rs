//! The YouHodler client against youhodler-sim (in process): every operation, pagination,
//! the token (cached, shared, renewed on expiry, revoked without a storm), ETag conflicts
//! staged between the client's read and its write, 429 waits, exactly-once creates under
//! lost answers, and no secret or token in any message, Debug output or log.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use orgops::provider::error::ProviderError;
use orgops::provider::metrics::ProviderMetrics;
use orgops::provider::youhodler::*;
use orgops::provider::{IdempotencyKey, Secret};
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, HOST, HeaderMap, TRANSFER_ENCODING};
use serde_json::{Value, json};
use sim_kit::KitConfig;
use tempfile::NamedTempFile;
use uuid::Uuid;
use youhodler_sim::{Started, YClient, YouHodlerConfig};

/// The start of every token the simulator issues (`{"alg":"HS256",...` in base64url).
const TOKEN_PREFIX: &str = "eyJhbGci";

/// Every log line of every test in this binary, at TRACE, in a file. One global subscriber:
/// a thread-local one misses events whose callsites other tests' threads registered first.
fn log_file() -> &'static NamedTempFile {
    static LOGS: OnceLock<NamedTempFile> = OnceLock::new();
    LOGS.get_or_init(|| {
        let file = NamedTempFile::new().expect("log file");
        let writer = Mutex::new(file.reopen().expect("log file"));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        file
    })
}

async fn sim_with_ttl(ttl: u64) -> Started {
    log_file();
    youhodler_sim::spawn(YouHodlerConfig {
        kit: KitConfig::default(),
        token_ttl_secs: ttl,
        ..YouHodlerConfig::default()
    })
    .await
    .expect("spawn youhodler-sim")
}

async fn sim() -> Started {
    sim_with_ttl(3600).await
}

fn config_at(s: &Started, base_url: String) -> YouhodlerConfig {
    let mut cfg = YouhodlerConfig::new(
        base_url,
        s.client_id.clone(),
        Secret::new(s.client_secret.clone()),
    );
    cfg.retry_base_delay = Duration::from_millis(5);
    cfg.retry_max_delay = Duration::from_millis(50);
    cfg.request_timeout = Duration::from_secs(5);
    cfg.metrics = Some(ProviderMetrics::unregistered());
    cfg
}

fn config(s: &Started) -> YouhodlerConfig {
    config_at(s, s.base_url())
}

fn client(s: &Started) -> YouhodlerClient {
    YouhodlerClient::new(config(s)).expect("client")
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey(k.to_string())
}

fn new_client(name: &str, external_id: Option<&str>) -> NewClient {
    NewClient {
        display_name: name.to_string(),
        external_id: external_id.map(str::to_string),
        metadata: BTreeMap::from([("orgops.dev/owner".to_string(), "ns/name".to_string())]),
    }
}

// ---- the simulator, in process ----

/// A `/_sim/` route that changes the simulator (credentials, holds, capabilities).
async fn sim_post(s: &Started, method: Method, path: &str, body: Value) {
    let url = format!("{}{path}", s.base_url());
    let status = reqwest::Client::new()
        .request(method, url)
        .json(&body)
        .send()
        .await
        .expect(path)
        .status();
    assert!(status.is_success(), "{path}: {status}");
}

fn set_faults(s: &Started, faults: Value) {
    let cfg = serde_json::from_value(faults).expect("fault config");
    s.sim.sim.set_faults(cfg).expect("valid faults");
}

fn advance_clock(s: &Started, seconds: i64) {
    s.sim.sim.clock.advance_us(seconds * 1_000_000);
}

/// The simulator's clients, oldest first.
fn sim_clients(s: &Started) -> Vec<YClient> {
    let mut all: Vec<YClient> = s
        .sim
        .sim
        .with_state(|st| st.clients.values().cloned().collect());
    all.sort_by_key(|c| c.seq);
    all
}

/// Requests the simulator saw for `method route`, by status (0 = dropped connection).
fn counts(s: &Started, method: &str, route: &str) -> BTreeMap<u16, u64> {
    let mut out = BTreeMap::new();
    for (m, r, status, n) in s.sim.sim.counters.rows() {
        if m == method && r == route {
            *out.entry(status).or_default() += n;
        }
    }
    out
}

fn total(s: &Started, method: &str, route: &str) -> u64 {
    counts(s, method, route).values().sum()
}

fn token_requests(s: &Started) -> u64 {
    total(s, "POST", "/oauth/token")
}

/// Changes a client behind the API's back (someone in the console): a new ETag.
fn touch(s: &Started, id: &str, f: impl FnOnce(&mut YClient)) {
    let id = Uuid::parse_str(id).expect("uuid");
    s.sim.sim.with_state(|st| {
        let c = st.clients.get_mut(&id).expect("client in the simulator");
        f(c);
        c.version += 1;
    });
}

fn assert_clean(what: &str, secret: &str) {
    assert!(!what.contains(secret), "the client secret leaked: {what}");
    assert!(!what.contains(TOKEN_PREFIX), "a token leaked: {what}");
}

// ---- a proxy that meddles between the client's read and its write ----

/// Runs before a request is forwarded: may change the simulator or the request's headers.
type Hook = Box<dyn Fn(&Method, &str, &mut HeaderMap) + Send + Sync>;

struct Proxy {
    target: String,
    http: reqwest::Client,
    hook: Hook,
    /// Every bearer token that went through (to prove none shows up anywhere).
    tokens: Mutex<HashSet<String>>,
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    let mut headers = parts.headers.clone();
    (p.hook)(&parts.method, parts.uri.path(), &mut headers);
    if let Some(t) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        p.tokens.lock().unwrap().insert(t.to_string());
    }
    let path = parts.uri.path_and_query().map_or("/", |x| x.as_str());
    let mut rb = p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.target))
        .body(body);
    for (k, v) in &headers {
        if k != HOST && k != CONTENT_LENGTH {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.send().await.expect("forward");
    let mut out = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if k != TRANSFER_ENCODING && k != CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    out.body(Body::from(resp.bytes().await.expect("answer")))
        .expect("response")
}

/// A client whose first `times` requests `method path` run `f` on the simulator (and the
/// request's headers) just before they reach it.
async fn meddling_client(
    s: &Arc<Started>,
    method: Method,
    path: String,
    times: u32,
    f: impl Fn(&Started, &mut HeaderMap) + Send + Sync + 'static,
) -> (YouhodlerClient, Arc<Proxy>) {
    let left = AtomicU32::new(times);
    let sim = s.clone();
    let hook: Hook = Box::new(move |m, p, headers| {
        let mine = *m == method && p == path;
        if mine
            && left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            f(&sim, headers);
        }
    });
    let p = Arc::new(Proxy {
        target: s.base_url(),
        http: reqwest::Client::new(),
        hook,
        tokens: Mutex::new(HashSet::new()),
    });
    let app = axum::Router::new().fallback(forward).with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let via = YouhodlerClient::new(config_at(s, url)).expect("client");
    (via, p)
}

// ---- tests ----

#[tokio::test]
async fn every_operation_against_the_simulator() {
    let s = sim().await;
    let y = client(&s);
    let enterprise = s.enterprise_id.to_string();
    assert_eq!(
        y.whoami().await.unwrap(),
        (s.client_id.clone(), enterprise.clone())
    );
    assert_eq!(y.enterprise_id().await.unwrap(), enterprise);

    let c = y
        .create_client(&new_client("Acme Corp", Some("acme")), &key("create-acme"))
        .await
        .unwrap();
    assert_eq!(c.display_name, "Acme Corp");
    assert_eq!(c.external_id.as_deref(), Some("acme"));
    assert_eq!(c.metadata["orgops.dev/owner"], "ns/name");
    assert_eq!(c.scope_ref, format!("enterprises/{enterprise}"));
    assert_eq!(c.enterprise_id(), Some(enterprise.as_str()));
    assert!(c.is_active() && !c.is_suspended());
    assert!(c.etag.starts_with("W/\""), "{}", c.etag);
    assert!(c.default_client_account.is_some());

    let got = y.get_client(&c.id).await.unwrap().unwrap();
    assert_eq!(got, c);
    assert_eq!(
        y.get_client(&Uuid::new_v4().to_string()).await.unwrap(),
        None
    );
    assert!(matches!(
        y.get_client("../oauth/token").await,
        Err(ProviderError::Invalid(_))
    ));

    let other = y
        .create_client(&new_client("Beta", None), &key("create-beta"))
        .await
        .unwrap();
    let all = y.list_clients(None).await.unwrap();
    assert_eq!(
        all.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [c.id.as_str(), other.id.as_str()]
    );
    let by_ext = y.list_clients(Some("acme")).await.unwrap();
    assert_eq!(by_ext.len(), 1);
    assert_eq!(by_ext[0].id, c.id);
    assert!(y.list_clients(Some("nobody")).await.unwrap().is_empty());

    // PATCH: applied once; the same patch again sends nothing.
    let gold = BTreeMap::from([("tier".to_string(), "gold".to_string())]);
    let patch = ClientPatch {
        display_name: Some("Acme Corporation".into()),
        metadata: Some(gold.clone()),
    };
    let patched = y.patch_client(&c.id, &patch).await.unwrap();
    assert_eq!(patched.display_name, "Acme Corporation");
    assert_eq!(patched.metadata, gold, "metadata replaces the whole map");
    assert_ne!(patched.etag, c.etag);
    assert_eq!(y.patch_client(&c.id, &patch).await.unwrap(), patched);
    assert_eq!(
        counts(&s, "PATCH", "/clients/:client_id"),
        BTreeMap::from([(200, 1)])
    );
    assert!(matches!(
        y.patch_client(&Uuid::new_v4().to_string(), &patch).await,
        Err(ProviderError::NotFound(_))
    ));

    // Suspend: 201; a second suspend is success with no POST.
    let suspended = y
        .suspend_client(&c.id, Some("unpaid"), &key("suspend-acme"))
        .await
        .unwrap();
    assert!(suspended.is_suspended(), "{}", suspended.status);
    let twice = y
        .suspend_client(&c.id, Some("unpaid"), &key("suspend-acme"))
        .await
        .unwrap();
    assert!(twice.is_suspended());
    assert_eq!(
        counts(&s, "POST", "/clients/:client_id/suspend"),
        BTreeMap::from([(201, 1)])
    );
    assert_eq!(sim_clients(&s)[0].last_reason.as_deref(), Some("unpaid"));

    // Reactivate: the mirror image.
    let active = y
        .reactivate_client(&c.id, None, &key("reactivate-acme"))
        .await
        .unwrap();
    assert!(active.is_active());
    y.reactivate_client(&c.id, None, &key("reactivate-acme"))
        .await
        .unwrap();
    assert_eq!(
        counts(&s, "POST", "/clients/:client_id/reactivate"),
        BTreeMap::from([(201, 1)])
    );
    // Suspended again with the same caller key (another reason): the ETag moved, so it is a
    // new request, neither a replay of the first suspend's answer nor a key conflict.
    let re = y
        .suspend_client(&c.id, None, &key("suspend-acme"))
        .await
        .unwrap();
    assert!(re.is_suspended());
    assert_eq!(sim_clients(&s)[0].status, "suspended");

    // Suspend refused because of open operations (422): not success, not re-sent.
    let hold = format!("/_sim/clients/{}/hold", other.id);
    sim_post(&s, Method::PUT, &hold, json!({"hold": true})).await;
    let err = y
        .suspend_client(&other.id, None, &key("suspend-beta"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Validation(_)), "{err:?}");
    assert_eq!(err.code(), "not_admissible");
    assert_eq!(reason(&err), Some("pending_approvals"));
    assert!(err.needs_human());
    // Settled (the ETag does not change): the same caller key now suspends; the refusal
    // stored under the first call's key is not replayed.
    sim_post(&s, Method::PUT, &hold, json!({"hold": false})).await;
    let out = y
        .suspend_client(&other.id, None, &key("suspend-beta"))
        .await
        .unwrap();
    assert!(out.is_suspended());
    assert_eq!(
        counts(&s, "POST", "/clients/:client_id/suspend"),
        BTreeMap::from([(201, 3), (422, 1)])
    );

    // A missing capability.
    sim_post(
        &s,
        Method::PUT,
        "/_sim/capabilities",
        json!({"clients": false}),
    )
    .await;
    let err = y.get_client(&c.id).await.unwrap_err();
    assert!(matches!(err, ProviderError::ForbiddenScope(_)), "{err:?}");
    assert_eq!(reason(&err), Some("missing_capability"));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn lists_follow_every_page() {
    let s = sim().await;
    let y = client(&s);
    let mut ids = Vec::new();
    for i in 0..130 {
        let ext = format!("ext-{i:03}");
        let new = new_client(&format!("Tenant {i:03}"), Some(&ext));
        ids.push(y.create_client(&new, &key(&ext)).await.unwrap().id);
    }
    let all = y.list_clients(None).await.unwrap();
    assert_eq!(all.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(total(&s, "GET", "/clients"), 2, "two pages of 100");
    let one = y.list_clients(Some("ext-120")).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, ids[120]);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn enterprise_is_discovered_once_or_checked_when_configured() {
    let s = sim().await;
    let y = client(&s);
    let enterprise = s.enterprise_id.to_string();
    for _ in 0..3 {
        assert_eq!(y.enterprise_id().await.unwrap(), enterprise);
    }
    assert_eq!(total(&s, "GET", "/enterprises"), 1, "cached");

    let mut cfg = config(&s);
    cfg.enterprise_id = Some(enterprise.clone());
    let configured = YouhodlerClient::new(cfg).unwrap();
    assert_eq!(configured.enterprise_id().await.unwrap(), enterprise);
    assert_eq!(total(&s, "GET", "/enterprises"), 1, "no lookup");
    assert_eq!(configured.whoami().await.unwrap().1, enterprise);

    let mut cfg = config(&s);
    cfg.enterprise_id = Some(Uuid::new_v4().to_string());
    let wrong = YouhodlerClient::new(cfg).unwrap();
    let err = wrong.whoami().await.unwrap_err();
    assert!(matches!(err, ProviderError::Invalid(_)), "{err:?}");
    assert!(
        err.to_string().contains("spec.youhodler.enterpriseId"),
        "{err}"
    );
    s.sim.shutdown().await;
}

/// `calls` concurrent `list_clients`, each expected to succeed.
async fn concurrently(y: &Arc<YouhodlerClient>, calls: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let y = y.clone();
        tasks.spawn(async move { y.list_clients(None).await.map(|v| v.len()) });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
}

#[tokio::test]
async fn one_token_serves_many_calls_and_concurrent_callers_share_a_refresh() {
    let s = sim().await;
    let y = Arc::new(client(&s));
    concurrently(&y, 20).await;
    for _ in 0..10 {
        y.get_client(&Uuid::new_v4().to_string()).await.unwrap();
    }
    assert_eq!(token_requests(&s), 1, "one token for 30 calls");

    // Expired on the simulator's clock (the client's own clock says it is still good):
    // one 401, one new token, the call succeeds.
    advance_clock(&s, 3700);
    y.list_clients(None).await.unwrap();
    assert_eq!(token_requests(&s), 2);
    assert_eq!(counts(&s, "GET", "/clients").get(&401), Some(&1));

    // Again, with 20 callers at once: one new token for all of them.
    advance_clock(&s, 3700);
    concurrently(&y, 20).await;
    assert_eq!(token_requests(&s), 3, "no stampede");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_token_is_replaced_before_it_expires() {
    // 2 s tokens: replaced when half of the lifetime is left, with no 401 on the way.
    let s = sim_with_ttl(2).await;
    let y = client(&s);
    y.list_clients(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    y.list_clients(None).await.unwrap();
    assert_eq!(token_requests(&s), 2);
    assert_eq!(counts(&s, "GET", "/clients"), BTreeMap::from([(200, 2)]));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn revoked_credentials_are_unauthenticated_without_a_token_storm() {
    let s = sim().await;
    let y = Arc::new(client(&s));
    y.list_clients(None).await.unwrap();
    sim_post(&s, Method::POST, "/_sim/credentials/revoke", json!({})).await;

    // The cached token is refused: one new token is asked for, and refused.
    let before = token_requests(&s);
    let err = y.list_clients(None).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unauthenticated(_)), "{err:?}");
    assert!(err.is_auth() && err.needs_human());
    assert!(
        err.to_string()
            .contains("check the credentials Secret's clientId/clientSecret"),
        "{err}"
    );
    assert_eq!(reason(&err), Some("credentials_revoked"));
    assert_clean(&err.to_string(), &s.client_secret);
    assert_eq!(token_requests(&s) - before, 1);
    // With no token left, the next call asks for one and sends nothing else.
    let gets = total(&s, "GET", "/clients");
    let err = y.list_clients(None).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unauthenticated(_)));
    assert_eq!(token_requests(&s) - before, 2);
    assert_eq!(total(&s, "GET", "/clients"), gets);

    // 20 callers at once share one refused token request (the bound asked for is two per
    // call; without the sharing it is one per call).
    let before = token_requests(&s);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let y = y.clone();
        tasks.spawn(async move { y.list_clients(None).await.map(|_| ()) });
    }
    while let Some(r) = tasks.join_next().await {
        assert!(matches!(r.unwrap(), Err(ProviderError::Unauthenticated(_))));
    }
    let asked = token_requests(&s) - before;
    assert!(
        (1..=2).contains(&asked),
        "{asked} token requests for 20 calls"
    );

    // Restored: the next call gets a token and works.
    sim_post(&s, Method::POST, "/_sim/credentials/restore", json!({})).await;
    y.list_clients(None).await.unwrap();

    // A wrong secret from the start: the health check says which keys to check.
    let mut cfg = config(&s);
    cfg.client_secret = Secret::new("not-the-secret-but-secret");
    let wrong = YouhodlerClient::new(cfg).unwrap();
    let err = wrong.whoami().await.unwrap_err();
    assert!(matches!(err, ProviderError::Unauthenticated(_)), "{err:?}");
    assert!(err.to_string().contains("clientId/clientSecret"), "{err}");
    assert_eq!(reason(&err), Some("invalid_client"));
    assert!(!err.to_string().contains("not-the-secret-but-secret"));
    s.sim.shutdown().await;
}

/// Issue 27, item 5: after a 412 the retry re-sent the body computed from the stale read.
/// orgops sends the whole metadata map (its merge of the read with the spec's keys), so a
/// key the console removed between the read and the PATCH came back. The retry is built
/// from the fresh read.
#[tokio::test]
async fn a_patch_retried_after_412_is_built_from_the_fresh_read() {
    use orgops::provider::{OrgPatch, Provider};
    let s = Arc::new(sim().await);
    let c = client(&s)
        .create_client(&new_client("Acme", None), &key("c-stale"))
        .await
        .unwrap();
    touch(&s, &c.id, |c| {
        c.metadata.insert("console".into(), "temporary".into());
    });
    // Right before the PATCH lands, someone removes the console's key.
    let id = c.id.clone();
    let (via, _p) = meddling_client(
        &s,
        Method::PATCH,
        format!("/clients/{}", c.id),
        1,
        move |s, _| {
            touch(s, &id, |c| {
                c.metadata.remove("console");
            })
        },
    )
    .await;
    let provider = YouhodlerProvider::new(via);
    let patch = OrgPatch {
        metadata: Some(BTreeMap::from([("plan".to_string(), "growth".to_string())])),
        ..Default::default()
    };
    let org = provider.update_org(&c.id, &patch).await.unwrap();
    assert_eq!(org.metadata.get("plan").map(String::as_str), Some("growth"));
    assert!(
        !org.metadata.contains_key("console"),
        "the retry re-sent the stale metadata: {:?}",
        org.metadata
    );
    assert_eq!(
        counts(&s, "PATCH", "/clients/:client_id"),
        BTreeMap::from([(200, 1), (412, 1)])
    );
}

#[tokio::test]
async fn patch_converges_when_the_client_changes_between_read_and_write() {
    let s = Arc::new(sim().await);
    let c = client(&s)
        .create_client(&new_client("Acme", None), &key("c1"))
        .await
        .unwrap();
    let path = format!("/clients/{}", c.id);
    // Twice, someone edits the client in the console right before the PATCH lands.
    let id = c.id.clone();
    let (via, p) = meddling_client(&s, Method::PATCH, path.clone(), 2, move |s, _| {
        touch(s, &id, |c| {
            c.metadata.insert("console".into(), "edited".into());
        })
    })
    .await;
    let rename = |name: &str| ClientPatch {
        display_name: Some(name.into()),
        metadata: None,
    };
    let out = via
        .patch_client(&c.id, &rename("Acme Renamed"))
        .await
        .unwrap();
    assert_eq!(out.display_name, "Acme Renamed");
    assert_eq!(
        out.metadata["console"], "edited",
        "the console's edit is kept"
    );
    assert_eq!(
        counts(&s, "PATCH", "/clients/:client_id"),
        BTreeMap::from([(200, 1), (412, 2)])
    );
    assert_eq!(total(&s, "GET", "/clients/:client_id"), 3);

    // Someone who never stops: bounded, then a Conflict that says so.
    let id = c.id.clone();
    let (via, p2) = meddling_client(&s, Method::PATCH, path, u32::MAX, move |s, _| {
        touch(s, &id, |c| c.metadata.clear())
    })
    .await;
    let err = via
        .patch_client(&c.id, &rename("Acme Again"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("ETag kept changing"), "{err}");
    assert!(is_precondition_failed(&err));
    assert_eq!(
        counts(&s, "PATCH", "/clients/:client_id").get(&412),
        Some(&(2 + u64::from(MAX_PRECONDITION_ROUNDS)))
    );
    let mut tokens = p.tokens.lock().unwrap().clone();
    tokens.extend(p2.tokens.lock().unwrap().iter().cloned());
    assert!(!tokens.is_empty());
    let shown = format!("{err} {via:?}");
    assert!(
        tokens.iter().all(|t| !shown.contains(t.as_str())),
        "{shown}"
    );
}

#[tokio::test]
async fn suspend_converges_on_412_and_takes_already_there_as_success() {
    let s = Arc::new(sim().await);
    let y = client(&s);
    let a = y
        .create_client(&new_client("A", None), &key("ca"))
        .await
        .unwrap();
    let b = y
        .create_client(&new_client("B", None), &key("cb"))
        .await
        .unwrap();

    // A: edited between the read and the suspend: 412, re-read, suspended with a new key.
    let id = a.id.clone();
    let (via, _p) = meddling_client(
        &s,
        Method::POST,
        format!("/clients/{}/suspend", a.id),
        1,
        move |s, _| touch(s, &id, |c| c.display_name = "A (edited)".into()),
    )
    .await;
    let out = via
        .suspend_client(&a.id, Some("unpaid"), &key("suspend-a"))
        .await
        .unwrap();
    assert!(out.is_suspended() && out.display_name == "A (edited)");
    assert_eq!(
        counts(&s, "POST", "/clients/:client_id/suspend"),
        BTreeMap::from([(201, 1), (412, 1)])
    );

    // B: suspended by someone else just before our POST, which arrives without If-Match,
    // so the API answers 409 state_conflict (already_suspended): success after a re-read.
    let id = b.id.clone();
    let (via, _p) = meddling_client(
        &s,
        Method::POST,
        format!("/clients/{}/suspend", b.id),
        1,
        move |s, headers| {
            touch(s, &id, |c| c.status = "suspended".into());
            headers.remove("if-match");
        },
    )
    .await;
    let out = via
        .suspend_client(&b.id, None, &key("suspend-b"))
        .await
        .unwrap();
    assert!(out.is_suspended());
    assert_eq!(
        counts(&s, "POST", "/clients/:client_id/suspend"),
        BTreeMap::from([(201, 1), (409, 1), (412, 1)])
    );

    // Reactivate, raced the same way: 409 not_suspended, already active: success.
    let id = b.id.clone();
    let (via, _p) = meddling_client(
        &s,
        Method::POST,
        format!("/clients/{}/reactivate", b.id),
        1,
        move |s, headers| {
            touch(s, &id, |c| c.status = "active".into());
            headers.remove("if-match");
        },
    )
    .await;
    let out = via
        .reactivate_client(&b.id, None, &key("reactivate-b"))
        .await
        .unwrap();
    assert!(out.is_active());
    assert_eq!(
        counts(&s, "POST", "/clients/:client_id/reactivate"),
        BTreeMap::from([(409, 1)])
    );
}

#[tokio::test]
async fn a_429_waits_for_retry_after_ms() {
    let s = sim().await;
    let y = client(&s);
    let c = y
        .create_client(&new_client("A", None), &key("ca"))
        .await
        .unwrap();
    // Every read is limited for 300 ms. With 5 ms backoff the attempts would be spent long
    // before that; the simulator's retry_after_ms (1000) is what makes the call succeed.
    set_faults(&s, json!({"read": {"rateLimit429": 1.0}}));
    let sim = s.sim.sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sim.set_faults(Default::default()).expect("no faults");
    });
    let started = Instant::now();
    let got = y.get_client(&c.id).await.unwrap().unwrap();
    assert_eq!(got.id, c.id);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert_eq!(
        counts(&s, "GET", "/clients/:client_id"),
        BTreeMap::from([(200, 1), (429, 1)])
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn transient_failures_are_retried_a_bounded_number_of_times() {
    let s = sim().await;
    let mut cfg = config(&s);
    cfg.max_attempts = 3;
    let y = YouhodlerClient::new(cfg).unwrap();
    let c = y
        .create_client(&new_client("A", None), &key("ca"))
        .await
        .unwrap();
    set_faults(&s, json!({"read": {"error5xx": 1.0}}));
    let err = y.get_client(&c.id).await.unwrap_err();
    assert!(matches!(err, ProviderError::Server(_)), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(total(&s, "GET", "/clients/:client_id"), 3);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_create_whose_answers_are_lost_makes_one_client() {
    let s = sim().await;
    let y = client(&s);
    y.whoami().await.unwrap();
    // Every write commits, then its answer is lost: all attempts fail.
    set_faults(
        &s,
        json!({"write": {"loseResponse": 1.0}, "loseResponseMode": "badGateway"}),
    );
    let new = new_client("Once", Some("once"));
    let err = y
        .create_client(&new, &key("create-once"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        total(&s, "POST", "/clients"),
        5,
        "re-sent with the same key"
    );
    set_faults(&s, json!({}));
    // The caller tries again with the same key: the stored answer, one client.
    let c = y.create_client(&new, &key("create-once")).await.unwrap();
    let st = sim_clients(&s);
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].id.to_string(), c.id);

    // Another key, the same external_id: a Conflict the caller can recognise.
    let err = y
        .create_client(&new, &key("create-once-more"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Conflict(_)), "{err:?}");
    assert!(is_external_id_taken(&err), "{err}");
    assert_eq!(err.code(), "state_conflict");
    // The first key with another body: an idempotency conflict.
    let err = y
        .create_client(&new_client("Other", Some("other")), &key("create-once"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::IdempotencyConflict(_)),
        "{err:?}"
    );
    assert_eq!(sim_clients(&s).len(), 1);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn creates_are_exactly_once_under_random_faults() {
    let s = sim().await;
    let y = Arc::new(client(&s));
    y.whoami().await.unwrap();
    set_faults(
        &s,
        json!({"error5xx": 0.15, "loseResponse": 0.25, "loseResponseMode": "mixed"}),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let y = y.clone();
        tasks.spawn(async move {
            let ext = format!("t{i:02}");
            let new = new_client(&format!("Tenant {i:02}"), Some(&ext));
            // Like a reconciler: the same key until it succeeds.
            for _ in 0..30 {
                match y.create_client(&new, &key(&format!("create-{ext}"))).await {
                    Ok(c) => return (ext, c),
                    Err(e) => assert!(e.is_retryable(), "{ext}: {e}"),
                }
            }
            panic!("{ext}: no success in 30 calls");
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.unwrap());
    }
    set_faults(&s, json!({}));
    assert!(
        s.sim.sim.counters.faults_injected() > 0,
        "faults were injected"
    );
    let st = sim_clients(&s);
    assert_eq!(st.len(), 30, "exactly one client per key");
    for (ext, c) in &results {
        let mine: Vec<_> = st
            .iter()
            .filter(|x| x.external_id.as_deref() == Some(ext.as_str()))
            .collect();
        assert_eq!(mine.len(), 1, "{ext}");
        assert_eq!(mine[0].id.to_string(), c.id);
    }
    s.sim.shutdown().await;
}

#[tokio::test]
async fn no_secret_or_token_in_debug_errors_or_logs() {
    let s = sim().await;
    let y = client(&s);
    let mut shown = vec![format!("{y:?}"), format!("{:?}", config(&s))];
    let c = y
        .create_client(&new_client("A", Some("a")), &key("ca"))
        .await
        .unwrap();
    let mut errors = Vec::new();
    errors.push(
        y.create_client(&new_client("A", Some("a")), &key("cb"))
            .await
            .unwrap_err(),
    );
    set_faults(&s, json!({"error5xx": 0.3, "loseResponse": 0.3}));
    for i in 0..5 {
        let rename = ClientPatch {
            display_name: Some(format!("A{i}")),
            metadata: None,
        };
        errors.extend(y.patch_client(&c.id, &rename).await.err());
        let k = key(&format!("s{i}"));
        errors.extend(y.suspend_client(&c.id, None, &k).await.err());
        let k = key(&format!("r{i}"));
        errors.extend(y.reactivate_client(&c.id, None, &k).await.err());
    }
    set_faults(&s, json!({}));
    sim_post(&s, Method::POST, "/_sim/credentials/revoke", json!({})).await;
    errors.push(y.list_clients(None).await.unwrap_err());
    errors.push(y.whoami().await.unwrap_err());
    shown.push(format!("{y:?}"));
    shown.extend(errors.iter().map(|e| format!("{e} {e:?} {}", e.message())));
    for text in &shown {
        assert_clean(text, &s.client_secret);
    }
    // The logs of every test so far: their tokens, this test's secret.
    let logs = std::fs::read_to_string(log_file().path()).expect("logs");
    assert!(
        logs.contains("youhodler_request") && logs.contains("request refused"),
        "the capture works"
    );
    assert_clean(&logs, &s.client_secret);
    assert!(!logs.contains("not-the-secret-but-secret"));
    s.sim.shutdown().await;
}
