//! Users of the org, for providers that manage them (Gennia: `spec.gennia.users`). The spec
//! is the complete list: roles and names are kept in line, users missing from it are
//! removed — never the last admin. A user added after creation cannot be created through
//! the API: said, not looped; invited in Gennia, they must be in the spec before they
//! accept, or they are removed then (docs/providers/gennia.md).

use crate::api::CustomerOrg;
use crate::provider::{Org, OrgUser};

use super::{Action, Plan};

/// The users the spec asks for, as the provider names them.
pub fn desired_users(corg: &CustomerOrg) -> Vec<OrgUser> {
    corg.spec
        .gennia
        .iter()
        .flat_map(|g| g.users.iter())
        .map(|u| OrgUser {
            id: None,
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role.as_str().to_string(),
        })
        .collect()
}

fn same_email(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

pub(super) fn plan_users(corg: &CustomerOrg, org: &Org, drift: bool, plan: &mut Plan) {
    let wanted = desired_users(corg);
    // Admins the workspace keeps: its members (not invitations) not being removed, with
    // the role the spec gives them, else the one they have.
    let admins_left = |removing: &[&OrgUser]| {
        org.users
            .iter()
            .filter(|u| u.id.is_some())
            .filter(|u| !removing.iter().any(|r| same_email(&r.email, &u.email)))
            .filter(|u| {
                let role = wanted
                    .iter()
                    .find(|w| same_email(&w.email, &u.email))
                    .map_or(u.role.as_str(), |w| w.role.as_str());
                role == "admin"
            })
            .count()
    };
    let mut missing = Vec::new();
    for w in &wanted {
        let Some(have) = org.users.iter().find(|u| same_email(&u.email, &w.email)) else {
            missing.push(w.email.clone());
            continue;
        };
        // A pending invitation has no user id: nothing to edit until it is accepted.
        let Some(id) = &have.id else { continue };
        let name_differs = w.name.is_some() && w.name != have.name;
        if have.role == "admin" && w.role != "admin" && admins_left(&[]) == 0 {
            plan.notes.push(format!(
                "user {} stays admin: the workspace would have no admin left",
                w.email
            ));
            continue;
        }
        if have.role != w.role || name_differs {
            plan.actions.push(Action::UpdateUser {
                email: w.email.clone(),
                user_id: id.clone(),
                name: w.name.clone(),
                role: w.role.clone(),
            });
            if drift {
                plan.drift.push(format!("user {} (role or name)", w.email));
            }
        }
    }
    let mut removing: Vec<&OrgUser> = Vec::new();
    for u in &org.users {
        let Some(id) = &u.id else { continue };
        if wanted.iter().any(|w| same_email(&w.email, &u.email)) {
            continue;
        }
        let mut after = removing.clone();
        after.push(u);
        if u.role == "admin" && admins_left(&after) == 0 {
            plan.notes.push(format!(
                "user {} is not in spec.gennia.users but is the last admin: kept",
                u.email
            ));
            continue;
        }
        removing.push(u);
        plan.actions.push(Action::RemoveUser {
            email: u.email.clone(),
            user_id: id.clone(),
        });
    }
    if !missing.is_empty() {
        plan.notes.push(format!(
            "spec.gennia.users {} cannot be added after the workspace was created (Gennia's API has no user create): invite them in Gennia (spec.gennia.users is the complete list: a user not in it is removed once they accept)",
            missing.join(", ")
        ));
    }
}
