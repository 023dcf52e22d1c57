//! The org's verbs: create (or migrate flat projects into a new one), update, resume,
//! suspend, archive.

use crate::provider::{IdempotencyKey, NewOrg, Org, OrgPatch};
use crate::reconcile::status::{org_state, record_org};

use super::{Step, StepError, no_effect};

pub(super) async fn create(
    s: &mut Step<'_>,
    new: &NewOrg,
    key: &IdempotencyKey,
) -> Result<(), StepError> {
    let org = s.provider.create_org(new, key).await?;
    // What the answer says (Gennia's starting balance, for one): a pass that is Ready on
    // its answers shows it without a second read.
    record_org(s.status, &org, None);
    s.event("Created", "Create", format!("created org {}", org.id));
    *s.created = Some(org);
    Ok(())
}

pub(super) async fn migrate(
    s: &mut Step<'_>,
    projects: &[String],
    name: &str,
    key: &IdempotencyKey,
) -> Result<(), StepError> {
    let migrated = s.provider.migrate_projects(projects, name, key).await?;
    let missing = projects
        .iter()
        .filter(|p| !migrated.project_ids.contains(p))
        .count();
    if missing > 0 {
        return Err(no_effect(
            "migrate projects",
            format!(
                "the new org {} does not hold {missing} of the projects",
                migrated.org.id,
            ),
        ));
    }
    let org = migrated.org;
    s.status.org_id = Some(org.id.clone());
    s.status.state = Some(org_state(org.status).to_string());
    s.status.projects = migrated.project_ids;
    let note = format!(
        "created org {} by migrating {} project(s)",
        org.id,
        s.status.projects.len()
    );
    s.event("Created", "Create", note);
    *s.created = Some(org);
    Ok(())
}

pub(super) async fn update(s: &mut Step<'_>, patch: &OrgPatch) -> Result<(), StepError> {
    let org = s.provider.update_org(s.org_id()?, patch).await?;
    let missing = unapplied_org_patch(patch, &org);
    if !missing.is_empty() {
        return Err(no_effect(
            "update org",
            format!("the response still differs in {}", missing.join(", ")),
        ));
    }
    Ok(())
}

/// What an org PATCH asked for that the returned org does not show.
fn unapplied_org_patch(patch: &OrgPatch, org: &Org) -> Vec<String> {
    let mut missing = Vec::new();
    if let Some(name) = &patch.name
        && &org.name != name
    {
        missing.push("name".to_string());
    }
    for (k, v) in patch.metadata.iter().flatten() {
        let now = org.metadata.get(k);
        let applied = if v.is_empty() {
            now.is_none()
        } else {
            now == Some(v)
        };
        if !applied {
            missing.push(format!("metadata.{k}"));
        }
    }
    if let Some(email) = &patch.billing_email
        && &org.billing_email != email
    {
        missing.push("billingEmail".to_string());
    }
    missing
}

pub(super) async fn resume(s: &mut Step<'_>) -> Result<(), StepError> {
    let org = s.provider.resume_org(s.org_id()?).await?;
    s.status.state = Some(org_state(org.status).to_string());
    s.event("Resumed", "Resume", format!("resumed org {}", org.id));
    Ok(())
}

pub(super) async fn suspend(s: &mut Step<'_>) -> Result<(), StepError> {
    let reason = crate::reconcile::plan::suspend_reason(s.corg, false);
    let org = s.provider.suspend_org_with(s.owned()?, &reason).await?;
    s.status.state = Some(org_state(org.status).to_string());
    s.event("Suspended", "Suspend", format!("suspended org {}", org.id));
    Ok(())
}

pub(super) async fn archive(s: &mut Step<'_>) -> Result<(), StepError> {
    let id = s.org_id()?.to_string();
    let result = s.provider.archive_org(s.owned()?).await?;
    s.status.state = Some("archived".to_string());
    let note = format!(
        "archived org {id}: reclaimed {} credits, revoked {} keys",
        result.reclaimed_credits, result.revoked_api_keys
    );
    s.event("Archived", "Archive", note);
    Ok(())
}
