//! The customers the chaos run declares, and the user edits made while the operators crash.
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

/// The monthly cap every customer asks for.
pub(crate) const MONTHLY_CAP: i64 = 10_000;
/// Auto-refill of the spending customers: below this much available ...
pub(crate) const REFILL_THRESHOLD: i64 = 50;
/// ... the provider moves this much from the parent.
pub(crate) const REFILL_AMOUNT: i64 = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeySpec {
    pub(crate) name: String,
    pub(crate) scopes: Vec<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HookSpec {
    pub(crate) name: String,
    pub(crate) url: String,
}

/// What the test asks of each customer, and how that changes during the run.
#[derive(Clone, Debug)]
pub(crate) struct Customer {
    pub(crate) name: String,
    /// Every third customer has none: the operator finds its org by the owner marker only.
    pub(crate) external_id: Option<String>,
    pub(crate) display_name: String,
    pub(crate) credits: i64,
    pub(crate) state: &'static str,
    pub(crate) deleted: bool,
    /// `deletionPolicy: Orphan` (else Archive): a delete leaves the org live on purpose.
    pub(crate) orphan: bool,
    pub(crate) keys: Vec<KeySpec>,
    pub(crate) hooks: Vec<HookSpec>,
    /// The `orgops.dev/rotate-keys` annotation value, once set.
    pub(crate) rotate: Option<String>,
    /// The simulator clock just before that annotation was set (rotations after it answer it).
    pub(crate) rotate_requested_at: Option<String>,
    /// Auto-refill on; the test spends in this customer's org during the run.
    pub(crate) spends: bool,
    /// `spec.adoptOrgId` (the racing pair).
    pub(crate) adopt: Option<String>,
    /// The racing pair it belongs to (one adoptOrgId, or one externalId created at the
    /// same instant): exactly one of a pair may own an org.
    pub(crate) pair: Option<String>,
    /// Lost its race and was deleted afterwards (deletionPolicy Archive): its deletion must
    /// archive nothing, above all not the winner's org.
    pub(crate) loser: bool,
    /// `spec.migrateProjects`: the parent's flat projects its org is created from.
    pub(crate) migrate: Vec<String>,
    /// metadata.uid, recorded when the object is created (the owner marker carries it).
    pub(crate) uid: String,
}

impl Customer {
    /// The owner marker's `<ns>/<name>/` prefix.
    pub(crate) fn marker_prefix(&self, ns: &str) -> String {
        format!("{ns}/{}/", self.name)
    }
}

/// A user action applied while the operators are crashing.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Edit {
    RaiseCredits(usize),
    Suspend(usize),
    Resume(usize),
    Delete(usize),
    DisplayName(usize),
    AddKey(usize),
    ChangeKeyScopes(usize),
    RemoveKey(usize),
    AddWebhook(usize),
    ChangeWebhookUrl(usize),
    RemoveWebhook(usize),
    Rotate(usize),
}

fn default_keys() -> Vec<KeySpec> {
    vec![
        KeySpec {
            name: "integration".into(),
            scopes: vec!["content:read", "content:write"],
        },
        KeySpec {
            name: "reporting".into(),
            scopes: vec!["content:read"],
        },
    ]
}

fn crm_hook(name: &str) -> HookSpec {
    HookSpec {
        name: "crm".into(),
        url: format!("https://crm.example.com/hooks/{name}"),
    }
}

pub(crate) fn initial_customers(ns: &str, n: usize) -> Vec<Customer> {
    (0..n)
        .map(|i| {
            let name = format!("cust-{i:03}");
            let spends = i % 12 == 11;
            Customer {
                external_id: (i % 3 != 2).then(|| format!("{ns}-{i:03}")),
                display_name: format!("Chaos {name}"),
                credits: 100 + i as i64,
                // Several states from the start: every fifth customer begins suspended
                // (never a spending one: a suspended child cannot spend).
                state: if i % 5 == 4 && !spends {
                    "suspended"
                } else {
                    "active"
                },
                deleted: false,
                // Half of the deleted group leaves its org behind on purpose.
                orphan: i % 12 == 6 && (i / 12) % 2 == 1,
                keys: default_keys(),
                hooks: vec![crm_hook(&name)],
                rotate: None,
                rotate_requested_at: None,
                spends,
                adopt: None,
                pair: None,
                loser: false,
                migrate: Vec::new(),
                uid: String::new(),
                name,
            }
        })
        .collect()
}

/// The customers whose org is created by migrating flat projects (two each).
pub(crate) fn migrating(i: usize) -> bool {
    i % 20 == 13
}

/// Two CustomerOrgs racing for one existing org: exactly one may own it.
pub(crate) fn racing_pair(org_id: &str) -> Vec<Customer> {
    ["race-a", "race-b"]
        .iter()
        .map(|name| Customer {
            name: name.to_string(),
            external_id: None,
            display_name: "Chaos adopted".into(),
            credits: 77,
            state: "active",
            deleted: false,
            orphan: false,
            keys: default_keys(),
            hooks: vec![crm_hook("adopted")],
            rotate: None,
            rotate_requested_at: None,
            spends: false,
            adopt: Some(org_id.to_string()),
            pair: Some("adopt".into()),
            loser: false,
            migrate: Vec::new(),
            uid: String::new(),
        })
        .collect()
}

/// `n` pairs of CustomerOrgs sharing one `externalId`, to be created at the same instant:
/// both find no org, and exactly one may create it (the claim decides).
pub(crate) fn twin_pairs(ns: &str, n: usize) -> Vec<Customer> {
    (0..n)
        .flat_map(|k| {
            ["a", "b"].map(|side| Customer {
                name: format!("twin-{k}-{side}"),
                external_id: Some(format!("{ns}-twin-{k}")),
                display_name: format!("Chaos twin {k}"),
                credits: 60,
                state: "active",
                deleted: false,
                orphan: false,
                keys: default_keys(),
                hooks: vec![crm_hook(&format!("twin-{k}"))],
                rotate: None,
                rotate_requested_at: None,
                spends: false,
                adopt: None,
                pair: Some(format!("twin-{k}")),
                loser: false,
                migrate: Vec::new(),
                uid: String::new(),
            })
        })
        .collect()
}

/// Disjoint groups so each customer's final spec is unambiguous whatever the edit order.
pub(crate) fn planned_edits(customers: &[Customer]) -> Vec<Edit> {
    let mut edits = Vec::new();
    for (i, c) in customers.iter().enumerate() {
        if c.pair.is_some() {
            continue;
        }
        let suspended = c.state == "suspended";
        match i % 12 {
            0 => edits.push(Edit::DisplayName(i)),
            1 if !suspended => {
                edits.push(Edit::RaiseCredits(i));
                edits.push(Edit::RaiseCredits(i));
            }
            2 if !suspended => edits.push(Edit::Suspend(i)),
            3 if suspended => edits.push(Edit::Resume(i)),
            3 => edits.push(Edit::AddKey(i)),
            4 if suspended => {
                edits.push(Edit::Resume(i));
                edits.push(Edit::ChangeKeyScopes(i));
            }
            4 => edits.push(Edit::ChangeKeyScopes(i)),
            5 => {
                edits.push(Edit::RemoveKey(i));
                edits.push(Edit::AddWebhook(i));
            }
            6 => edits.push(Edit::Delete(i)),
            7 if !suspended => {
                edits.push(Edit::Suspend(i));
                edits.push(Edit::Resume(i));
            }
            8 => edits.push(Edit::Rotate(i)),
            9 => {
                edits.push(Edit::ChangeWebhookUrl(i));
                edits.push(Edit::DisplayName(i));
            }
            10 => {
                edits.push(Edit::RemoveWebhook(i));
                edits.push(Edit::RaiseCredits(i));
            }
            _ => {}
        }
    }
    edits
}

fn keys_json(c: &Customer) -> Value {
    Value::Array(
        c.keys
            .iter()
            .map(|k| json!({"name": k.name, "scopes": k.scopes}))
            .collect(),
    )
}

fn hooks_json(c: &Customer) -> Value {
    Value::Array(
        c.hooks
            .iter()
            .map(|h| {
                json!({"name": h.name, "url": h.url,
                       "events": ["content.generated", "post.published"]})
            })
            .collect(),
    )
}

pub(crate) fn manifest(ns: &str, provider: &str, c: &Customer) -> Value {
    let mut credits = json!({"allocated": c.credits, "monthlyCap": MONTHLY_CAP});
    if c.spends {
        credits["autoRefill"] = json!({"threshold": REFILL_THRESHOLD, "amount": REFILL_AMOUNT});
    }
    let mut spec = json!({
        "providerRef": {"name": provider},
        "displayName": c.display_name,
        "state": c.state,
        "credits": credits,
        "apiKeys": keys_json(c),
        "webhooks": hooks_json(c),
        "deletionPolicy": if c.orphan { "Orphan" } else { "Archive" },
    });
    if let Some(ext) = &c.external_id {
        spec["externalId"] = json!(ext);
    }
    if !c.migrate.is_empty() {
        spec["migrateProjects"] = json!(c.migrate);
    }
    if let Some(org) = &c.adopt {
        spec["adoptOrgId"] = json!(org);
    }
    json!({
        "apiVersion": "orgops.dev/v1alpha1", "kind": "CustomerOrg",
        "metadata": {"name": c.name, "namespace": ns},
        "spec": spec,
    })
}

/// Applies one edit as a user would (merge patch or delete) and records the new desire.
pub(crate) async fn apply_edit(api: &Api<DynamicObject>, customers: &mut [Customer], edit: Edit) {
    let patch = |c: &mut Customer, edit: Edit| -> Option<Value> {
        Some(match edit {
            Edit::RaiseCredits(_) => {
                c.credits += 50;
                json!({"spec": {"credits": {"allocated": c.credits}}})
            }
            Edit::Suspend(_) => {
                c.state = "suspended";
                json!({"spec": {"state": "suspended"}})
            }
            Edit::Resume(_) => {
                c.state = "active";
                json!({"spec": {"state": "active"}})
            }
            Edit::Delete(_) => {
                c.deleted = true;
                return None;
            }
            Edit::DisplayName(_) => {
                c.display_name = format!("{} (renamed)", c.display_name);
                json!({"spec": {"displayName": c.display_name}})
            }
            Edit::AddKey(_) => {
                c.keys.push(KeySpec {
                    name: "publisher".into(),
                    scopes: vec!["content:write", "projects:read"],
                });
                json!({"spec": {"apiKeys": keys_json(c)}})
            }
            Edit::ChangeKeyScopes(_) => {
                c.keys[1].scopes = vec!["content:read", "projects:read"];
                json!({"spec": {"apiKeys": keys_json(c)}})
            }
            Edit::RemoveKey(_) => {
                c.keys.retain(|k| k.name != "reporting");
                json!({"spec": {"apiKeys": keys_json(c)}})
            }
            Edit::AddWebhook(_) => {
                c.hooks.push(HookSpec {
                    name: "billing".into(),
                    url: format!("https://billing.example.com/hooks/{}", c.name),
                });
                json!({"spec": {"webhooks": hooks_json(c)}})
            }
            Edit::ChangeWebhookUrl(_) => {
                c.hooks[0].url = format!("https://crm2.example.com/hooks/{}", c.name);
                json!({"spec": {"webhooks": hooks_json(c)}})
            }
            Edit::RemoveWebhook(_) => {
                c.hooks.clear();
                json!({"spec": {"webhooks": hooks_json(c)}})
            }
            Edit::Rotate(_) => {
                c.rotate = Some("chaos-1".into());
                json!({"metadata": {"annotations": {"orgops.dev/rotate-keys": "chaos-1"}}})
            }
        })
    };
    let i = match edit {
        Edit::RaiseCredits(i)
        | Edit::Suspend(i)
        | Edit::Resume(i)
        | Edit::Delete(i)
        | Edit::DisplayName(i)
        | Edit::AddKey(i)
        | Edit::ChangeKeyScopes(i)
        | Edit::RemoveKey(i)
        | Edit::AddWebhook(i)
        | Edit::ChangeWebhookUrl(i)
        | Edit::RemoveWebhook(i)
        | Edit::Rotate(i) => i,
    };
    let name = customers[i].name.clone();
    match patch(&mut customers[i], edit) {
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
