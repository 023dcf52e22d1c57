//! The customers the chaos run declares, and the user edits made while the operator crashes.
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

/// What the test asks of each customer, and how that changes during the run.
#[derive(Clone, Debug)]
pub(crate) struct Customer {
    pub(crate) name: String,
    pub(crate) external_id: String,
    pub(crate) credits: i64,
    pub(crate) state: &'static str,
    pub(crate) deleted: bool,
}

/// A user action applied while the operator is crashing.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Edit {
    RaiseCredits(usize),
    Suspend(usize),
    Resume(usize),
    Delete(usize),
}

pub(crate) fn initial_customers(ns: &str, n: usize) -> Vec<Customer> {
    (0..n)
        .map(|i| Customer {
            name: format!("cust-{i:03}"),
            external_id: format!("{ns}-{i:03}"),
            credits: 100 + i as i64,
            // Several states from the start: every fifth customer begins suspended.
            state: if i % 5 == 4 { "suspended" } else { "active" },
            deleted: false,
        })
        .collect()
}

/// Disjoint groups so each customer's final spec is unambiguous.
pub(crate) fn planned_edits(customers: &[Customer]) -> Vec<Edit> {
    let mut edits = Vec::new();
    for (i, c) in customers.iter().enumerate() {
        match i % 8 {
            1 if c.state == "active" => {
                edits.push(Edit::RaiseCredits(i));
                edits.push(Edit::RaiseCredits(i));
            }
            2 if c.state == "active" => edits.push(Edit::Suspend(i)),
            3 | 4 if c.state == "suspended" => edits.push(Edit::Resume(i)),
            6 => edits.push(Edit::Delete(i)),
            7 if c.state == "active" => {
                edits.push(Edit::Suspend(i));
                edits.push(Edit::Resume(i));
            }
            _ => {}
        }
    }
    edits
}

pub(crate) fn manifest(ns: &str, provider: &str, c: &Customer) -> Value {
    json!({
        "apiVersion": "orgops.dev/v1alpha1", "kind": "CustomerOrg",
        "metadata": {"name": c.name, "namespace": ns},
        "spec": {
            "providerRef": {"name": provider},
            "displayName": format!("Chaos {}", c.name),
            "externalId": c.external_id,
            "state": c.state,
            "credits": {"allocated": c.credits, "monthlyCap": 10_000},
            "apiKeys": [
                {"name": "integration", "scopes": ["content:read", "content:write"]},
                {"name": "reporting", "scopes": ["content:read"]},
            ],
            "webhooks": [{
                "name": "crm",
                "url": format!("https://crm.example.com/hooks/{}", c.name),
                "events": ["content.generated", "post.published"],
            }],
        },
    })
}

/// Applies one edit as a user would (merge patch or delete) and records the new desire.
pub(crate) async fn apply_edit(api: &Api<DynamicObject>, customers: &mut [Customer], edit: Edit) {
    let (i, patch) = match edit {
        Edit::RaiseCredits(i) => {
            customers[i].credits += 50;
            (
                i,
                Some(json!({"spec": {"credits": {"allocated": customers[i].credits}}})),
            )
        }
        Edit::Suspend(i) => {
            customers[i].state = "suspended";
            (i, Some(json!({"spec": {"state": "suspended"}})))
        }
        Edit::Resume(i) => {
            customers[i].state = "active";
            (i, Some(json!({"spec": {"state": "active"}})))
        }
        Edit::Delete(i) => {
            customers[i].deleted = true;
            (i, None)
        }
    };
    let name = customers[i].name.clone();
    match patch {
        Some(p) => {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(p))
                .await
                .unwrap_or_else(|e| panic!("edit {name}: {e}"));
        }
        None => {
            api.delete(&name, &DeleteParams::default())
                .await
                .unwrap_or_else(|e| panic!("delete {name}: {e}"));
        }
    }
}
