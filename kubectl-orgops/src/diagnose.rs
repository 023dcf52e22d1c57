//! Why a CustomerOrg is not Ready, deepest failure first, and what to do about it.
//!
//! Order: the provider (missing, not Ready, refusing the parent key live) > paused >
//! Stalled (the API's full message, request id, retry time) > Ready=False with a reason
//! (waiting, transient) > a key or webhook Secret that is missing or foreign (the operator's
//! status may not know yet) > a generation the operator has not observed > Reconciling.

use orgops::api::conditions::{READY, RECONCILING, STALLED};

use crate::view::{ConditionView, CustomerView, Diagnosis};

pub const READY_CAUSE: &str = "Ready";

fn cond<'a>(view: &'a CustomerView, type_: &str) -> Option<&'a ConditionView> {
    view.conditions.iter().find(|c| c.type_ == type_)
}

fn make(cause: &str, source: impl Into<String>, message: impl Into<String>) -> Diagnosis {
    let message = message.into();
    Diagnosis {
        cause: cause.to_string(),
        source: source.into(),
        request_id: request_id(&message),
        retry_at: retry_at(&message),
        next_step: String::new(),
        message,
    }
}

/// `... (request req_123) ...` as the operator writes it.
fn request_id(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("(request ")?;
    let id: String = rest
        .chars()
        .take_while(|c| !matches!(c, ')' | ' ' | ','))
        .collect();
    (!id.is_empty()).then_some(id)
}

/// `... next attempt at 2026-01-01T00:00:00Z ...` as the operator writes it.
fn retry_at(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("next attempt at ")?;
    let at: String = rest
        .chars()
        .take_while(|c| !matches!(c, ',' | ' ' | ';' | ')'))
        .collect();
    at.parse::<jiff::Timestamp>().ok().map(|t| t.to_string())
}

pub fn diagnose(view: &CustomerView) -> Diagnosis {
    let mut d = find_cause(view);
    d.next_step = next_step(view, &d);
    d
}

fn find_cause(view: &CustomerView) -> Diagnosis {
    let p = &view.provider;
    let provider_src = format!("OrgProvider/{}", p.name);
    if !p.found {
        return make(
            "ProviderNotFound",
            provider_src,
            format!(
                "spec.providerRef names OrgProvider {:?}, which does not exist",
                p.name
            ),
        );
    }
    if p.ready == Some(false) {
        let reason = p.reason.clone().unwrap_or_else(|| "NotReady".into());
        let message = p.message.clone().unwrap_or_default();
        return make(&reason, provider_src, message);
    }
    if let Some(err) = view
        .live
        .as_ref()
        .filter(|l| l.refused)
        .and_then(|l| l.error.as_deref())
    {
        return make(
            "LiveReadFailed",
            "PartnerAPI",
            format!("the partner API refused the OrgProvider's credentials just now: {err}"),
        );
    }
    if view.paused {
        return make(
            "Paused",
            "CustomerOrg",
            "the annotation orgops.dev/paused is \"true\": the operator makes no API calls for \
             this object (no changes, no drift correction, no offboarding)",
        );
    }
    if let Some(c) = cond(view, STALLED).filter(|c| c.status == "True") {
        return make(&c.reason, "CustomerOrg", c.message.clone());
    }
    let ready = cond(view, READY);
    let current = |c: &ConditionView| {
        c.observed_generation.is_none() || c.observed_generation == view.generation
    };
    if let Some(c) = ready.filter(|c| {
        c.status == "False"
            && current(c)
            && !matches!(c.reason.as_str(), "Progressing" | "CorrectingDrift")
    }) && cond(view, RECONCILING).is_none_or(|r| r.status != "True")
    {
        return make(&c.reason, "CustomerOrg", c.message.clone());
    }
    // A Secret of an entry never minted or created (no id in status) is simply not there yet.
    for k in view.api_keys.iter().filter(|k| k.id.is_some()) {
        if let Some(d) = secret_problem("key", &k.name, &k.secret_name, &k.secret) {
            return d;
        }
    }
    for w in view.webhooks.iter().filter(|w| w.id.is_some()) {
        if let Some(d) = secret_problem("webhook", &w.name, &w.secret_name, &w.secret) {
            return d;
        }
    }
    let observed = view.observed_generation.unwrap_or(-1);
    if view.generation.is_some_and(|g| observed < g) {
        return make(
            "NotObserved",
            "CustomerOrg",
            format!(
                "the operator has not processed generation {} yet (status describes {})",
                view.generation.unwrap_or_default(),
                observed
            ),
        );
    }
    if let Some(c) = cond(view, RECONCILING).filter(|c| c.status == "True") {
        return make(&c.reason, "CustomerOrg", c.message.clone());
    }
    match ready {
        Some(c) if c.status == "True" => make(READY_CAUSE, "CustomerOrg", c.message.clone()),
        Some(c) => make(&c.reason, "CustomerOrg", c.message.clone()),
        None => make(
            "NotObserved",
            "CustomerOrg",
            "no Ready condition yet: the operator has not reported on this object",
        ),
    }
}

fn secret_problem(
    what: &str,
    entry: &str,
    secret_name: &str,
    h: &crate::view::SecretHealth,
) -> Option<Diagnosis> {
    let src = format!("Secret/{secret_name}");
    if !h.present {
        let consequence = if what == "key" {
            "the key it held is lost to its users; the operator revokes that key and mints a new \
             one into this Secret at its next pass"
        } else {
            "the signing secret it held is lost; the operator rotates the webhook's signing \
             secret into this Secret at its next pass"
        };
        return Some(make(
            "SecretMissing",
            src,
            format!("Secret {secret_name} of {what} {entry} does not exist: {consequence}"),
        ));
    }
    if !h.owned {
        return Some(make(
            "SecretNotOwned",
            src,
            format!(
                "Secret {secret_name} of {what} {entry} is not controlled by this CustomerOrg; \
                 orgops never overwrites it"
            ),
        ));
    }
    if h.authenticating == Some(false) {
        return Some(make(
            "KeyNotAuthenticating",
            src,
            format!(
                "the key in Secret {secret_name} ({what} {entry}) does not authenticate: {}",
                h.detail.clone().unwrap_or_default()
            ),
        ));
    }
    None
}

fn next_step(view: &CustomerView, d: &Diagnosis) -> String {
    let name = &view.name;
    let ns = &view.namespace;
    let provider = &view.provider.name;
    match d.cause.as_str() {
        READY_CAUSE => "nothing to do".into(),
        "ProviderNotFound" => format!(
            "create OrgProvider {provider}, or set spec.providerRef.name to an existing one \
             (kubectl get orgprovider)"
        ),
        "CredentialsMissing" => format!(
            "create the Secret named in OrgProvider {provider}'s spec.credentialsSecretRef \
             (kubectl get orgprovider {provider} -o yaml)"
        ),
        "Unauthorized" | "ProviderUnauthorized" | "LiveReadFailed" => format!(
            "the parent key was refused: put a working org:admin key into the Secret named in \
             OrgProvider {provider}'s credentialsSecretRef; the operator re-checks when it changes"
        ),
        "Forbidden" => format!(
            "the parent key lacks org:admin: use a partner org:admin key in OrgProvider \
             {provider}'s credentials Secret"
        ),
        "KillSwitch" => "the provider stopped this account (503 KILL_SWITCH); the operator waits. \
             Contact the provider, quoting the request id"
            .into(),
        "Unreachable" | "ProviderUnavailable" | "Retrying" | "ProviderNotReady" => format!(
            "transient: retried automatically with backoff; if it lasts, check OrgProvider \
             {provider}'s baseUrl and the network (kubectl describe orgprovider {provider})"
        ),
        "InvalidConfiguration" => format!("fix OrgProvider {provider}'s spec (see its message)"),
        "Paused" => {
            format!("kubectl orgops resume {name} -n {ns}  (when you want it managed again)")
        }
        "ApiRejected" => format!(
            "fix the field the message names in the spec, then apply it (a new generation \
             retries; the same one is not retried): kubectl edit corg {name} -n {ns}"
        ),
        "UnsupportedByProvider" => {
            "remove the fields the message names, or point spec.providerRef at a provider that \
             supports them"
                .into()
        }
        "AdoptionConflict" => "another CustomerOrg owns that org: change spec.externalId or \
             spec.adoptOrgId, or delete the other object"
            .into(),
        "SecretConflict" | "SecretNotOwned" | "SecretNameCollision" => {
            "delete or rename the foreign Secret, or set a distinct secretName in the spec".into()
        }
        "SecretMissing" => format!(
            "wait for the operator (it recovers on its next pass), then give the new Secret to \
             its users; if it stays missing, check that the operator runs (kubectl orgops \
             status {name} -n {ns} --watch)"
        ),
        "KeyNotAuthenticating" => {
            format!("rotate the keys: kubectl orgops rotate-keys {name} -n {ns}")
        }
        "OrgNotFound" => "the org id in status or spec.adoptOrgId is not a child of the parent: \
             fix spec.adoptOrgId or check the provider"
            .into(),
        "OrgArchived" => "the org was archived at the provider and cannot come back: set \
             spec.state: archived, or create a new CustomerOrg"
            .into(),
        "InsufficientCredits" => {
            "top up the parent org's balance; the next attempt uses a new idempotency key".into()
        }
        "RateLimited" => match &d.retry_at {
            Some(at) => format!("nothing: the operator retries at {at}"),
            None => "nothing: the operator retries when the provider's window opens".into(),
        },
        "SuspendedOrgReadOnly" => format!(
            "the provider refuses changes to a suspended org: they are applied when the \
             customer is active again (set spec.state: active); or undo the edit: kubectl edit \
             corg {name} -n {ns}"
        ),
        "NotSuspendable" => "nothing, or onboard the workspace: the provider suspends only an \
             active org; the operator suspends it once it is active (checked every resync)"
            .into(),
        "TransitionPending" => "nothing: the provider accepted the change and applies it later; \
             the operator reads it again and does not ask twice"
            .into(),
        "OffboardingPaused" => format!(
            "wait for the offboarding window, or confirm: kubectl annotate corg {name} -n {ns} \
             orgops.dev/confirm-offboard=true"
        ),
        "NotObserved" => "check that the operator runs, leads and watches this namespace \
             (docs/troubleshooting.md, \"Nothing happens\")"
            .into(),
        "Progressing" | "CorrectingDrift" | "Creating" | "Reconciling" => {
            "wait: work is under way (kubectl orgops status --watch)".into()
        }
        _ => "read the message; docs/troubleshooting.md lists every reason".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_and_retry_time_are_found_in_operator_messages() {
        let m = "allocate 500: the provider's write limit is reached (RATE_LIMITED slow down \
                 (request req_42)); next attempt at 2030-01-02T03:04:05Z, in 7200s";
        assert_eq!(request_id(m).as_deref(), Some("req_42"));
        assert_eq!(retry_at(m).as_deref(), Some("2030-01-02T03:04:05Z"));
        assert_eq!(request_id("no id here"), None);
        assert_eq!(retry_at("next attempt at soon"), None);
    }
}
