//! `-o text|json|markdown`. Nothing here can print a secret: steps carry names, ids,
//! scopes and numbers only.

use serde::Serialize;

use super::money::{ProviderFunds, held_text, lines};
use super::steps::Step;

/// What happens to one object.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Create,
    Update,
    Unchanged,
    Delete,
    Error,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectPlan {
    /// CustomerOrg (left out of the JSON, as before other kinds were planned), OrgProvider
    /// or ParentWebhook.
    #[serde(skip_serializing_if = "is_customer_org")]
    pub kind: &'static str,
    /// Empty for the cluster-scoped OrgProvider.
    pub namespace: String,
    pub name: String,
    /// The input document (`file#n`); absent for objects only in the cluster (--prune).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub change: Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// How an existing org would be taken over (adoption), when it would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adopts: Option<String>,
    pub actions: Vec<Step>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// CustomerOrgs: the OrgProvider its credits come from.
    #[serde(skip)]
    pub provider: Option<String>,
    /// The generation it has once applied, and whether orgops.dev/confirm-credits names it.
    #[serde(skip)]
    pub generation: i64,
    #[serde(skip)]
    pub approved: bool,
}

fn is_customer_org(kind: &&'static str) -> bool {
    *kind == "CustomerOrg"
}

/// `namespace/name`, or `name` for a cluster-scoped object.
pub fn object_name(p: &ObjectPlan) -> String {
    if p.namespace.is_empty() {
        p.name.clone()
    } else {
        format!("{}/{}", p.namespace, p.name)
    }
}

impl ObjectPlan {
    pub fn new(namespace: &str, name: &str, source: Option<String>) -> ObjectPlan {
        ObjectPlan {
            kind: "CustomerOrg",
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
            change: Change::Unchanged,
            org_id: None,
            adopts: None,
            actions: Vec::new(),
            notes: Vec::new(),
            errors: Vec::new(),
            provider: None,
            generation: 0,
            approved: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub objects: usize,
    pub changing: usize,
    pub errors: usize,
    pub orgs_created: usize,
    pub orgs_adopted: usize,
    pub orgs_offboarded: usize,
    pub lifecycle_changes: usize,
    pub credits_moved: i64,
    /// Credits of the top-ups a guardrail would hold (not in credits_moved).
    pub credits_held: i64,
    pub transfers_held: usize,
    /// What the parents lack for the credits moved (summed over OrgProviders).
    pub shortfall: i64,
    pub credits_reclaimed: i64,
    pub keys_minted: usize,
    pub keys_rotated: usize,
    pub keys_revoked: usize,
    pub webhooks_created: usize,
    pub webhooks_deleted: usize,
    /// Some object is an OrgProvider or a ParentWebhook (the headline then says "object").
    #[serde(skip)]
    pub other_kinds: bool,
}

pub fn summarize(plans: &[ObjectPlan], funds: &[ProviderFunds]) -> Summary {
    let mut s = Summary {
        objects: plans.len(),
        shortfall: funds.iter().map(|f| f.shortfall).sum(),
        ..Default::default()
    };
    for p in plans {
        s.other_kinds |= p.kind != "CustomerOrg";
        if p.change == Change::Error {
            s.errors += 1;
        } else if p.change != Change::Unchanged {
            s.changing += 1;
        }
        s.orgs_adopted += usize::from(p.adopts.is_some());
        for a in &p.actions {
            match a.op {
                "create-org" | "migrate-projects" => s.orgs_created += 1,
                "suspend" | "resume" => s.lifecycle_changes += 1,
                "archive" => {
                    s.lifecycle_changes += 1;
                    s.orgs_offboarded += usize::from(p.change == Change::Delete);
                    s.credits_reclaimed += a.credits.unwrap_or(0);
                }
                "allocate" if a.held.is_some() => {
                    s.transfers_held += 1;
                    s.credits_held += a.credits.unwrap_or(0);
                }
                "allocate" => s.credits_moved += a.credits.unwrap_or(0),
                "mint-key" => s.keys_minted += 1,
                "rotate-key" => s.keys_rotated += 1,
                "revoke-key" => s.keys_revoked += 1,
                "create-webhook" => s.webhooks_created += 1,
                "delete-webhook" => s.webhooks_deleted += 1,
                _ => {}
            }
        }
    }
    s
}

/// The one-line summary.
pub fn headline(s: &Summary) -> String {
    let mut parts = vec![format!(
        "{} of {} {} change",
        s.changing,
        s.objects,
        if s.other_kinds {
            "object(s)"
        } else {
            "CustomerOrg(s)"
        }
    )];
    let counts = [
        (s.orgs_created, "org(s) created"),
        (s.orgs_adopted, "adopted"),
        (s.orgs_offboarded, "offboarded"),
        (s.lifecycle_changes, "lifecycle change(s)"),
        (s.keys_minted, "key(s) minted"),
        (s.keys_rotated, "rotated"),
        (s.keys_revoked, "revoked"),
        (s.webhooks_created, "webhook(s) created"),
        (s.webhooks_deleted, "webhook(s) deleted"),
    ];
    for (n, what) in counts {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if s.credits_moved > 0 {
        parts.push(format!("{} credits moved from the parent", s.credits_moved));
    }
    if s.transfers_held > 0 {
        parts.push(format!(
            "{} top-up(s) of {} credits held by guardrails",
            s.transfers_held, s.credits_held
        ));
    }
    if s.shortfall > 0 {
        parts.push(format!("the parent is {} credits short", s.shortfall));
    }
    if s.credits_reclaimed > 0 {
        parts.push(format!("{} credits reclaimed", s.credits_reclaimed));
    }
    if s.errors > 0 {
        parts.push(format!("{} error(s)", s.errors));
    }
    parts.join(", ")
}

fn title(p: &ObjectPlan) -> String {
    let org = p
        .org_id
        .as_deref()
        .map(|o| format!(" ({o})"))
        .unwrap_or_default();
    let what = match p.change {
        Change::Create => " - new",
        Change::Update => "",
        Change::Unchanged => ": no changes",
        Change::Delete => " - deleted (not in the input)",
        Change::Error => " - ERROR",
    };
    let org = if p.kind == "ParentWebhook" {
        org.replace(" (", " (endpoint ")
    } else {
        org
    };
    format!("{} {}{org}{what}", p.kind, object_name(p))
}

/// A step's line (its held marker appended).
fn step_text(a: &Step) -> String {
    match &a.held {
        Some(h) => format!("{} [{}]", a.text, held_text(h)),
        None => a.text.clone(),
    }
}

pub fn text(plans: &[ObjectPlan], skipped: &[String], funds: &[ProviderFunds]) -> String {
    let mut out = String::new();
    for p in plans {
        out.push_str(&title(p));
        if let Some(src) = &p.source {
            out.push_str(&format!("  [{src}]"));
        }
        out.push('\n');
        for e in &p.errors {
            out.push_str(&format!("  ! {e}\n"));
        }
        if let Some(how) = &p.adopts {
            out.push_str(&format!("  > adopts an existing org: {how}\n"));
        }
        for a in &p.actions {
            let sign = if a.held.is_some() { '!' } else { a.sign() };
            out.push_str(&format!("  {sign} {}\n", step_text(a)));
        }
        for n in &p.notes {
            out.push_str(&format!("  # {n}\n"));
        }
    }
    for s in skipped {
        out.push_str(&format!("skipped: {s}\n"));
    }
    if !funds.is_empty() {
        out.push_str("\nFunds:\n");
        for line in lines(funds) {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str(&format!(
        "\nPlan: {}.\n",
        headline(&summarize(plans, funds))
    ));
    out
}

pub fn json(plans: &[ObjectPlan], skipped: &[String], funds: &[ProviderFunds]) -> String {
    let doc = serde_json::json!({
        "objects": plans,
        "skipped": skipped,
        "funds": funds,
        "summary": summarize(plans, funds),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Fits a pull-request comment: the headline, a table, then the actions per object.
pub fn markdown(plans: &[ObjectPlan], skipped: &[String], funds: &[ProviderFunds]) -> String {
    let mut out = format!(
        "### orgops plan\n\n**{}**\n\n",
        md_escape(&headline(&summarize(plans, funds)))
    );
    for line in lines(funds) {
        let mark = if line.contains("SHORT") || line.contains("HELD") {
            ":warning: "
        } else {
            ""
        };
        out.push_str(&format!("- {mark}{}\n", md_escape(&line)));
    }
    if !funds.is_empty() {
        out.push('\n');
    }
    out.push_str("| CustomerOrg | Org | Change | Actions |\n|---|---|---|---|\n");
    for p in plans {
        let change = match p.change {
            Change::Create => "create",
            Change::Update => "update",
            Change::Unchanged => "none",
            Change::Delete => "**delete**",
            Change::Error => "**error**",
        };
        out.push_str(&format!(
            "| `{}/{}` | {} | {change} | {} |\n",
            p.namespace,
            p.name,
            p.org_id.as_deref().unwrap_or("-"),
            p.actions.len()
        ));
    }
    for p in plans.iter().filter(|p| p.change != Change::Unchanged) {
        out.push_str(&format!("\n#### `{}/{}`\n\n", p.namespace, p.name));
        for e in &p.errors {
            out.push_str(&format!("- :x: {}\n", md_escape(e)));
        }
        if let Some(how) = &p.adopts {
            out.push_str(&format!("- adopts an existing org: {}\n", md_escape(how)));
        }
        for a in &p.actions {
            let text = md_escape(&a.text);
            let text = if matches!(a.op, "archive" | "revoke-key" | "allocate") {
                format!("**{text}**")
            } else {
                text
            };
            match &a.held {
                Some(h) => out.push_str(&format!(
                    "- :no_entry: ~~{text}~~ **{}**\n",
                    md_escape(&held_text(h))
                )),
                None => out.push_str(&format!("- `{}` {text}\n", a.sign())),
            }
        }
        for n in &p.notes {
            out.push_str(&format!("- _{}_\n", md_escape(n)));
        }
    }
    if !skipped.is_empty() {
        out.push_str(&format!(
            "\n<details><summary>{} document(s) skipped</summary>\n\n",
            skipped.len()
        ));
        for s in skipped {
            out.push_str(&format!("- {}\n", md_escape(s)));
        }
        out.push_str("\n</details>\n");
    }
    out
}
