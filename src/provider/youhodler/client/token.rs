//! The bearer token: fetched with the client credentials, cached, shared by every caller
//! (one refresh at a time), renewed before it expires or when the API refuses it.

use super::*;

/// A token is replaced when less than max(this, 10 % of its lifetime) remains (at most half
/// its lifetime, so a short-lived token is still used).
const MIN_REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// Lifetime assumed when the token answer has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// Which token a request needs.
#[derive(Clone, Copy, Debug)]
pub(super) enum Need {
    /// The cached one while it is not due for refresh.
    Cached,
    /// Not the one of this generation: the API refused it.
    Replacing(u64),
    /// One issued after the call started (the health check proves the credentials now).
    Fresh,
}

struct CachedToken {
    value: Secret,
    generation: u64,
    refresh_at: Instant,
}

/// The token and what the last fetch said; behind one async mutex, so concurrent callers
/// share one refresh and the outcome of it.
#[derive(Default)]
pub(super) struct TokenSlot {
    current: Option<CachedToken>,
    generations: u64,
    fetches: u64,
    /// The token endpoint's last 401, cleared by the next issued token.
    refused: Option<ApiFailure>,
}

impl YouhodlerClient {
    /// A bearer token and its generation. Callers queue on one lock: whoever finds the token
    /// due fetches it, the others use that one (or get that refusal) — one request, however
    /// many callers.
    pub(super) async fn bearer(&self, need: Need) -> Result<(Secret, u64), ProviderError> {
        let seen = self.fetches_done.load(Ordering::Acquire);
        let mut slot = self.token.lock().await;
        let fetched_meanwhile = slot.fetches > seen;
        if let Some(t) = &slot.current {
            let fresh_enough = Instant::now() < t.refresh_at;
            let usable = match need {
                Need::Cached => fresh_enough,
                Need::Replacing(refused) => t.generation != refused && fresh_enough,
                Need::Fresh => fetched_meanwhile,
            };
            if usable {
                return Ok((t.value.clone(), t.generation));
            }
        }
        if fetched_meanwhile && let Some(f) = &slot.refused {
            return Err(ProviderError::Unauthenticated(f.clone()));
        }
        // Boxed: the token request goes through `send`, which calls here.
        let outcome = Box::pin(self.fetch_token()).await;
        slot.fetches += 1;
        self.fetches_done.store(slot.fetches, Ordering::Release);
        match outcome {
            Ok(t) => {
                slot.generations += 1;
                let generation = slot.generations;
                slot.current = Some(CachedToken {
                    value: t.0.clone(),
                    generation,
                    refresh_at: t.1,
                });
                slot.refused = None;
                Ok((t.0, generation))
            }
            Err(e) => {
                if let ProviderError::Unauthenticated(f) = &e {
                    slot.current = None;
                    slot.refused = Some(f.clone());
                }
                Err(e)
            }
        }
    }

    /// `POST /oauth/token` (client credentials): the token and when to replace it.
    async fn fetch_token(&self) -> Result<(Secret, Instant), ProviderError> {
        let asked_at = Instant::now();
        let mut call =
            Call::new(Method::POST, TOKEN_ROUTE, TOKEN_ROUTE.into()).json(&TokenRequest {
                client_id: &self.client_id,
                client_secret: self.client_secret.expose(),
                grant_type: "client_credentials",
            })?;
        call.bearer = false;
        // Issuing a token changes nothing the caller relies on: always safe to re-send.
        call.resend_safe = true;
        let answer = match self.send(&call).await {
            Ok(a) => a,
            Err(ProviderError::Unauthenticated(mut f)) => {
                f.message = format!(
                    "the client secret was refused: check the credentials Secret's clientId/clientSecret (service account {}; {})",
                    self.client_id, f.message
                );
                return Err(ProviderError::Unauthenticated(f));
            }
            Err(e) => return Err(e),
        };
        let t: TokenResponse = decode(TOKEN_ROUTE, &answer.body)?;
        if t.access_token.expose().is_empty()
            || t.token_type
                .as_deref()
                .is_some_and(|k| !k.eq_ignore_ascii_case("bearer"))
        {
            return Err(ProviderError::Decode {
                route: TOKEN_ROUTE.into(),
                detail: "the token answer has no bearer access_token".into(),
            });
        }
        let lifetime = t
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let margin = MIN_REFRESH_MARGIN.max(lifetime / 10).min(lifetime / 2);
        tracing::debug!(expires_in_s = lifetime.as_secs(), "access token issued");
        Ok((t.access_token, asked_at + lifetime - margin))
    }
}
