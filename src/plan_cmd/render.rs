//! `-o text|json|markdown`. Nothing here can print a secret: steps carry names, ids,
//! scopes and numbers only.

use serde::Serialize;

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
}

impl ObjectPlan {
    pub fn new(namespace: &str, name: &str, source: Option<String>) -> ObjectPlan {
        ObjectPlan {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
            change: Change::Unchanged,
            org_id: None,
            adopts: None,
            actions: Vec::new(),
            notes: Vec::new(),
            errors: Vec::new(),
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
    pub credits_reclaimed: i64,
    pub keys_minted: usize,
    pub keys_rotated: usize,
    pub keys_revoked: usize,
    pub webhooks_created: usize,
    pub webhooks_deleted: usize,
}

pub fn summarize(plans: &[ObjectPlan]) -> Summary {
    let mut s = Summary {
        objects: plans.len(),
        ..Default::default()
    };
    for p in plans {
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
        "{} of {} CustomerOrg(s) change",
        s.changing, s.objects
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
    format!("CustomerOrg {}/{}{org}{what}", p.namespace, p.name)
}

pub fn text(plans: &[ObjectPlan], skipped: &[String]) -> String {
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
            out.push_str(&format!("  {} {}\n", a.sign(), a.text));
        }
        for n in &p.notes {
            out.push_str(&format!("  # {n}\n"));
        }
    }
    for s in skipped {
        out.push_str(&format!("skipped: {s}\n"));
    }
    out.push_str(&format!("\nPlan: {}.\n", headline(&summarize(plans))));
    out
}

pub fn json(plans: &[ObjectPlan], skipped: &[String]) -> String {
    let doc = serde_json::json!({
        "objects": plans,
        "skipped": skipped,
        "summary": summarize(plans),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Fits a pull-request comment: the headline, a table, then the actions per object.
pub fn markdown(plans: &[ObjectPlan], skipped: &[String]) -> String {
    let mut out = format!(
        "### orgops plan\n\n**{}**\n\n| CustomerOrg | Org | Change | Actions |\n|---|---|---|---|\n",
        md_escape(&headline(&summarize(plans)))
    );
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
            out.push_str(&format!("- `{}` {text}\n", a.sign()));
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
