// Over 600 lines: the simulator's whole API surface (routes, rules, faults, assumed switches) in one place, read against the API docs top to bottom.
//! youhodler-sim: a local, faithful, stateful and fault-injecting simulator of the YouHodler
//! Business API's clients surface (OAuth client credentials, enterprises, clients with
//! idempotency keys, weak ETags and `If-Match`), built on `sim-kit`. See
//! `sims/youhodler/README.md`.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http::Method;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sim_kit::clock::fmt_secs;
use sim_kit::{
    ApiRequest, App, ControlError, IdemStore, KitConfig, KitError, Lookup, Rejection, Reply, Route,
    RunningSim, Switches, fingerprint, parse_control_body,
};
use uuid::Uuid;

/// Idempotency keys are kept this long (assumed: 24 h).
pub const IDEMPOTENCY_WINDOW_US: i64 = 24 * 3600 * 1_000_000;
/// `details.retry_after_ms` on an injected 429.
pub const RETRY_AFTER_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Token,
    Enterprises,
    List,
    Create,
    Get,
    Patch,
    Suspend,
    Reactivate,
}

static ROUTES: &[Route<Op>] = &[
    ("/oauth/token", Method::POST, Op::Token),
    ("/enterprises", Method::GET, Op::Enterprises),
    ("/clients", Method::GET, Op::List),
    ("/clients", Method::POST, Op::Create),
    ("/clients/:client_id", Method::GET, Op::Get),
    ("/clients/:client_id", Method::PATCH, Op::Patch),
    ("/clients/:client_id/suspend", Method::POST, Op::Suspend),
    (
        "/clients/:client_id/reactivate",
        Method::POST,
        Op::Reactivate,
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctl {
    RevokeSecret,
    RestoreSecret,
    Capability,
    Hold,
    Edit,
}

static CONTROL_ROUTES: &[Route<Ctl>] = &[
    ("/_sim/credentials/revoke", Method::POST, Ctl::RevokeSecret),
    (
        "/_sim/credentials/restore",
        Method::POST,
        Ctl::RestoreSecret,
    ),
    ("/_sim/capabilities", Method::PUT, Ctl::Capability),
    ("/_sim/clients/:client_id/hold", Method::PUT, Ctl::Hold),
    ("/_sim/clients/:client_id", Method::PATCH, Ctl::Edit),
];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct YClient {
    pub id: Uuid,
    pub display_name: String,
    pub external_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub status: String,
    pub default_account: Uuid,
    pub version: u64,
    pub created_us: i64,
    pub updated_us: i64,
    pub seq: u64,
    pub last_reason: Option<String>,
    /// Pending approvals / open operations: suspend is not admissible (422).
    pub hold: bool,
    /// An accepted suspend/reactivate not applied yet (`--lifecycle async:SECONDS`).
    #[serde(default)]
    pub pending: Option<PendingTransition>,
    /// Suspend and reactivate requests this client accepted (applied or pending).
    #[serde(default)]
    pub transitions_accepted: u32,
}

/// A lifecycle change accepted (201) and applied at `due_us` on the simulator clock.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingTransition {
    pub to: String,
    pub reason: Option<String>,
    pub due_us: i64,
}

/// When suspend and reactivate take effect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lifecycle {
    /// Inside the 201: the answer shows the new status.
    #[default]
    Sync,
    /// Accepted: the 201 shows the client as it was (seed 003's own example shows
    /// `status: "active"` after a suspend); applied this many seconds later on the
    /// simulator clock. Another suspend/reactivate meanwhile is accepted again.
    Async { seconds: u64 },
}

impl std::str::FromStr for Lifecycle {
    type Err = String;
    fn from_str(s: &str) -> Result<Lifecycle, String> {
        match s.split_once(':') {
            None if s == "sync" => Ok(Lifecycle::Sync),
            Some(("async", n)) => n
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=86_400).contains(n))
                .map(|seconds| Lifecycle::Async { seconds })
                .ok_or_else(|| format!("async:SECONDS needs 1 to 86400 seconds, got {n:?}")),
            _ => Err(format!(
                "lifecycle must be sync or async:SECONDS, got {s:?}"
            )),
        }
    }
}

impl std::fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lifecycle::Sync => f.write_str("sync"),
            Lifecycle::Async { seconds } => write!(f, "async:{seconds}"),
        }
    }
}

impl Serialize for Lifecycle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lifecycle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lifecycle, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What an unknown query parameter gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownQuery {
    /// Ignored (so a page token under a name the API does not read returns page 1 again).
    #[default]
    Ignore,
    /// `400 invalid_request` (`unknown_query_parameter`), like unknown body fields.
    Reject,
}

/// How `PATCH /clients/{id}` treats `metadata`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PatchMetadata {
    /// The map sent replaces the whole map.
    #[default]
    Replace,
    /// JSON merge patch (RFC 7396): keys sent are set, a key sent as `null` is removed,
    /// keys not sent stay.
    Merge,
}

/// Which refusal a transition to the state a client is already in gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StateConflict {
    /// `409 state_conflict` (Y14's code for a true state conflict).
    #[default]
    Conflict,
    /// `422 not_admissible` (Y0: "lifecycle precondition").
    NotAdmissible,
}

/// Where YouHodler's docs are silent, one plausible answer per switch (README "Assumption
/// switches"); flags set them at start, `PATCH /_sim/assumptions` at run time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assumptions {
    pub lifecycle: Lifecycle,
    /// The one query parameter carrying a page token; `None` = `page_token` and
    /// `next_page_token` both.
    pub page_token_param: Option<String>,
    /// The largest `page_size` accepted (`400` above it).
    pub max_page_size: u32,
    pub unknown_query: UnknownQuery,
    pub patch_metadata: PatchMetadata,
    pub state_conflict: StateConflict,
    /// A second client with an `external_id` in use is refused (`409`).
    pub unique_external_id: bool,
}

impl Default for Assumptions {
    fn default() -> Assumptions {
        Assumptions {
            lifecycle: Lifecycle::Sync,
            page_token_param: None,
            max_page_size: 100,
            unknown_query: UnknownQuery::Ignore,
            patch_metadata: PatchMetadata::Replace,
            state_conflict: StateConflict::Conflict,
            unique_external_id: true,
        }
    }
}

impl YClient {
    pub fn etag(&self) -> String {
        let h = Sha256::digest(format!("{}:{}", self.id, self.version));
        format!("W/\"{}\"", &hex::encode(h)[..8])
    }

    pub fn json(&self, enterprise: Uuid) -> Value {
        json!({
            "id": self.id,
            "resource": "client",
            "display_name": self.display_name,
            "external_id": self.external_id,
            "metadata": self.metadata,
            "scope_ref": format!("enterprises/{enterprise}"),
            "default_client_account": format!("client-accounts/{}", self.default_account),
            "status": self.status,
            "etag": self.etag(),
            "created_at": fmt_secs(self.created_us),
            "updated_at": fmt_secs(self.updated_us),
        })
    }
}

/// A stored idempotent outcome (status + body bytes, replayed verbatim).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stored {
    pub status: u16,
    pub body: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub client_id: String,
    /// The simulator's own credential, in plain text so a restart keeps it (file mode 0600).
    pub client_secret: String,
    pub secret_revoked: bool,
    /// Bumped when the secret is revoked: tokens carry it and older ones stop working.
    pub secret_generation: u32,
    pub enterprise_id: Uuid,
    pub enterprise_created_us: i64,
    pub signing_key: String,
    pub capability: bool,
    pub clients: HashMap<Uuid, YClient>,
    pub seq: u64,
    pub idem: IdemStore<Stored>,
    pub tokens_issued: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct YErr {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub reason: Option<&'static str>,
}

impl YErr {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> YErr {
        YErr {
            status,
            code,
            message: message.into(),
            reason: None,
        }
    }
    fn reason(mut self, r: &'static str) -> YErr {
        self.reason = Some(r);
        self
    }
    fn invalid(message: impl Into<String>, reason: &'static str) -> YErr {
        YErr::new(400, "invalid_request", message).reason(reason)
    }
    fn unauthorized(reason: &'static str) -> YErr {
        YErr::new(401, "unauthorized", "Authentication required.").reason(reason)
    }
    fn not_found() -> YErr {
        YErr::new(404, "resource_not_found", "Resource not found.").reason("client_not_found")
    }
    fn body(&self) -> Value {
        let mut v = json!({ "code": self.code, "message": self.message });
        if let Some(r) = self.reason {
            v["details"] = json!({ "reason": r });
        }
        v
    }
    fn reply(&self) -> Reply {
        Reply::json(self.status, &self.body())
    }
}

/// The YouHodler API as a `sim-kit` app.
#[derive(Debug)]
pub struct YouHodler {
    pub token_ttl_secs: u64,
    pub switches: Switches<Assumptions>,
}

fn random_string(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
        .collect()
}

impl State {
    /// Applies every accepted lifecycle change that is due (`--lifecycle async:SECONDS`).
    pub fn settle(&mut self, now_us: i64) {
        for c in self.clients.values_mut() {
            if c.pending.as_ref().is_some_and(|p| p.due_us <= now_us)
                && let Some(p) = c.pending.take()
            {
                c.status = p.to;
                c.last_reason = p.reason;
                c.version += 1;
                c.updated_us = now_us;
            }
        }
    }

    pub fn fresh(client_id: String, client_secret: String, enterprise_id: Uuid, now: i64) -> State {
        State {
            client_id,
            client_secret,
            secret_revoked: false,
            secret_generation: 0,
            enterprise_id,
            enterprise_created_us: now,
            signing_key: random_string(48),
            capability: true,
            clients: HashMap::new(),
            seq: 0,
            idem: IdemStore::default(),
            tokens_issued: 0,
        }
    }

    fn sign(&self, data: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.signing_key.as_bytes());
        h.update(b".");
        h.update(data.as_bytes());
        B64.encode(h.finalize())
    }

    fn issue_token(&mut self, now: i64, ttl: u64) -> String {
        self.tokens_issued += 1;
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let iat = now / 1_000_000;
        let payload = json!({
            "iss": "youhodler-sim",
            "sub": self.client_id,
            "scope_ref": format!("enterprises/{}", self.enterprise_id),
            "iat": iat,
            "exp": iat + ttl as i64,
            "jti": Uuid::new_v4(),
            "sgen": self.secret_generation,
        });
        let payload = B64.encode(payload.to_string());
        let data = format!("{header}.{payload}");
        let sig = self.sign(&data);
        format!("{data}.{sig}")
    }

    /// Checks a bearer token: signature, expiry, and the secret generation it was issued under.
    fn verify(&self, token: &str, now: i64) -> Result<(), YErr> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(YErr::unauthorized("invalid_token"));
        };
        if self.sign(&format!("{h}.{p}")) != s {
            return Err(YErr::unauthorized("invalid_token"));
        }
        let claims: Value = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| YErr::unauthorized("invalid_token"))?;
        if claims["sgen"].as_u64() != Some(u64::from(self.secret_generation)) || self.secret_revoked
        {
            return Err(YErr::unauthorized("credentials_revoked"));
        }
        if claims["exp"]
            .as_i64()
            .is_none_or(|exp| exp * 1_000_000 <= now)
        {
            return Err(YErr::unauthorized("token_expired"));
        }
        Ok(())
    }
}

// ---------- request helpers ----------

fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, YErr> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        YErr::invalid(
            format!("Invalid request: malformed JSON ({e})."),
            "malformed_body",
        )
    })?;
    let Value::Object(m) = v else {
        return Err(YErr::invalid(
            "Invalid request: the body must be a JSON object.",
            "malformed_body",
        ));
    };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(YErr::invalid(
            format!("Invalid request: unknown field {k}."),
            "unknown_field",
        ));
    }
    Ok(m)
}

fn opt_string(
    m: &Map<String, Value>,
    name: &str,
    min: usize,
    max: usize,
) -> Result<Option<String>, YErr> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if (min..=max).contains(&s.chars().count()) => Ok(Some(s.clone())),
        Some(_) => Err(YErr::invalid(
            format!("Invalid request: {name} must be a string of {min} to {max} characters."),
            "invalid_field",
        )),
    }
}

fn metadata(m: &Map<String, Value>) -> Result<Option<BTreeMap<String, String>>, YErr> {
    match m.get("metadata") {
        None => Ok(None),
        Some(Value::Object(o)) => {
            if o.len() > 50 {
                return Err(YErr::invalid(
                    "Invalid request: metadata has more than 50 keys.",
                    "invalid_field",
                ));
            }
            let mut out = BTreeMap::new();
            for (k, v) in o {
                match v {
                    Value::String(s)
                        if !k.is_empty() && k.len() <= 64 && s.chars().count() <= 500 =>
                    {
                        out.insert(k.clone(), s.clone());
                    }
                    _ => {
                        return Err(YErr::invalid(
                            format!(
                                "Invalid request: metadata.{k} must be a string (keys 1-64, values up to 500 characters)."
                            ),
                            "invalid_field",
                        ));
                    }
                }
            }
            Ok(Some(out))
        }
        Some(_) => Err(YErr::invalid(
            "Invalid request: metadata must be an object of strings.",
            "invalid_field",
        )),
    }
}

fn page_token(seq: u64) -> String {
    B64.encode(format!("after:{seq}"))
}

fn parse_page_token(t: &str) -> Option<u64> {
    let s = String::from_utf8(B64.decode(t).ok()?).ok()?;
    s.strip_prefix("after:")?.parse().ok()
}

impl YouHodler {
    fn dispatch(&self, st: &mut State, req: &ApiRequest<'_, Op>) -> Result<Reply, YErr> {
        st.settle(req.now_us);
        let sw = self.switches.get();
        if req.op == Op::Token {
            return self.token(st, req);
        }
        let bearer = req
            .header("authorization")
            .and_then(|a| match a.split_once(' ') {
                Some((s, t)) if s.eq_ignore_ascii_case("bearer") => Some(t.trim().to_string()),
                _ => None,
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| YErr::unauthorized("missing_token"))?;
        st.verify(&bearer, req.now_us)?;
        if req.op == Op::Enterprises {
            return self.enterprises(st, req, &sw);
        }
        if !st.capability {
            return Err(YErr::new(
                403,
                "forbidden_capability_scope",
                "Insufficient capability for this operation.",
            )
            .reason("missing_capability"));
        }
        match req.op {
            Op::List => self.list(st, req, &sw),
            Op::Get => {
                known_query(req, &[], &sw)?;
                let c = client(st, req.param(0))?;
                Ok(client_reply(200, c, st.enterprise_id))
            }
            Op::Patch => self.patch(st, req, &sw),
            Op::Create | Op::Suspend | Op::Reactivate => self.idempotent(st, req, &sw),
            Op::Token | Op::Enterprises => Err(YErr::not_found()),
        }
    }

    fn token(&self, st: &mut State, req: &ApiRequest<'_, Op>) -> Result<Reply, YErr> {
        let m = object(
            req.body,
            &["client_id", "client_secret", "grant_type", "scope"],
        )?;
        let get = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(id), Some(secret), Some(grant)) =
            (get("client_id"), get("client_secret"), get("grant_type"))
        else {
            return Err(YErr::invalid(
                "Invalid request: client_id, client_secret and grant_type are required.",
                "missing_required_field",
            ));
        };
        if grant != "client_credentials" {
            return Err(YErr::invalid(
                "Invalid request: grant_type must be client_credentials.",
                "unsupported_grant_type",
            ));
        }
        if id != st.client_id || secret != st.client_secret {
            return Err(YErr::unauthorized("invalid_client"));
        }
        if st.secret_revoked {
            return Err(YErr::unauthorized("credentials_revoked"));
        }
        let token = st.issue_token(req.now_us, self.token_ttl_secs);
        Ok(Reply::json(
            200,
            &json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_ttl_secs,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            }),
        ))
    }

    fn enterprises(
        &self,
        st: &State,
        req: &ApiRequest<'_, Op>,
        sw: &Assumptions,
    ) -> Result<Reply, YErr> {
        page_size(req, sw)?;
        known_query(req, &["page_size"], sw)?;
        requested_page(req, sw)?;
        Ok(Reply::json(
            200,
            &json!({
                "items": [{
                    "id": st.enterprise_id,
                    "resource": "enterprise",
                    "display_name": "Simulated Enterprise",
                    "admission_state": "admitted",
                    "restriction_state": "unrestricted",
                    "etag": format!("W/\"{}\"", &st.enterprise_id.simple().to_string()[..8]),
                    "created_at": fmt_secs(st.enterprise_created_us),
                }],
                "next_page_token": null,
            }),
        ))
    }

    fn list(&self, st: &State, req: &ApiRequest<'_, Op>, sw: &Assumptions) -> Result<Reply, YErr> {
        let size = page_size(req, sw)?;
        known_query(req, &["page_size", "external_id", "status"], sw)?;
        let q = req.query_pairs();
        let first = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let after = requested_page(req, sw)?.unwrap_or(0);
        let ext = first("external_id");
        let status = first("status");
        let mut hits: Vec<&YClient> = st
            .clients
            .values()
            .filter(|c| c.seq > after)
            .filter(|c| {
                ext.as_ref()
                    .is_none_or(|e| c.external_id.as_ref() == Some(e))
            })
            .filter(|c| status.as_ref().is_none_or(|s| &c.status == s))
            .collect();
        hits.sort_by_key(|c| c.seq);
        let more = hits.len() > size;
        hits.truncate(size);
        let next = if more {
            hits.last().map(|c| page_token(c.seq))
        } else {
            None
        };
        Ok(Reply::json(
            200,
            &json!({
                "items": hits.iter().map(|c| c.json(st.enterprise_id)).collect::<Vec<_>>(),
                "next_page_token": next,
            }),
        ))
    }

    fn patch(
        &self,
        st: &mut State,
        req: &ApiRequest<'_, Op>,
        sw: &Assumptions,
    ) -> Result<Reply, YErr> {
        let m = object(req.body, &["display_name", "metadata"])?;
        let name = opt_string(&m, "display_name", 1, 200)?;
        let merge = sw.patch_metadata == PatchMetadata::Merge;
        let meta = if merge {
            metadata_merge(&m)?
        } else {
            metadata(&m)?.map(|md| md.into_iter().map(|(k, v)| (k, Some(v))).collect())
        };
        if name.is_none() && meta.is_none() {
            return Err(YErr::invalid(
                "Invalid request: send display_name and/or metadata.",
                "missing_required_field",
            ));
        }
        let if_match = req
            .header("if-match")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                YErr::invalid(
                    "Invalid request: If-Match is required on PATCH.",
                    "missing_if_match",
                )
            })?;
        let enterprise = st.enterprise_id;
        let c = client_mut(st, req.param(0))?;
        check_if_match(c, &if_match)?;
        let mut changed = false;
        if let Some(n) = name.filter(|n| *n != c.display_name) {
            c.display_name = n;
            changed = true;
        }
        if let Some(changes) = meta {
            let next: BTreeMap<String, String> = if merge {
                let mut next = c.metadata.clone();
                for (k, v) in changes {
                    match v {
                        Some(v) => next.insert(k, v),
                        None => next.remove(&k),
                    };
                }
                next
            } else {
                changes
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect()
            };
            if next != c.metadata {
                c.metadata = next;
                changed = true;
            }
        }
        if changed {
            c.version += 1;
            c.updated_us = req.now_us;
        }
        Ok(client_reply(200, c, enterprise))
    }

    /// Create, suspend and reactivate: `Idempotency-Key` honoured (same key + same request →
    /// the stored answer; a different request → 409 `idempotency_conflict`).
    fn idempotent(
        &self,
        st: &mut State,
        req: &ApiRequest<'_, Op>,
        sw: &Assumptions,
    ) -> Result<Reply, YErr> {
        let key = match req.header("idempotency-key") {
            Some(k)
                if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                return Err(YErr::invalid(
                    "Invalid request: Idempotency-Key must be 1 to 255 printable characters.",
                    "invalid_idempotency_key",
                ));
            }
            other => other,
        };
        let store_key = key.map(|k| format!("{}|{}|{k}", st.client_id, req.template));
        let fp = fingerprint(&[
            req.method.as_str().as_bytes(),
            req.path.as_bytes(),
            req.body,
        ]);
        if let Some(k) = &store_key {
            match st.idem.lookup(k, &fp, req.now_us, IDEMPOTENCY_WINDOW_US) {
                Lookup::Replay(s) => {
                    return Ok(Reply {
                        status: s.status,
                        body: s.body.clone().into_bytes().into(),
                        headers: vec![("idempotent-replayed", "true".into())],
                    });
                }
                Lookup::Conflict => {
                    return Err(YErr::new(
                        409,
                        "idempotency_conflict",
                        "Idempotency key conflict.",
                    )
                    .reason("key_payload_mismatch"));
                }
                Lookup::Miss => {}
            }
        }
        let out = match req.op {
            Op::Create => self.create(st, req, sw),
            Op::Suspend => self.transition(st, req, true, sw),
            _ => self.transition(st, req, false, sw),
        };
        let reply = out.unwrap_or_else(|e| e.reply());
        if let Some(k) = store_key
            && reply.status < 500
        {
            let body = String::from_utf8_lossy(&reply.body).into_owned();
            st.idem.insert(
                k,
                fp,
                Stored {
                    status: reply.status,
                    body,
                },
                req.now_us,
                IDEMPOTENCY_WINDOW_US,
            );
        }
        Ok(reply)
    }

    fn create(
        &self,
        st: &mut State,
        req: &ApiRequest<'_, Op>,
        sw: &Assumptions,
    ) -> Result<Reply, YErr> {
        let m = object(
            req.body,
            &["display_name", "external_id", "metadata", "scope_ref"],
        )?;
        let name = opt_string(&m, "display_name", 1, 200)?.ok_or_else(|| {
            YErr::invalid(
                "Invalid request: display_name is required.",
                "missing_required_field",
            )
        })?;
        let scope = opt_string(&m, "scope_ref", 1, 200)?.ok_or_else(|| {
            YErr::invalid(
                "Invalid request: scope_ref is required.",
                "missing_required_field",
            )
        })?;
        let ext = opt_string(&m, "external_id", 1, 128)?;
        let meta = metadata(&m)?.unwrap_or_default();
        let Some(ent) = scope
            .strip_prefix("enterprises/")
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            return Err(YErr::invalid(
                "Invalid request: scope_ref must be enterprises/<id>.",
                "invalid_field",
            ));
        };
        if ent != st.enterprise_id {
            return Err(YErr::new(
                403,
                "forbidden_capability_scope",
                "Insufficient capability for this operation.",
            )
            .reason("scope_not_permitted"));
        }
        if let Some(e) = &ext
            && sw.unique_external_id
            && st
                .clients
                .values()
                .any(|c| c.external_id.as_ref() == Some(e))
        {
            return Err(YErr::new(
                409,
                "state_conflict",
                "A client with this external_id already exists.",
            )
            .reason("external_id_taken"));
        }
        st.seq += 1;
        let c = YClient {
            id: Uuid::new_v4(),
            display_name: name,
            external_id: ext,
            metadata: meta,
            status: "active".into(),
            default_account: Uuid::new_v4(),
            version: 1,
            created_us: req.now_us,
            updated_us: req.now_us,
            seq: st.seq,
            last_reason: None,
            hold: false,
            pending: None,
            transitions_accepted: 0,
        };
        let reply = client_reply(201, &c, st.enterprise_id);
        st.clients.insert(c.id, c);
        Ok(reply)
    }

    fn transition(
        &self,
        st: &mut State,
        req: &ApiRequest<'_, Op>,
        suspend: bool,
        sw: &Assumptions,
    ) -> Result<Reply, YErr> {
        let m = object(req.body, &["reason"])?;
        let reason = opt_string(&m, "reason", 0, 500)?;
        let if_match = req.header("if-match").filter(|v| !v.is_empty());
        let enterprise = st.enterprise_id;
        let c = client_mut(st, req.param(0))?;
        if let Some(im) = if_match {
            check_if_match(c, &im)?;
        }
        let (from, to) = if suspend {
            ("active", "suspended")
        } else {
            ("suspended", "active")
        };
        if c.status != from {
            let reason = if suspend {
                "already_suspended"
            } else {
                "not_suspended"
            };
            let message = format!("The client is {}; cannot move it to {to}.", c.status);
            return Err(match sw.state_conflict {
                StateConflict::Conflict => YErr::new(409, "state_conflict", message),
                StateConflict::NotAdmissible => YErr::new(422, "not_admissible", message),
            }
            .reason(reason));
        }
        if suspend && c.hold {
            return Err(
                YErr::new(422, "not_admissible", "Request is not admissible.")
                    .reason("pending_approvals"),
            );
        }
        c.transitions_accepted += 1;
        if let Lifecycle::Async { seconds } = sw.lifecycle {
            // Accepted, applied later: the answer shows the client as it still is.
            c.pending = Some(PendingTransition {
                to: to.into(),
                reason,
                due_us: req.now_us + i64::try_from(seconds).unwrap_or(86_400) * 1_000_000,
            });
            return Ok(client_reply(201, c, enterprise));
        }
        c.pending = None;
        c.status = to.into();
        c.last_reason = reason;
        c.version += 1;
        c.updated_us = req.now_us;
        Ok(client_reply(201, c, enterprise))
    }
}

fn page_size(req: &ApiRequest<'_, Op>, sw: &Assumptions) -> Result<usize, YErr> {
    let max = sw.max_page_size.max(1) as usize;
    match req
        .query_pairs()
        .into_iter()
        .find(|(k, _)| k == "page_size")
    {
        None => Ok(20.min(max)),
        Some((_, v)) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(YErr::invalid(
                format!("Invalid request: page_size must be 1 to {max}."),
                "invalid_field",
            )),
        },
    }
}

/// The query parameters that carry a page token (`--page-token-param`).
fn token_params(sw: &Assumptions) -> Vec<&str> {
    match &sw.page_token_param {
        Some(p) => vec![p.as_str()],
        None => vec!["page_token", "next_page_token"],
    }
}

/// The position a page token names, `None` without one.
fn requested_page(req: &ApiRequest<'_, Op>, sw: &Assumptions) -> Result<Option<u64>, YErr> {
    let q = req.query_pairs();
    let names = token_params(sw);
    match q.iter().find(|(k, _)| names.contains(&k.as_str())) {
        None => Ok(None),
        Some((k, t)) => parse_page_token(t).map(Some).ok_or_else(|| {
            YErr::invalid(
                format!("Invalid request: {k} is not valid."),
                "invalid_page_token",
            )
        }),
    }
}

/// With `--unknown-query reject`, a query parameter the route does not read is a 400.
fn known_query(req: &ApiRequest<'_, Op>, known: &[&str], sw: &Assumptions) -> Result<(), YErr> {
    if sw.unknown_query == UnknownQuery::Ignore {
        return Ok(());
    }
    let tokens = token_params(sw);
    match req
        .query_pairs()
        .into_iter()
        .find(|(k, _)| !known.contains(&k.as_str()) && !tokens.contains(&k.as_str()))
    {
        Some((k, _)) => Err(YErr::invalid(
            format!("Invalid request: unknown query parameter {k}."),
            "unknown_query_parameter",
        )),
        None => Ok(()),
    }
}

/// `metadata` of a merge PATCH: string values set a key, `null` removes it.
fn metadata_merge(
    m: &Map<String, Value>,
) -> Result<Option<BTreeMap<String, Option<String>>>, YErr> {
    let Some(v) = m.get("metadata") else {
        return Ok(None);
    };
    let Value::Object(o) = v else {
        return Err(YErr::invalid(
            "Invalid request: metadata must be an object of strings.",
            "invalid_field",
        ));
    };
    let mut strings = Map::new();
    let mut out = BTreeMap::new();
    for (k, v) in o {
        if v.is_null() {
            out.insert(k.clone(), None);
        } else {
            strings.insert(k.clone(), v.clone());
        }
    }
    let checked = metadata(&Map::from_iter([(
        "metadata".to_string(),
        Value::Object(strings),
    )]))?;
    out.extend(
        checked
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, Some(v))),
    );
    Ok(Some(out))
}

fn check_if_match(c: &YClient, if_match: &str) -> Result<(), YErr> {
    let etag = c.etag();
    let strip = |s: &str| {
        s.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    };
    let ok = if_match.trim() == "*" || if_match.split(',').any(|t| strip(t) == strip(&etag));
    if ok {
        Ok(())
    } else {
        Err(YErr::new(
            412,
            "precondition_failed",
            "If-Match check failed: the resource has changed; re-read it.",
        )
        .reason("etag_mismatch"))
    }
}

fn client<'a>(st: &'a State, raw: &str) -> Result<&'a YClient, YErr> {
    Uuid::parse_str(raw)
        .ok()
        .and_then(|id| st.clients.get(&id))
        .ok_or_else(YErr::not_found)
}

fn client_mut<'a>(st: &'a mut State, raw: &str) -> Result<&'a mut YClient, YErr> {
    Uuid::parse_str(raw)
        .ok()
        .and_then(|id| st.clients.get_mut(&id))
        .ok_or_else(YErr::not_found)
}

fn client_reply(status: u16, c: &YClient, enterprise: Uuid) -> Reply {
    Reply::json(status, &c.json(enterprise)).with_header("etag", c.etag())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilityBody {
    clients: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    hold: bool,
}

/// The client a control route's `:client_id` names.
fn client_param<'a>(st: &'a mut State, params: &[String]) -> Result<&'a mut YClient, ControlError> {
    params
        .first()
        .and_then(|p| Uuid::parse_str(p).ok())
        .and_then(|id| st.clients.get_mut(&id))
        .ok_or_else(|| ControlError::not_found("client"))
}

/// An out-of-band edit (someone in YouHodler's console): no If-Match, no faults, a new ETag.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    display_name: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
    status: Option<String>,
}

impl App for YouHodler {
    type State = State;
    type Op = Op;
    type ControlOp = Ctl;

    fn routes(&self) -> &'static [Route<Op>] {
        ROUTES
    }

    fn handle(&self, st: &mut State, req: &ApiRequest<'_, Op>) -> Reply {
        self.dispatch(st, req).unwrap_or_else(|e| e.reply())
    }

    fn assumptions(&self) -> Value {
        self.switches.view()
    }

    fn set_assumptions(&self, body: &[u8]) -> Result<Value, ControlError> {
        self.switches.patch(body)
    }

    fn reject(&self, rejection: &Rejection, _rid: &str) -> Reply {
        let e = match rejection {
            Rejection::NotFound { .. } => {
                YErr::new(404, "resource_not_found", "Resource not found.")
                    .reason("route_not_found")
            }
            Rejection::MethodNotAllowed { .. } => {
                YErr::new(405, "method_not_allowed", "Method not allowed.")
            }
            Rejection::PayloadTooLarge => {
                YErr::new(413, "payload_too_large", "Request body exceeds 1 MiB.")
            }
            Rejection::UnsupportedMediaType => YErr::new(
                415,
                "unsupported_media_type",
                "Request bodies must be application/json.",
            ),
            Rejection::BodyUnreadable(_) => YErr::invalid("Invalid request.", "malformed_body"),
            Rejection::Injected5xx(500) => {
                YErr::new(500, "internal_error", "Internal error (injected fault).")
            }
            Rejection::Injected5xx(502) | Rejection::ResponseLost => YErr::new(
                502,
                "upstream_error",
                "An upstream service returned an unexpected error.",
            ),
            Rejection::Injected5xx(s) => YErr::new(
                *s,
                "temporarily_unavailable",
                "Service temporarily unavailable.",
            )
            .reason("downstream_rbac_unavailable"),
            Rejection::InjectedRateLimit => {
                return Reply::json(
                    429,
                    &json!({"code": "rate_limited", "message": "Too many requests.", "details": {"retry_after_ms": RETRY_AFTER_MS}}),
                );
            }
        };
        e.reply()
    }

    fn control_routes(&self) -> &'static [Route<Ctl>] {
        CONTROL_ROUTES
    }

    fn control(
        &self,
        st: &mut State,
        op: Ctl,
        params: &[String],
        body: &[u8],
        now: i64,
    ) -> Result<Value, ControlError> {
        match op {
            Ctl::RevokeSecret => {
                st.secret_revoked = true;
                st.secret_generation += 1;
                Ok(json!({ "secretRevoked": true }))
            }
            Ctl::RestoreSecret => {
                st.secret_revoked = false;
                Ok(json!({ "secretRevoked": false }))
            }
            Ctl::Capability => {
                let b: CapabilityBody = parse_control_body(body)?;
                st.capability = b.clients;
                Ok(json!({ "clients": st.capability }))
            }
            Ctl::Hold => {
                let b: HoldBody = parse_control_body(body)?;
                let enterprise = st.enterprise_id;
                let c = client_param(st, params)?;
                c.hold = b.hold;
                Ok(c.json(enterprise))
            }
            Ctl::Edit => {
                let b: EditBody = parse_control_body(body)?;
                let enterprise = st.enterprise_id;
                let c = client_param(st, params)?;
                if let Some(name) = b.display_name {
                    c.display_name = name;
                }
                if let Some(metadata) = b.metadata {
                    c.metadata = metadata;
                }
                if let Some(status) = b.status {
                    c.status = status;
                    c.pending = None;
                }
                c.version += 1;
                c.updated_us = now;
                Ok(c.json(enterprise))
            }
        }
    }

    fn reset(&self, st: &mut State, now: i64) {
        let mut fresh = State::fresh(
            st.client_id.clone(),
            st.client_secret.clone(),
            st.enterprise_id,
            now,
        );
        fresh.signing_key = st.signing_key.clone();
        fresh.secret_generation = st.secret_generation;
        *st = fresh;
    }

    /// Never includes the client secret, the signing key or tokens.
    fn state_view(&self, st: &State, now: i64) -> Vec<u8> {
        let mut cs: Vec<&YClient> = st.clients.values().collect();
        cs.sort_by_key(|c| c.seq);
        let clients: Vec<Value> = cs
            .iter()
            .map(|c| {
                let mut v = c.json(st.enterprise_id);
                v["last_reason"] = json!(c.last_reason);
                v["hold"] = json!(c.hold);
                v["pending_transition"] = json!(c.pending.as_ref().map(|p| json!({
                    "to": p.to, "due_at": fmt_secs(p.due_us), "due": p.due_us <= now,
                })));
                v["transitions_accepted"] = json!(c.transitions_accepted);
                v
            })
            .collect();
        serde_json::to_vec(&json!({
            "enterpriseId": st.enterprise_id,
            "clientId": st.client_id,
            "secretRevoked": st.secret_revoked,
            "capabilityClients": st.capability,
            "tokensIssued": st.tokens_issued,
            "idempotencyKeys": st.idem.len(),
            "clients": clients,
        }))
        .unwrap_or_default()
    }
}

/// How to run the simulator.
#[derive(Clone, Debug)]
pub struct YouHodlerConfig {
    pub kit: KitConfig,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub enterprise_id: Option<Uuid>,
    pub token_ttl_secs: u64,
    /// The assumption switches at start.
    pub assumptions: Assumptions,
}

impl Default for YouHodlerConfig {
    fn default() -> Self {
        Self {
            kit: KitConfig::default(),
            client_id: None,
            client_secret: None,
            enterprise_id: None,
            token_ttl_secs: 3600,
            assumptions: Assumptions::default(),
        }
    }
}

pub struct Started {
    pub sim: RunningSim<YouHodler>,
    pub client_id: String,
    pub client_secret: String,
    pub enterprise_id: Uuid,
}

impl Started {
    pub fn base_url(&self) -> String {
        self.sim.base_url()
    }
}

/// Loads the state file (if any), applies the flags and serves.
pub async fn spawn(cfg: YouHodlerConfig) -> Result<Started, KitError> {
    if cfg.token_ttl_secs == 0 {
        return Err(KitError::Config(
            "--token-ttl must be at least 1 second".into(),
        ));
    }
    let loaded: Option<State> = match &cfg.kit.state_file {
        Some(p) => sim_kit::store::load(p)?,
        None => None,
    };
    let now = sim_kit::Clock::default().now_us();
    let mut st = loaded.unwrap_or_else(|| {
        State::fresh(
            cfg.client_id
                .clone()
                .unwrap_or_else(|| format!("sa_{}", random_string(20))),
            cfg.client_secret
                .clone()
                .unwrap_or_else(|| random_string(40)),
            cfg.enterprise_id.unwrap_or_else(Uuid::new_v4),
            now,
        )
    });
    if let Some(id) = &cfg.client_id {
        st.client_id = id.clone();
    }
    if let Some(s) = &cfg.client_secret {
        st.client_secret = s.clone();
    }
    if let Some(e) = cfg.enterprise_id {
        st.enterprise_id = e;
    }
    let (client_id, client_secret, enterprise_id) = (
        st.client_id.clone(),
        st.client_secret.clone(),
        st.enterprise_id,
    );
    let sim = sim_kit::serve(
        YouHodler {
            token_ttl_secs: cfg.token_ttl_secs,
            switches: Switches::new(cfg.assumptions),
        },
        st,
        cfg.kit,
    )
    .await?;
    Ok(Started {
        sim,
        client_id,
        client_secret,
        enterprise_id,
    })
}
