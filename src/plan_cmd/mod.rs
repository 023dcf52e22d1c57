// Over 600 lines: the command's whole flow (read manifests, classify, check, plan each object, cluster-only and prune previews).
//! `orgops plan`: what applying these manifests would do, without doing it.
//!
//! The operator's own pipeline (`reconcile::pipeline::preview`: gate, observe, plan) runs
//! against the cluster and, unless `--cluster-only`, the partner API through a provider
//! that refuses every write ([`read_only`]). Nothing is written anywhere: the kube calls
//! are GET/LIST only, so a read-only role is enough (docs/gitops.md).
//!
//! input -> validate (what admission would reject) -> merge with the live object ->
//! preview -> steps -> render. Exit status: 0 no changes, 2 changes, 1 an error.

mod input;
mod money;
mod others;
mod render;
mod steps;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::api::{CustomerOrg, DeletionPolicy, ManagementPolicy, OrgProvider};
use crate::provider::Provider;
use crate::provider::read_only::ReadOnly;
use crate::reconcile::pipeline::{self, Preview};
use crate::reconcile::plan::{Gate, OwnedSecret};
use crate::reconcile::{Context, OwnedSecretIndex, secrets};
use crate::runtime::controller::MANAGED_BY_SELECTOR;

use render::{Change, ObjectPlan};

/// `orgops plan` options.
#[derive(Clone, Debug, clap::Args)]
pub struct PlanArgs {
    /// A YAML file, or a directory of them (repeatable).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// A kustomize directory, built with `kubectl kustomize`.
    #[arg(short = 'k', long = "kustomize")]
    pub kustomize: Option<PathBuf>,
    /// Namespace of objects that name none (default: the kubeconfig's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Also show what deleting the CustomerOrgs of the input's namespaces that the input
    /// does not contain would offboard (as `kubectl apply --prune` would delete them).
    #[arg(long)]
    pub prune: bool,
    /// Read only the cluster, not the partner API: spec changes, no API actions.
    #[arg(long)]
    pub cluster_only: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
    /// kubectl binary used for -k.
    #[arg(long, env = "ORGOPS_KUBECTL", default_value = "kubectl")]
    pub kubectl: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// Runs the command; the exit status is 0 (no changes), 2 (changes) or 1 (an error).
pub fn run(args: PlanArgs) -> std::process::ExitCode {
    crate::cli::block_on(plan(args))
}

/// An input CustomerOrg, checked.
struct Wanted {
    source: String,
    corg: CustomerOrg,
}

async fn plan(args: PlanArgs) -> u8 {
    if args.files.is_empty() && args.kustomize.is_none() {
        eprintln!("error: nothing to plan: give -f FILE|DIR (repeatable) or -k DIR");
        return 1;
    }
    let (mut docs, input_errors) = input::read_files(&args.files);
    let mut errors: Vec<String> = input_errors.iter().map(ToString::to_string).collect();
    if let Some(dir) = &args.kustomize {
        match input::kustomize(dir, &args.kubectl) {
            Ok(mut d) => docs.append(&mut d),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!(
                "error: cannot reach the cluster: {e} (set KUBECONFIG or --kubeconfig's file)"
            );
            return 1;
        }
    };
    let default_ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let mut skipped = Vec::new();
    let mut plans = Vec::new();
    let mut wanted = Vec::new();
    for doc in docs {
        match classify(&doc, &default_ns) {
            Kind::CustomerOrg => match check(&client, &doc, &default_ns).await {
                Ok(w) => wanted.push(w),
                Err(p) => plans.push(*p),
            },
            Kind::OrgProvider => {
                plans.push(others::plan_provider(&client, &doc, args.cluster_only).await)
            }
            Kind::ParentWebhook => {
                plans.push(others::plan_parent_webhook(&client, &doc, &default_ns).await)
            }
            Kind::Skip(why) => skipped.push(why),
            Kind::Bad(why) => errors.push(why),
        }
    }
    let mut namespaces: BTreeSet<String> = wanted
        .iter()
        .map(|w| w.corg.namespace().unwrap_or_default())
        .collect();
    if args.prune && args.namespace.is_some() {
        namespaces.insert(default_ns.clone());
    }
    let owned = match PlanOwned::load(&client, &namespaces).await {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("error: cannot list Secrets: {e}");
            return 1;
        }
    };
    let mut providers = Providers::default();
    for w in &wanted {
        plans.push(plan_one(&client, &args, &mut providers, &owned, w).await);
    }
    let funds = if args.cluster_only {
        Vec::new()
    } else {
        money::check(&client, &mut providers, &mut plans).await
    };
    if args.prune {
        let names: BTreeSet<(String, String)> = wanted
            .iter()
            .map(|w| (w.corg.namespace().unwrap_or_default(), w.corg.name_any()))
            .collect();
        let mut pruned = Vec::new();
        for ns in &namespaces {
            let api: Api<CustomerOrg> = Api::namespaced(client.clone(), ns);
            match api.list(&ListParams::default()).await {
                Ok(list) => {
                    for live in list.items {
                        if !names.contains(&(ns.clone(), live.name_any())) {
                            let p = prune_one(&client, &args, &mut providers, &live).await;
                            pruned.push((live, p));
                        }
                    }
                }
                Err(e) => errors.push(format!("listing CustomerOrgs in {ns} for --prune: {e}")),
            }
        }
        if let Err(e) = guard_notes(&client, &mut pruned).await {
            errors.push(e);
        }
        plans.extend(pruned.into_iter().map(|(_, p)| p));
    }
    let out = match args.output {
        Format::Text => render::text(&plans, &skipped, &funds),
        Format::Json => render::json(&plans, &skipped, &funds),
        Format::Markdown => render::markdown(&plans, &skipped, &funds),
    };
    print!("{out}");
    for e in &errors {
        eprintln!("error: {e}");
    }
    for p in plans.iter().filter(|p| p.change == Change::Error) {
        for e in &p.errors {
            eprintln!("error: {} {}: {e}", p.kind, render::object_name(p));
        }
    }
    if !errors.is_empty() || plans.iter().any(|p| p.change == Change::Error) {
        1
    } else if plans.iter().any(|p| p.change != Change::Unchanged) {
        2
    } else {
        0
    }
}

enum Kind {
    CustomerOrg,
    OrgProvider,
    ParentWebhook,
    Skip(String),
    Bad(String),
}

fn classify(doc: &input::Doc, default_ns: &str) -> Kind {
    let api_version = doc.value["apiVersion"].as_str().unwrap_or_default();
    let kind = doc.value["kind"].as_str().unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Kind::Bad(format!(
            "{}: not a Kubernetes object (apiVersion and kind are required)",
            doc.source
        ));
    }
    let name = doc.value["metadata"]["name"].as_str().unwrap_or("?");
    let ns = doc.value["metadata"]["namespace"]
        .as_str()
        .unwrap_or(default_ns);
    match (api_version.split('/').next(), kind) {
        (Some("orgops.dev"), kind)
            if api_version == crate::api::API_VERSION || api_version == "orgops.dev/v1alpha1" =>
        {
            match kind {
                "CustomerOrg" => Kind::CustomerOrg,
                "OrgProvider" => Kind::OrgProvider,
                "ParentWebhook" => Kind::ParentWebhook,
                _ => Kind::Bad(format!(
                    "{}: unknown kind {api_version} {kind} (orgops.dev/v1beta1 and v1alpha1 have CustomerOrg, OrgProvider and ParentWebhook)",
                    doc.source
                )),
            }
        }
        (Some("orgops.dev"), _) => Kind::Bad(format!(
            "{}: unknown kind {api_version} {kind} (orgops.dev/v1beta1 and v1alpha1 have CustomerOrg, OrgProvider and ParentWebhook)",
            doc.source
        )),
        (_, "Kustomization") => Kind::Skip(format!("{}: a kustomization file", doc.source)),
        _ => Kind::Skip(format!(
            "{}: {kind} {ns}/{name} is not an orgops kind",
            doc.source
        )),
    }
}

/// Validates one CustomerOrg document as admission would, and merges it with the object
/// in the cluster (its uid, status and annotations), as `kubectl apply` would.
async fn check(
    client: &Client,
    doc: &input::Doc,
    default_ns: &str,
) -> Result<Wanted, Box<ObjectPlan>> {
    let name = doc.value["metadata"]["name"].as_str().unwrap_or_default();
    let ns = doc.value["metadata"]["namespace"]
        .as_str()
        .unwrap_or(default_ns)
        .to_string();
    let source = Some(doc.source.clone());
    let fail = |errors: Vec<String>| {
        let mut p = ObjectPlan::new(&ns, name, source.clone());
        p.change = Change::Error;
        p.errors = errors
            .into_iter()
            .map(|e| format!("{}: {e}", doc.source))
            .collect();
        Box::new(p)
    };
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push(".metadata.name: required".to_string());
    }
    validate::schema_errors(&validate::customer_org_schema(), &doc.value, "", &mut errs);
    errs.extend(validate::raw_cel_errors(&doc.value));
    let mut value = doc.value.clone();
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), Value::String(ns.clone()));
    }
    let parsed: Result<CustomerOrg, _> = serde_json::from_value(value);
    let mut corg = match parsed {
        Ok(c) if errs.is_empty() => c,
        Ok(_) => return Err(fail(errs)),
        Err(e) => {
            errs.push(format!("does not parse as a CustomerOrg: {e}"));
            return Err(fail(errs));
        }
    };
    let api: Api<CustomerOrg> = Api::namespaced(client.clone(), &ns);
    let live = match api.get_opt(name).await {
        Ok(live) => live,
        Err(e) => return Err(fail(vec![format!("reading the live object: {e}")])),
    };
    let errs = validate::cel_errors(&corg, live.as_ref());
    if !errs.is_empty() {
        return Err(fail(errs));
    }
    if let Some(live) = live {
        let changed = live.spec != corg.spec;
        let mut annotations = live.annotations().clone();
        annotations.extend(corg.annotations().clone());
        let spec = corg.spec;
        corg = live;
        corg.metadata.annotations = Some(annotations);
        corg.metadata.generation = corg.metadata.generation.map(|g| g + i64::from(changed));
        corg.spec = spec;
    } else {
        corg.metadata.uid = None;
        corg.metadata.generation = Some(1);
        corg.status = None;
    }
    Ok(Wanted {
        source: doc.source.clone(),
        corg,
    })
}

/// One provider per OrgProvider name, built read-only, or why it cannot be.
#[derive(Default)]
struct Providers(BTreeMap<String, Result<Arc<dyn Provider>, String>>);

impl Providers {
    async fn get(&mut self, client: &Client, name: &str) -> Result<Arc<dyn Provider>, String> {
        if !self.0.contains_key(name) {
            let built = build_provider(client, name).await;
            self.0.insert(name.to_string(), built);
        }
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err("provider cache".into()))
    }
}

async fn build_provider(client: &Client, name: &str) -> Result<Arc<dyn Provider>, String> {
    let (_, built) = crate::provider::build::from_cluster(client, name).await?;
    Ok(Arc::new(ReadOnly(built.provider())))
}

/// The Secrets each object controls, listed once per namespace (metadata only).
struct PlanOwned(Vec<PartialObjectMeta<Secret>>);

impl PlanOwned {
    async fn load(client: &Client, namespaces: &BTreeSet<String>) -> Result<Self, kube::Error> {
        let mut all = Vec::new();
        for ns in namespaces {
            let api: Api<Secret> = Api::namespaced(client.clone(), ns);
            let list = api
                .list_metadata(&ListParams::default().labels(MANAGED_BY_SELECTOR))
                .await?;
            all.extend(list.items);
        }
        Ok(PlanOwned(all))
    }
}

impl OwnedSecretIndex for PlanOwned {
    fn owned(&self, corg: &CustomerOrg) -> Vec<OwnedSecret> {
        if corg.metadata.uid.is_none() {
            return Vec::new();
        }
        self.0
            .iter()
            .filter(|s| s.namespace() == corg.namespace())
            .filter_map(|s| secrets::owned_marker(s, corg))
            .collect()
    }
}

fn context(
    client: &Client,
    provider: Arc<dyn Provider>,
    owned: Arc<PlanOwned>,
    name: &str,
) -> Context {
    Context {
        client: client.clone(),
        provider,
        provider_name: name.to_string(),
        owned,
        // Never writes: a fence that never opens.
        fence: crate::fence::Fence::closed("orgops-plan"),
        claims: crate::reconcile::claims::Claims::new(
            client.clone(),
            &crate::reconcile::claims::default_namespace(),
            name,
        ),
        deep: false,
    }
}

async fn plan_one(
    client: &Client,
    args: &PlanArgs,
    providers: &mut Providers,
    owned: &Arc<PlanOwned>,
    w: &Wanted,
) -> ObjectPlan {
    let corg = &w.corg;
    let ns = corg.namespace().unwrap_or_default();
    let name = corg.name_any();
    let mut p = ObjectPlan::new(&ns, &name, Some(w.source.clone()));
    p.provider = Some(corg.spec.provider_ref.name.clone());
    p.generation = corg.metadata.generation.unwrap_or(1);
    p.approved = crate::reconcile::credit_guard::approved(corg);
    let is_new = corg.metadata.uid.is_none();
    p.org_id = corg.status.as_ref().and_then(|s| s.org_id.clone());
    if corg.spec.management_policy == ManagementPolicy::Observe {
        p.notes.push(
            "managementPolicy Observe: the operator writes nothing to the provider for it".into(),
        );
    }
    if args.cluster_only {
        return cluster_only(client, corg, is_new, p).await;
    }
    let provider_name = corg.spec.provider_ref.name.clone();
    let provider = match providers.get(client, &provider_name).await {
        Ok(provider) => provider,
        Err(e) => {
            p.change = Change::Error;
            p.errors.push(e);
            return p;
        }
    };
    let ctx = context(client, provider, owned.clone(), &provider_name);
    match pipeline::preview(&ctx, corg).await {
        Err(e) => {
            p.change = Change::Error;
            p.errors.push(format!("reading the cluster: {e}"));
        }
        Ok(Preview::Gated(Gate::Paused)) => p.notes.push(format!(
            "{} is \"true\": the operator makes no API call for it",
            crate::api::PAUSED_ANNOTATION
        )),
        Ok(Preview::Gated(Gate::Rejected)) => p.notes.push(
            "the provider rejected this generation (Stalled ApiRejected): nothing is retried until the spec changes".into(),
        ),
        Ok(Preview::Refused(reason, message)) => {
            p.change = Change::Error;
            p.errors.push(format!("would be Stalled {reason}: {message}"));
        }
        Ok(Preview::Failed(e)) => {
            p.change = Change::Error;
            p.errors.push(format!(
                "reading the provider failed: {} {}",
                e.code(),
                e.message()
            ));
        }
        Ok(Preview::Planned(plan)) => {
            if let Some(org) = &plan.org {
                p.org_id = Some(org.id.clone());
            }
            p.adopts = plan.adopted.as_ref().map(|(_, how)| how.clone());
            let observe = corg.spec.management_policy == ManagementPolicy::Observe;
            let steps = steps::steps(&plan.actions, plan.org.as_ref());
            if observe {
                for s in steps {
                    p.notes.push(format!("drift, not corrected: {}", s.text));
                }
            } else {
                p.actions = steps;
            }
            if let Some((reason, message)) = &plan.stalled {
                p.notes.push(format!("would be Stalled {reason}: {message}"));
            }
            if let Some((reason, message)) = &plan.waiting {
                p.notes.push(format!("would wait ({reason}): {message}"));
            }
            p.notes.extend(plan.notes.iter().cloned());
        }
    }
    if p.change != Change::Error && (is_new || !p.actions.is_empty()) {
        p.change = if is_new {
            Change::Create
        } else {
            Change::Update
        };
    }
    p
}

/// `--cluster-only`: the spec fields that change, without reading the provider.
async fn cluster_only(
    client: &Client,
    corg: &CustomerOrg,
    is_new: bool,
    mut p: ObjectPlan,
) -> ObjectPlan {
    p.notes
        .push("--cluster-only: the provider was not read; API actions are not shown".into());
    if is_new {
        p.change = Change::Create;
        p.notes.push("a new CustomerOrg".into());
        return p;
    }
    let api: Api<CustomerOrg> =
        Api::namespaced(client.clone(), &corg.namespace().unwrap_or_default());
    let live = match api.get_opt(&corg.name_any()).await {
        Ok(Some(live)) => live,
        Ok(None) => return p,
        Err(e) => {
            p.change = Change::Error;
            p.errors.push(format!("reading the live object: {e}"));
            return p;
        }
    };
    let mut changes = Vec::new();
    diff(
        &serde_json::to_value(&live.spec).unwrap_or_default(),
        &serde_json::to_value(&corg.spec).unwrap_or_default(),
        ".spec",
        &mut changes,
    );
    if !changes.is_empty() {
        p.change = Change::Update;
        p.notes.extend(changes);
    }
    p
}

fn diff(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                diff(
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

/// Which pruned objects the offboarding guard would hold: per OrgProvider, the slots its
/// window has left (`spec.offboarding.maxPerHour` minus the last hour's offboardings in its
/// status) go in order; confirmed objects pass anyway; the rest are noted as paused.
async fn guard_notes(
    client: &Client,
    pruned: &mut [(CustomerOrg, ObjectPlan)],
) -> Result<(), String> {
    let api: Api<OrgProvider> = Api::all(client.clone());
    let mut free: BTreeMap<String, (u32, usize)> = BTreeMap::new();
    for (live, p) in pruned.iter_mut() {
        if !p.actions.iter().any(|a| a.op == "archive") {
            continue;
        }
        let name = live.spec.provider_ref.name.clone();
        if !free.contains_key(&name) {
            let op = api.get_opt(&name).await.map_err(|e| {
                format!("reading OrgProvider {name} for the offboarding guard: {e}")
            })?;
            let (max, used) = op.map_or((0, 0), |op| {
                let used = op.status.as_ref().map_or(0, |s| {
                    crate::reconcile::offboard_window::in_window(
                        &s.offboarding,
                        jiff::Timestamp::now(),
                    )
                    .len()
                });
                (op.spec.offboarding.max_per_hour, used)
            });
            free.insert(name.clone(), (max, used));
        }
        let Some((max, used)) = free.get_mut(&name) else {
            continue;
        };
        if crate::reconcile::offboard_guard::confirmed(live) {
            p.notes.push(format!(
                "{}: passes the offboarding guard",
                crate::api::CONFIRM_OFFBOARD_ANNOTATION
            ));
            *used += 1;
        } else if (*used as u64) < u64::from(*max) {
            *used += 1;
        } else {
            p.notes.push(format!(
                "held by the offboarding guard: OrgProvider {name} allows {max} offboarding(s) per hour and its window is full; it waits Stalled OffboardingPaused until a slot frees or it carries {}: \"true\"",
                crate::api::CONFIRM_OFFBOARD_ANNOTATION
            ));
        }
    }
    Ok(())
}

/// `--prune`: what deleting an object the input no longer has would offboard.
async fn prune_one(
    client: &Client,
    args: &PlanArgs,
    providers: &mut Providers,
    live: &CustomerOrg,
) -> ObjectPlan {
    let ns = live.namespace().unwrap_or_default();
    let mut p = ObjectPlan::new(&ns, &live.name_any(), None);
    p.change = Change::Delete;
    let status = live.status.as_ref();
    p.org_id = status.and_then(|s| s.org_id.clone());
    if live.spec.management_policy == ManagementPolicy::Observe
        || live.spec.deletion_policy == DeletionPolicy::Orphan
    {
        p.notes.push(
            "the org is left untouched (deletionPolicy Orphan or managementPolicy Observe)".into(),
        );
        return p;
    }
    let Some(org_id) = p.org_id.clone() else {
        p.notes
            .push("no org recorded: orgs carrying its owner marker, if any, are archived".into());
        return p;
    };
    if crate::reconcile::plan::gate(live) == Some(Gate::Paused) {
        p.notes
            .push("paused: the org is not archived until the annotation is removed".into());
    }
    let mut reclaim = status.and_then(|s| s.credits.as_ref()).map(|c| c.balance);
    let mut keys = None;
    if !args.cluster_only {
        match providers.get(client, &live.spec.provider_ref.name).await {
            Ok(provider) => match provider.get_org(&org_id).await {
                Ok(Some(org)) => {
                    reclaim = org.summary.map(|s| s.balance).or(reclaim);
                    keys = provider.list_keys(&org_id).await.ok().map(|k| {
                        k.iter()
                            .filter(|k| k.status == crate::provider::KeyStatus::Active)
                            .count()
                    });
                }
                Ok(None) => p.notes.push(format!("org {org_id} no longer exists")),
                Err(e) => p.errors.push(format!(
                    "reading org {org_id}: {} {}",
                    e.code(),
                    e.message()
                )),
            },
            Err(e) => p.errors.push(e),
        }
    }
    let mut text = format!("archive org {org_id} (terminal");
    if let Some(n) = keys {
        text.push_str(&format!(": revokes {n} key(s)"));
    }
    if let Some(c) = reclaim {
        text.push_str(&format!(", reclaims {c} credits"));
    }
    text.push(')');
    let mut step = steps::Step::new("archive", text);
    step.credits = reclaim;
    p.actions.push(step);
    if !p.errors.is_empty() {
        p.change = Change::Error;
    }
    p
}
