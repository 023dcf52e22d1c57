//! The user's verbs (providers with `Capabilities::users`): set a role, remove.

use super::{Step, StepError, no_effect};

pub(super) async fn update(
    s: &mut Step<'_>,
    email: &str,
    user_id: &str,
    name: Option<&str>,
    role: &str,
) -> Result<(), StepError> {
    let org = s
        .provider
        .update_user(s.org_id()?, user_id, name, role)
        .await?;
    let applied = org
        .users
        .iter()
        .any(|u| u.id.as_deref() == Some(user_id) && u.role == role);
    if !applied {
        return Err(no_effect(
            "update user",
            format!("user {email} does not show role {role} afterwards"),
        ));
    }
    s.event(
        "UserUpdated",
        "Update",
        format!("user {email}: role {role}"),
    );
    Ok(())
}

pub(super) async fn remove(s: &mut Step<'_>, email: &str, user_id: &str) -> Result<(), StepError> {
    let org = s.provider.remove_user(s.owned()?, user_id).await?;
    if org.users.iter().any(|u| u.id.as_deref() == Some(user_id)) {
        return Err(no_effect(
            "remove user",
            format!("user {email} is still listed afterwards"),
        ));
    }
    let note = format!("removed user {email} (not in spec.gennia.users)");
    s.event("UserRemoved", "Update", note);
    Ok(())
}
