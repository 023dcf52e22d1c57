//! One HTTP request end to end: routing, fault injection, body limits, headers, counters.
//! Body reading, the common headers and the counters are sim-kit's; the Layers envelope,
//! the endpoint-class header, `/_sim/` in the route table and the slow commit are Layers'.
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use sim_kit::{Dropped, Rejection, header};

use crate::error::ApiError;
use crate::faults::Action;
use crate::ratelimit::{Class, class_name};
use crate::router::{self, Miss};
use crate::{Shared, api, control, ids};

pub use sim_kit::Reply;

/// The request headers the simulator reads, decoded leniently (bad bytes fail validation later).
#[derive(Clone)]
pub struct ReqHeaders {
    pub bearer: Option<String>,
    pub idempotency_key: Option<String>,
    pub acting_org: Option<String>,
    /// An `X-Api-Key` header was sent (refused: the NEW docs accept only Bearer).
    pub x_api_key: bool,
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

/// sim-kit's body refusals in the Layers envelope.
fn body_error(rejection: Rejection) -> ApiError {
    match rejection {
        Rejection::PayloadTooLarge => {
            ApiError::new(413, "PAYLOAD_TOO_LARGE", "request body exceeds 1 MiB")
        }
        Rejection::UnsupportedMediaType => ApiError::new(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "request bodies must be JSON with Content-Type: application/json",
        ),
        Rejection::BodyUnreadable(e) => {
            ApiError::validation(format!("cannot read request body: {e}"))
        }
        other => ApiError::validation(format!("request body refused: {other:?}")),
    }
}

fn finish(
    shared: &Shared,
    method: &Method,
    template: &'static str,
    class: Option<Class>,
    mut reply: Reply,
    rid: &str,
) -> Response<Full<Bytes>> {
    if let Some(c) = class {
        reply
            .headers
            .insert(0, ("x-ratelimit-endpoint-class", class_name(c).into()));
    }
    sim_kit::finish(&shared.counters, method, template, reply, rid)
}

fn finish_error(
    shared: &Shared,
    method: &Method,
    template: &'static str,
    class: Option<Class>,
    err: &ApiError,
    rid: &str,
) -> Response<Full<Bytes>> {
    finish(shared, method, template, class, err.reply(rid), rid)
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
            let mut r = err.reply(&rid);
            r.headers.push(("allow", allowed.join(", ")));
            return Ok(finish(&shared, &method, unmatched, None, r, &rid));
        }
    };
    let control = matched.op.is_control();
    let class = Class::of(&method);
    let class_hdr = (!control).then_some(class);
    let template = matched.template;
    let counters = &shared.counters;

    if !control {
        counters.arrived(&method, template, req.headers());
    }
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
            counters.fault_injected();
            tokio::time::sleep(d).await;
        }
        match plan.action {
            Action::Reset => {
                counters.fault_injected();
                counters.count(&method, template, 0);
                return Err(Dropped);
            }
            Action::Error5xx(status) => {
                counters.fault_injected();
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
                counters.fault_injected();
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
    let body = sim_kit::read_body(req).await.map_err(body_error);
    let slow_commit = plan.and_then(|p| p.slow_commit);
    if slow_commit.is_some() {
        counters.fault_injected();
    }
    let reply = match body {
        Err(err) => err.reply(&rid),
        Ok(body) if control => control::handle(&shared, &matched, query.as_deref(), &body, &rid),
        Ok(body) => {
            let call = ApiCall {
                shared: shared.clone(),
                matched: matched.clone(),
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                headers,
                body,
                rid: rid.clone(),
            };
            if plan.is_some_and(|p| p.late_commit) {
                call.late_commit(slow_commit).await;
                counters.count(&method, template, 0);
                return Err(Dropped);
            }
            call.run(api::Hold {
                slow_commit,
                claimed: None,
            })
            .await
        }
    };

    if let Some(Action::LoseResponse(drop)) = plan.map(|p| p.action) {
        counters.fault_injected();
        if drop {
            counters.count(&method, template, 0);
            return Err(Dropped);
        }
        let err = ApiError::new(502, "BAD_GATEWAY", "injected fault: the response was lost");
        return Ok(finish_error(
            &shared, &method, template, class_hdr, &err, &rid,
        ));
    }
    Ok(finish(&shared, &method, template, class_hdr, reply, &rid))
}

/// One API request, owned, so the late-commit fault can run it in a task of its own.
struct ApiCall {
    shared: Arc<Shared>,
    matched: router::Matched,
    method: Method,
    path: String,
    query: Option<String>,
    headers: ReqHeaders,
    body: Bytes,
    rid: String,
}

impl ApiCall {
    async fn run(&self, hold: api::Hold) -> Reply {
        api::handle(
            &self.shared,
            &self.matched,
            &self.method,
            &self.path,
            self.query.as_deref(),
            &self.headers,
            &self.body,
            &self.rid,
            hold,
        )
        .await
    }

    /// The late-commit fault: the request runs on in its own task (held in flight for
    /// `slow_commit`, then executed and committed) while the caller's connection is closed.
    /// Returns once the request holds its in-flight claim (or has finished), so a retry that
    /// follows the closed connection always finds it in flight or done.
    async fn late_commit(self, slow_commit: Option<std::time::Duration>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let reply = self
                .run(api::Hold {
                    slow_commit,
                    claimed: Some(tx),
                })
                .await;
            tracing::debug!(
                status = reply.status,
                "late commit done (the caller was gone)"
            );
        });
        let _ = rx.await;
    }
}
