//! One HTTP request end to end: routing, fault injection, body limits, headers, counters.
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::error::ApiError;
use crate::faults::Action;
use crate::ratelimit::Class;
use crate::router::{self, Miss};
use crate::{Shared, api, control, ids, lock};

pub const MAX_BODY: usize = 1024 * 1024;

/// Returned to hyper to abort the connection without a response (connection-reset faults).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
pub struct Dropped;

/// A response before the common headers are added.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            body: Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
            headers: Vec::new(),
        }
    }
    pub fn error(err: &ApiError, request_id: &str) -> Reply {
        let mut r = Reply::json(err.status, &err.body(request_id));
        if let Some(s) = err.retry_after {
            r.headers.push(("retry-after", s.to_string()));
        }
        r
    }
}

/// The request headers the simulator reads, decoded leniently (bad bytes fail validation later).
pub struct ReqHeaders {
    pub bearer: Option<String>,
    pub idempotency_key: Option<String>,
    pub acting_org: Option<String>,
    /// An `X-Api-Key` header was sent (refused: the NEW docs accept only Bearer).
    pub x_api_key: bool,
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
}

impl ReqHeaders {
    fn from(h: &HeaderMap) -> ReqHeaders {
        let bearer = header(h, "authorization").map(|a| match a.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                rest.trim().to_string()
            }
            _ => String::new(),
        });
        ReqHeaders {
            bearer,
            idempotency_key: header(h, "idempotency-key"),
            acting_org: header(h, "x-layers-organization"),
            x_api_key: h.contains_key("x-api-key"),
        }
    }
}

fn count(shared: &Shared, method: &Method, template: &'static str, status: u16) {
    *lock(&shared.counters)
        .entry((method.clone(), template, status))
        .or_insert(0) += 1;
}

fn finish(
    shared: &Shared,
    method: &Method,
    template: &'static str,
    class: Option<Class>,
    reply: Reply,
    rid: &str,
) -> Response<Full<Bytes>> {
    count(shared, method, template, reply.status);
    let mut b = Response::builder()
        .status(reply.status)
        .header("content-type", "application/json")
        .header("x-request-id", rid);
    if let Some(c) = class {
        b = b.header("x-ratelimit-endpoint-class", c.header_name());
    }
    for (k, v) in reply.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(reply.body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn finish_error(
    shared: &Shared,
    method: &Method,
    template: &'static str,
    class: Option<Class>,
    err: &ApiError,
    rid: &str,
) -> Response<Full<Bytes>> {
    finish(shared, method, template, class, Reply::error(err, rid), rid)
}

fn fault_injected(shared: &Shared) {
    shared.faults_injected.fetch_add(1, Ordering::Relaxed);
}

pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let rid = ids::request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let unmatched = "(unmatched)";
    let matched = match router::route(&method, &path) {
        Ok(m) if m.op.is_control() && !shared.control => Err(Miss::NotFound),
        other => other,
    };
    let matched = match matched {
        Ok(m) => m,
        Err(Miss::NotFound) => {
            let err = ApiError::new(404, "NOT_FOUND", format!("no route for {method} {path}"));
            return Ok(finish_error(&shared, &method, unmatched, None, &err, &rid));
        }
        Err(Miss::MethodNotAllowed(allowed)) => {
            let err = ApiError::new(
                405,
                "METHOD_NOT_ALLOWED",
                format!(
                    "{method} is not allowed on {path}; allowed: {}",
                    allowed.join(", ")
                ),
            );
            let mut r = Reply::error(&err, &rid);
            r.headers.push(("allow", allowed.join(", ")));
            return Ok(finish(&shared, &method, unmatched, None, r, &rid));
        }
    };
    let control = matched.op.is_control();
    let class = Class::of(&method);
    let class_hdr = (!control).then_some(class);
    let template = matched.template;

    // Faults are decided before anything runs; /_sim/ routes never get them.
    let plan = (!control).then(|| {
        shared
            .faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .plan(class)
    });
    if let Some(plan) = plan {
        if let Some(d) = plan.latency {
            fault_injected(&shared);
            tokio::time::sleep(d).await;
        }
        match plan.action {
            Action::Reset => {
                fault_injected(&shared);
                count(&shared, &method, template, 0);
                return Err(Dropped);
            }
            Action::Error5xx(status) => {
                fault_injected(&shared);
                let code = match status {
                    500 => "INTERNAL_ERROR",
                    502 => "BAD_GATEWAY",
                    _ => "SERVICE_UNAVAILABLE",
                };
                let err = ApiError::new(
                    status,
                    code,
                    "injected fault: transient server error, retry",
                );
                return Ok(finish_error(
                    &shared, &method, template, class_hdr, &err, &rid,
                ));
            }
            Action::RateLimited => {
                fault_injected(&shared);
                let mut err =
                    ApiError::new(429, "RATE_LIMITED", "rate limit exceeded (injected fault)");
                err.retry_after = Some(1);
                return Ok(finish_error(
                    &shared, &method, template, class_hdr, &err, &rid,
                ));
            }
            Action::Proceed | Action::LoseResponse(_) => {}
        }
    }

    let headers = ReqHeaders::from(req.headers());
    let content_type = header(req.headers(), "content-type");
    let declared_len = header(req.headers(), "content-length").and_then(|v| v.parse::<u64>().ok());
    let body = if declared_len.is_some_and(|n| n > MAX_BODY as u64) {
        Err(ApiError::new(
            413,
            "PAYLOAD_TOO_LARGE",
            "request body exceeds 1 MiB",
        ))
    } else {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
                413,
                "PAYLOAD_TOO_LARGE",
                "request body exceeds 1 MiB",
            )),
            Err(e) => Err(ApiError::validation(format!(
                "cannot read request body: {e}"
            ))),
        }
    };
    let body = body.and_then(|b| {
        let is_json = content_type.as_deref().is_some_and(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        });
        if b.iter().all(u8::is_ascii_whitespace) || is_json {
            Ok(b)
        } else {
            Err(ApiError::new(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "request bodies must be JSON with Content-Type: application/json",
            ))
        }
    });
    let slow_commit = plan.and_then(|p| p.slow_commit);
    if slow_commit.is_some() {
        fault_injected(&shared);
    }
    let reply = match body {
        Err(err) => Reply::error(&err, &rid),
        Ok(body) if control => control::handle(&shared, &matched, query.as_deref(), &body, &rid),
        Ok(body) => {
            api::handle(
                &shared,
                &matched,
                &method,
                &path,
                query.as_deref(),
                &headers,
                &body,
                &rid,
                slow_commit,
            )
            .await
        }
    };

    if let Some(Action::LoseResponse(drop)) = plan.map(|p| p.action) {
        fault_injected(&shared);
        if drop {
            count(&shared, &method, template, 0);
            return Err(Dropped);
        }
        let err = ApiError::new(502, "BAD_GATEWAY", "injected fault: the response was lost");
        return Ok(finish(
            &shared,
            &method,
            template,
            class_hdr,
            Reply::error(&err, &rid),
            &rid,
        ));
    }
    Ok(finish(&shared, &method, template, class_hdr, reply, &rid))
}
