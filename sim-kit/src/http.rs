//! One HTTP request end to end: routing, fault injection, body limits, the app's handler,
//! commit-then-lose, counters and the common headers.
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::faults::{Action, Class};
use crate::router::{self, Miss};
use crate::{App, Sim, control, lock, request_id};

/// Request bodies larger than this are refused (413).
pub const MAX_BODY: usize = 1024 * 1024;

/// Returned to hyper to abort the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
pub struct Dropped;

/// A response before the common headers (`content-type`, `x-request-id`) are added.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            body: Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// Errors the kit detects before (or instead of) the app's handler; the app renders them
/// in its own envelope with [`App::reject`].
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// No route for the path (`(unmatched)` in the counters).
    NotFound {
        method: String,
        path: String,
    },
    /// The path exists with other methods; the kit adds `Allow`.
    MethodNotAllowed {
        allowed: Vec<&'static str>,
    },
    PayloadTooLarge,
    /// A body that is not `application/json` (or `+json`).
    UnsupportedMediaType,
    BodyUnreadable(String),
    /// Injected 500, 502 or 503 before executing.
    Injected5xx(u16),
    /// Injected 429 before executing.
    InjectedRateLimit,
    /// Executed and committed, then answered 502.
    ResponseLost,
}

/// One API request as the app's handler sees it.
pub struct ApiRequest<'a, Op> {
    pub op: Op,
    pub template: &'static str,
    pub params: &'a [String],
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub request_id: &'a str,
    /// The simulator clock at the start of the request.
    pub now_us: i64,
}

impl<Op> ApiRequest<'_, Op> {
    /// A header decoded leniently and trimmed; `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        header(self.headers, name)
    }

    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }

    /// Percent-decoded query pairs in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// True when the body is empty or only whitespace.
    pub fn body_is_empty(&self) -> bool {
        self.body.iter().all(u8::is_ascii_whitespace)
    }
}

/// A header decoded leniently and trimmed; `None` when absent.
pub fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
}

const UNMATCHED: &str = "(unmatched)";

/// Counts the reply and renders it with the common headers (`content-type`, `x-request-id`)
/// followed by the reply's own.
pub fn finish(
    counters: &crate::Counters,
    method: &Method,
    template: &'static str,
    reply: Reply,
    rid: &str,
) -> Response<Full<Bytes>> {
    counters.count(method, template, reply.status);
    let mut b = Response::builder()
        .status(reply.status)
        .header("content-type", "application/json")
        .header("x-request-id", rid);
    for (k, v) in reply.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(reply.body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Reads a request body within [`MAX_BODY`]; a non-blank body must be JSON.
pub async fn read_body(req: Request<Incoming>) -> Result<Bytes, Rejection> {
    let declared = header(req.headers(), "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(Rejection::PayloadTooLarge);
    }
    let content_type = header(req.headers(), "content-type");
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Rejection::PayloadTooLarge);
        }
        Err(e) => return Err(Rejection::BodyUnreadable(e.to_string())),
    };
    let is_json = content_type.as_deref().is_some_and(|ct| {
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        mime == "application/json" || mime.ends_with("+json")
    });
    if bytes.iter().all(u8::is_ascii_whitespace) || is_json {
        Ok(bytes)
    } else {
        Err(Rejection::UnsupportedMediaType)
    }
}

pub(crate) async fn handle<A: App>(
    sim: Arc<Sim<A>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let rid = request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_string();

    if path == "/_sim" || path.starts_with("/_sim/") {
        if sim.control {
            let body = read_body(req).await;
            let (template, reply) = control::handle(&sim, &method, &path, body);
            return Ok(finish(&sim.counters, &method, template, reply, &rid));
        }
        let mut r = sim.app.reject(
            &Rejection::NotFound {
                method: method.to_string(),
                path,
            },
            &rid,
        );
        sim.app.decorate(None, &mut r);
        return Ok(finish(&sim.counters, &method, UNMATCHED, r, &rid));
    }

    let matched = match router::route(sim.app.routes(), &method, &path) {
        Ok(m) => m,
        Err(miss) => {
            let (rejection, allow) = match miss {
                Miss::NotFound => (
                    Rejection::NotFound {
                        method: method.to_string(),
                        path,
                    },
                    None,
                ),
                Miss::MethodNotAllowed(allowed) => {
                    let allow = allowed.join(", ");
                    (Rejection::MethodNotAllowed { allowed }, Some(allow))
                }
            };
            let mut r = sim.app.reject(&rejection, &rid);
            if let Some(a) = allow {
                r.headers.push(("allow", a));
            }
            sim.app.decorate(None, &mut r);
            return Ok(finish(&sim.counters, &method, UNMATCHED, r, &rid));
        }
    };
    let template = matched.template;
    let op = Some(matched.op);
    let reject = |rej: Rejection| {
        let mut r = sim.app.reject(&rej, &rid);
        sim.app.decorate(op, &mut r);
        r
    };

    sim.counters.arrived(&method, template, req.headers());
    // Faults are decided before anything runs; /_sim/ routes never get them.
    let plan = sim.faults().plan(Class::of(&method));
    if let Some(d) = plan.latency {
        sim.counters.fault_injected();
        tokio::time::sleep(d).await;
    }
    match plan.action {
        Action::Reset => {
            sim.counters.fault_injected();
            sim.counters.count(&method, template, 0);
            return Err(Dropped);
        }
        Action::Error5xx(status) => {
            sim.counters.fault_injected();
            let r = reject(Rejection::Injected5xx(status));
            return Ok(finish(&sim.counters, &method, template, r, &rid));
        }
        Action::RateLimited => {
            sim.counters.fault_injected();
            let r = reject(Rejection::InjectedRateLimit);
            return Ok(finish(&sim.counters, &method, template, r, &rid));
        }
        Action::Proceed | Action::LoseResponse(_) => {}
    }

    let query = req.uri().query().map(str::to_string);
    let headers = req.headers().clone();
    let reply = match read_body(req).await {
        Err(rej) => reject(rej),
        Ok(body) => {
            let now_us = sim.clock.now_us();
            let api = ApiRequest {
                op: matched.op,
                template,
                params: &matched.params,
                method: &method,
                path: &path,
                query: query.as_deref(),
                headers: &headers,
                body: &body,
                request_id: &rid,
                now_us,
            };
            let mut r = {
                let mut st = lock(&sim.state);
                sim.app.handle(&mut st, &api)
            };
            if method != Method::GET && method != Method::HEAD {
                sim.dirty.notify_one();
            }
            sim.app.decorate(op, &mut r);
            r
        }
    };

    if let Action::LoseResponse(drop) = plan.action {
        sim.counters.fault_injected();
        if (200..300).contains(&reply.status) {
            sim.counters.lost_after_success(&method, template);
        }
        if drop {
            sim.counters.count(&method, template, 0);
            return Err(Dropped);
        }
        let r = reject(Rejection::ResponseLost);
        return Ok(finish(&sim.counters, &method, template, r, &rid));
    }
    Ok(finish(&sim.counters, &method, template, reply, &rid))
}
