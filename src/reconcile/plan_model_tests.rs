//! Property: the plan, applied to a model of the provider and the cluster, converges in a
//! bounded number of passes, whatever fails on the way (a step refused, a response lost
//! after the provider acted, a status write lost), and leaves exactly one org, exactly the
//! credits asked, one working key per spec key and one endpoint per spec webhook.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::api::*;
use crate::provider::*;

use super::plan::*;
use super::status;

use super::plan_tests::CAPS;

#[derive(Clone, Debug)]
struct ModelSecret {
    id: String,
    rotated_for: Option<String>,
    role: OwnedRole,
}

/// The provider and the cluster's Secrets, with idempotency keys as the API keeps them.
#[derive(Clone, Debug, Default)]
struct World {
    orgs: Vec<Org>,
    keys: Vec<ApiKey>,
    hooks: Vec<WebhookEndpoint>,
    ledger: i64,
    secrets: BTreeMap<String, ModelSecret>,
    /// idempotency key -> (request fingerprint, id of what it made)
    idem: BTreeMap<String, (String, String)>,
    seq: u32,
}

/// How a step fails: not at all, refused before acting, or acted then the response lost.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    Refused,
    Lost,
}

impl World {
    fn id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}_{}", self.seq)
    }

    fn org(&self) -> Option<&Org> {
        self.orgs.iter().find(|o| o.status != OrgStatus::Archived)
    }

    fn org_mut(&mut self, id: &str) -> Option<&mut Org> {
        self.orgs.iter_mut().find(|o| o.id == id)
    }

    /// Replays a keyed request: Ok(Some(id)) replayed, Ok(None) new, Err on a body mismatch.
    fn replay(&self, key: &IdempotencyKey, fingerprint: &str) -> Result<Option<String>, ()> {
        match self.idem.get(key.as_str()) {
            Some((f, id)) if f == fingerprint => Ok(Some(id.clone())),
            Some(_) => Err(()),
            None => Ok(None),
        }
    }

    fn observe(&self, corg: &CustomerOrg) -> Observed {
        let tracked = corg.status.as_ref().and_then(|s| s.org_id.clone());
        let with_summary = |o: &Org| {
            let mut o = o.clone();
            o.summary.get_or_insert(OrgSummary {
                balance: self.ledger,
                available: self.ledger,
                credit_config: CreditConfig::default(),
            });
            o
        };
        let found = match tracked {
            Some(id) => Found::Tracked(self.orgs.iter().find(|o| o.id == id).map(with_summary)),
            None => {
                let mine: Vec<Org> = self
                    .orgs
                    .iter()
                    .filter(|o| {
                        o.status != OrgStatus::Archived
                            && o.metadata.get(OWNER_KEY) == Some(&owner_of(corg))
                    })
                    .map(with_summary)
                    .collect();
                if mine.is_empty() {
                    Found::Nothing
                } else {
                    Found::ByOwner(mine)
                }
            }
        };
        let mut names: Vec<String> = corg
            .spec
            .api_keys
            .iter()
            .map(|k| key_secret_name(corg, k))
            .chain(
                corg.spec
                    .webhooks
                    .iter()
                    .map(|w| webhook_secret_name(corg, w)),
            )
            .collect();
        if let Some(st) = &corg.status {
            names.extend(st.api_keys.iter().map(|k| k.secret_name.clone()));
            names.extend(st.webhooks.iter().map(|w| w.secret_name.clone()));
        }
        let secrets = names
            .into_iter()
            .map(|n| {
                let seen = match self.secrets.get(&n) {
                    Some(s) => SecretSeen::Owned {
                        id: Some(s.id.clone()).filter(|id| !id.is_empty()),
                        rotated_for: s.rotated_for.clone(),
                    },
                    None => SecretSeen::Missing,
                };
                (n, seen)
            })
            .collect();
        let owned = self
            .secrets
            .iter()
            .map(|(n, s)| OwnedSecret {
                secret_name: n.clone(),
                role: s.role.clone(),
            })
            .collect();
        let mut obs = Observed {
            found: found.clone(),
            keys: None,
            webhooks: None,
            ledger: None,
            ledger_note: None,
            secrets,
            owned,
            capabilities: CAPS,
        };
        let deep = !matches!(found, Found::Tracked(_));
        let r = reads(corg, &obs.secrets, &obs.owned, &CAPS, deep);
        obs.keys = r.keys.then(|| self.keys.clone());
        obs.webhooks = r.webhooks.then(|| self.hooks.clone());
        obs.ledger = r.ledger.then_some(self.ledger);
        obs
    }

    /// Applies one action; Err(()) stops the pass (refused, or response lost).
    fn act(
        &mut self,
        corg: &CustomerOrg,
        action: &Action,
        org_id: &mut Option<String>,
        rotated: &mut Option<String>,
        fault: Fault,
    ) -> Result<(), ()> {
        if matches!(fault, Fault::Refused) {
            return Err(());
        }
        let org = org_id.clone().unwrap_or_default();
        match action {
            Action::CreateOrg { new, key } => {
                let fp = format!("{new:?}");
                let id = match self.replay(key, &fp) {
                    Ok(Some(id)) => id,
                    Ok(None) => {
                        let id = self.id("org");
                        self.orgs.push(Org {
                            id: id.clone(),
                            name: new.name.clone(),
                            status: OrgStatus::Active,
                            metadata: new.metadata.clone(),
                            billing_email: new.billing_email.clone(),
                            summary: None,
                            users: Vec::new(),
                            billing_note: None,
                            suspend_blocked: None,
                        });
                        self.idem.insert(key.0.clone(), (fp, id.clone()));
                        id
                    }
                    // IDEMPOTENCY_CONFLICT: the pipeline finds the org by its owner marker.
                    Err(()) => {
                        *org_id = self.org().map(|o| o.id.clone());
                        return Err(());
                    }
                };
                *org_id = Some(id);
            }
            Action::MigrateProjects {
                projects,
                name,
                key,
            } => {
                let fp = format!("{projects:?}{name}");
                let id = match self.replay(key, &fp) {
                    Ok(Some(id)) => id,
                    Ok(None) => {
                        // A plain child: no metadata until the follow-ups tag it.
                        let id = self.id("org");
                        self.orgs.push(Org {
                            id: id.clone(),
                            name: name.clone(),
                            status: OrgStatus::Active,
                            metadata: BTreeMap::new(),
                            billing_email: None,
                            summary: None,
                            users: Vec::new(),
                            billing_note: None,
                            suspend_blocked: None,
                        });
                        self.idem.insert(key.0.clone(), (fp, id.clone()));
                        id
                    }
                    Err(()) => return Err(()),
                };
                *org_id = Some(id);
            }
            Action::UpdateOrg { patch } => {
                let o = self.org_mut(&org).ok_or(())?;
                if let Some(n) = &patch.name {
                    o.name = n.clone();
                }
                for (k, v) in patch.metadata.iter().flatten() {
                    if v.is_empty() {
                        o.metadata.remove(k);
                    } else {
                        o.metadata.insert(k.clone(), v.clone());
                    }
                }
            }
            Action::Resume | Action::Suspend | Action::Archive => {
                let o = self.org_mut(&org).ok_or(())?;
                o.status = match action {
                    Action::Resume => OrgStatus::Active,
                    Action::Suspend => OrgStatus::Suspended,
                    _ => OrgStatus::Archived,
                };
            }
            Action::SetCreditConfig { .. } => {}
            // Layers has no users: the model never plans them.
            Action::UpdateUser { .. } | Action::RemoveUser { .. } => return Err(()),
            Action::Allocate {
                credits,
                ledger,
                key,
                ..
            } => {
                // The key must be a compare-and-swap on the ledger the plan saw.
                assert_eq!(
                    *ledger, self.ledger,
                    "allocation planned from a stale ledger"
                );
                let fp = format!("{credits}");
                if self.replay(key, &fp)?.is_none() {
                    self.ledger += *credits as i64;
                    self.idem.insert(key.0.clone(), (fp, "txn".into()));
                }
            }
            Action::MintKey {
                name,
                new,
                secret_name,
                rotation,
                claim,
                replaces,
                key,
                ..
            } => {
                if *claim && !self.secrets.contains_key(secret_name) {
                    self.secrets.insert(
                        secret_name.clone(),
                        ModelSecret {
                            id: String::new(),
                            rotated_for: None,
                            role: OwnedRole::Key {
                                name: Some(name.clone()),
                                id: None,
                                replaced: Vec::new(),
                            },
                        },
                    );
                }
                let fp = format!("{org}{new:?}");
                let id = match self.replay(key, &fp)? {
                    Some(id) => id,
                    None => {
                        let id = self.id("key");
                        self.keys.push(ApiKey {
                            id: id.clone(),
                            name: new.name.clone(),
                            prefix: "p".into(),
                            env: new.env,
                            scopes: new.scopes.clone(),
                            status: KeyStatus::Active,
                            superseded_by: None,
                        });
                        self.idem.insert(key.0.clone(), (fp, id.clone()));
                        id
                    }
                };
                if matches!(fault, Fault::Lost) {
                    return Err(());
                }
                self.secrets.insert(
                    secret_name.clone(),
                    ModelSecret {
                        id,
                        rotated_for: rotation.clone(),
                        role: OwnedRole::Key {
                            name: Some(name.clone()),
                            id: None,
                            replaced: replaces.clone(),
                        },
                    },
                );
                self.fix_role_ids();
                return Ok(());
            }
            Action::RotateKey {
                name,
                key_id,
                secret_name,
                rotation,
                key,
                ..
            } => {
                let fp = key_id.clone();
                let id = match self.replay(key, &fp)? {
                    Some(id) => id,
                    None => {
                        let old = self
                            .keys
                            .iter()
                            .find(|k| &k.id == key_id)
                            .cloned()
                            .ok_or(())?;
                        // Rotating a superseded or revoked key is a 409 at the API.
                        if old.superseded_by.is_some() || old.status != KeyStatus::Active {
                            return Err(());
                        }
                        let id = self.id("key");
                        let mut new = old.clone();
                        new.id = id.clone();
                        self.keys.push(new);
                        if let Some(k) = self.keys.iter_mut().find(|k| &k.id == key_id) {
                            k.superseded_by = Some(id.clone());
                        }
                        self.idem.insert(key.0.clone(), (fp, id.clone()));
                        id
                    }
                };
                if matches!(fault, Fault::Lost) {
                    return Err(());
                }
                self.secrets.insert(
                    secret_name.clone(),
                    ModelSecret {
                        id,
                        rotated_for: rotation.clone(),
                        role: OwnedRole::Key {
                            name: Some(name.clone()),
                            id: None,
                            replaced: Vec::new(),
                        },
                    },
                );
                self.fix_role_ids();
                return Ok(());
            }
            Action::RevokeKey { key_id, .. } => {
                if let Some(k) = self.keys.iter_mut().find(|k| &k.id == key_id) {
                    k.status = KeyStatus::Revoked;
                }
            }
            Action::CreateWebhook {
                name,
                new,
                secret_name,
                key,
                ..
            } => {
                let fp = format!("{org}{new:?}");
                let id = match self.replay(key, &fp)? {
                    Some(id) => id,
                    None => {
                        let id = self.id("ep");
                        self.hooks.push(WebhookEndpoint {
                            id: id.clone(),
                            url: new.url.clone(),
                            events: new.events.clone(),
                            metadata: new.metadata.clone(),
                        });
                        self.idem.insert(key.0.clone(), (fp, id.clone()));
                        id
                    }
                };
                if matches!(fault, Fault::Lost) {
                    return Err(());
                }
                self.write_hook_secret(secret_name, name, &id);
                return Ok(());
            }
            Action::UpdateWebhook { id, patch, .. } => {
                let h = self.hooks.iter_mut().find(|h| &h.id == id).ok_or(())?;
                if let Some(u) = &patch.url {
                    h.url = u.clone();
                }
                if let Some(e) = &patch.events {
                    h.events = e.clone();
                }
            }
            Action::DeleteWebhook { id, .. } => self.hooks.retain(|h| &h.id != id),
            Action::RotateWebhookSecret {
                name,
                id,
                secret_name,
                ..
            } => {
                if matches!(fault, Fault::Lost) {
                    return Err(());
                }
                self.write_hook_secret(secret_name, name, id);
                return Ok(());
            }
            Action::DeleteSecret { name } => {
                self.secrets.remove(name);
            }
            Action::MarkRotated { value } => *rotated = Some(value.clone()),
        }
        let _ = corg;
        if matches!(fault, Fault::Lost) {
            return Err(());
        }
        Ok(())
    }

    fn write_hook_secret(&mut self, secret_name: &str, name: &str, id: &str) {
        self.secrets.insert(
            secret_name.to_string(),
            ModelSecret {
                id: id.to_string(),
                rotated_for: None,
                role: OwnedRole::Webhook {
                    name: Some(name.to_string()),
                    id: Some(id.to_string()),
                },
            },
        );
    }

    fn fix_role_ids(&mut self) {
        for s in self.secrets.values_mut() {
            if let OwnedRole::Key { id, .. } = &mut s.role {
                *id = Some(s.id.clone()).filter(|id| !id.is_empty());
            }
        }
    }

    /// One reconcile pass; `faults` says how the n-th write of the pass goes, and whether
    /// the status write at the end is lost.
    fn pass(&mut self, corg: &mut CustomerOrg, faults: &[Fault], lose_status: bool) -> usize {
        let obs = self.observe(corg);
        let plan = plan(corg, &obs);
        let mut org_id = plan
            .org
            .as_ref()
            .map(|o| o.id.clone())
            .or_else(|| corg.status.as_ref().and_then(|s| s.org_id.clone()));
        let mut rotated = corg
            .status
            .as_ref()
            .and_then(|s| s.keys_rotated_for.clone());
        let mut writes = 0;
        let mut failed = None;
        for (i, action) in plan.actions.iter().enumerate() {
            let fault = faults.get(i).copied().unwrap_or(Fault::None);
            if action.is_write() {
                writes += 1;
            }
            if self
                .act(corg, action, &mut org_id, &mut rotated, fault)
                .is_err()
            {
                failed = Some((action, fault));
                break;
            }
        }
        if !lose_status {
            // What the next pass reads back: the status the pass built from what happened.
            let mut next = corg.clone();
            next.status.get_or_insert_with(Default::default).org_id = org_id.clone();
            let full = self.full_observation(&next);
            let org = self
                .orgs
                .iter()
                .find(|o| Some(&o.id) == org_id.as_ref())
                .cloned();
            let mut st = status::observed(&next, org.as_ref(), &full);
            st.org_id = org_id;
            st.keys_rotated_for = rotated;
            if let Some((action, fault)) = failed {
                status::unverified(&mut st);
                // As the pipeline does: a lost answer is a timeout, a refusal a 503.
                let error = match fault {
                    Fault::Lost => crate::provider::error::ProviderError::Timeout,
                    _ => crate::provider::error::ProviderError::Server(
                        crate::provider::error::test_failure(503, "UNAVAILABLE"),
                    ),
                };
                super::pipeline::remember_failure(&error, Some(action), &mut st);
            }
            corg.status = Some(st);
        }
        writes
    }

    fn full_observation(&self, corg: &CustomerOrg) -> Observed {
        let mut obs = self.observe(corg);
        obs.keys = Some(self.keys.clone());
        obs.webhooks = Some(self.hooks.clone());
        obs.ledger = Some(self.ledger);
        obs
    }
}

fn spec_of(keys: &[(u8, bool)], hooks: &[(u8, bool)], allocated: i64) -> CustomerOrgSpec {
    CustomerOrgSpec {
        provider_ref: ProviderRef::default(),
        display_name: "Acme".into(),
        external_id: None,
        billing_email: None,
        metadata: BTreeMap::new(),
        state: DesiredState::Active,
        adopt_org_id: None,
        credits: Some(CreditsSpec {
            allocated,
            ..Default::default()
        }),
        api_keys: keys
            .iter()
            .map(|(n, write)| ApiKeySpec {
                name: format!("k{n}"),
                scopes: if *write {
                    vec!["content:read".into(), "content:write".into()]
                } else {
                    vec!["content:read".into()]
                },
                env: KeyEnvSpec::Live,
                secret_name: None,
            })
            .collect(),
        webhooks: hooks
            .iter()
            .map(|(n, alt)| WebhookSpec {
                name: format!("h{n}"),
                url: if *alt {
                    "https://b.example.com/h".into()
                } else {
                    "https://a.example.com/h".into()
                },
                events: vec!["post.published".into()],
                secret_name: None,
            })
            .collect(),
        deletion_policy: DeletionPolicy::Archive,
        management_policy: Default::default(),
        migrate_projects: Vec::new(),
        suspend_reason: None,
        gennia: None,
    }
}

fn dedup(v: Vec<(u8, bool)>) -> Vec<(u8, bool)> {
    let mut seen = std::collections::BTreeSet::new();
    v.into_iter().filter(|(n, _)| seen.insert(*n)).collect()
}

fn arb_fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::None),
        1 => Just(Fault::Refused),
        1 => Just(Fault::Lost),
    ]
}

/// The world matches `corg`'s spec, with nothing extra.
fn check_converged(w: &World, corg: &CustomerOrg) -> Result<(), TestCaseError> {
    let live: Vec<&Org> = w
        .orgs
        .iter()
        .filter(|o| o.status != OrgStatus::Archived)
        .collect();
    prop_assert_eq!(live.len(), 1, "exactly one live org: {:?}", w.orgs);
    prop_assert_eq!(w.orgs.len(), 1, "never a second org");
    prop_assert_eq!(
        w.ledger,
        desired_allocated(corg),
        "exactly the credits asked"
    );
    for k in &corg.spec.api_keys {
        let current: Vec<&ApiKey> = w
            .keys
            .iter()
            .filter(|x| {
                x.name == k.name && x.status == KeyStatus::Active && x.superseded_by.is_none()
            })
            .collect();
        prop_assert_eq!(current.len(), 1, "one key {}: {:?}", k.name, w.keys);
        prop_assert_eq!(sorted(&current[0].scopes), sorted(&k.scopes));
        let secret = w.secrets.get(&key_secret_name(corg, k));
        prop_assert_eq!(secret.map(|s| s.id.as_str()), Some(current[0].id.as_str()));
    }
    let names: Vec<&str> = corg.spec.api_keys.iter().map(|k| k.name.as_str()).collect();
    for k in w
        .keys
        .iter()
        .filter(|k| k.status == KeyStatus::Active && k.superseded_by.is_none())
    {
        prop_assert!(
            names.contains(&k.name.as_str()),
            "live key not in spec: {:?}",
            k
        );
    }
    for h in &corg.spec.webhooks {
        let eps: Vec<&WebhookEndpoint> = w
            .hooks
            .iter()
            .filter(|e| e.metadata.get(WEBHOOK_MARKER) == Some(&h.name))
            .collect();
        prop_assert_eq!(eps.len(), 1, "one endpoint {}", h.name);
        prop_assert_eq!(&eps[0].url, &h.url);
        let secret = w.secrets.get(&webhook_secret_name(corg, h));
        prop_assert_eq!(secret.map(|s| s.id.as_str()), Some(eps[0].id.as_str()));
    }
    prop_assert_eq!(
        w.hooks.len(),
        corg.spec.webhooks.len(),
        "no endpoint outside the spec"
    );
    prop_assert_eq!(
        w.secrets.len(),
        corg.spec.api_keys.len() + corg.spec.webhooks.len(),
        "no Secret outside the spec: {:?}",
        w.secrets.keys().collect::<Vec<_>>()
    );
    Ok(())
}

/// Failure-free passes until a pass writes nothing; bounded.
fn settle(w: &mut World, corg: &mut CustomerOrg) -> Result<usize, TestCaseError> {
    for n in 1..=8 {
        if w.pass(corg, &[], false) == 0 {
            return Ok(n);
        }
    }
    Err(TestCaseError::fail(
        "did not converge in 8 failure-free passes",
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_spec_edit_converges_exactly_once_through_failures(
        keys_a in proptest::collection::vec((0u8..4, any::<bool>()), 0..4),
        hooks_a in proptest::collection::vec((0u8..3, any::<bool>()), 0..3),
        keys_b in proptest::collection::vec((0u8..4, any::<bool>()), 0..4),
        hooks_b in proptest::collection::vec((0u8..3, any::<bool>()), 0..3),
        alloc_a in 0i64..1000,
        raise in 0i64..1000,
        rename in any::<bool>(),
        migrate in any::<bool>(),
        edit_mid_failures in any::<bool>(),
        faults in proptest::collection::vec(
            (proptest::collection::vec(arb_fault(), 0..8), any::<bool>()), 0..6),
        faults_b in proptest::collection::vec(
            (proptest::collection::vec(arb_fault(), 0..8), any::<bool>()), 0..6),
    ) {
        let mut w = World::default();
        let mut first = spec_of(&dedup(keys_a), &dedup(hooks_a), alloc_a);
        let projects = if migrate { vec!["prj_1".to_string()] } else { Vec::new() };
        first.migrate_projects = projects.clone();
        let mut corg = CustomerOrg::new("acme", first);
        corg.metadata.namespace = Some("customers".into());
        corg.metadata.uid = Some("uid-1".into());
        corg.metadata.generation = Some(1);
        for (f, lose) in &faults {
            w.pass(&mut corg, f, *lose);
        }
        // The edit lands either on a converged org or in the middle of failed passes
        // (e.g. a key whose mint answer was lost is dropped from the spec at once).
        if !edit_mid_failures {
            settle(&mut w, &mut corg)?;
            check_converged(&w, &corg)?;
        }

        // An edit: keys and webhooks added, changed, removed; credits raised; renamed.
        let mut edited = spec_of(&dedup(keys_b), &dedup(hooks_b), alloc_a + raise);
        if rename {
            edited.display_name = "Acme Renamed".into();
        }
        edited.migrate_projects = projects;
        corg.spec = edited;
        corg.metadata.generation = Some(2);
        for (f, lose) in &faults_b {
            w.pass(&mut corg, f, *lose);
        }
        settle(&mut w, &mut corg)?;
        check_converged(&w, &corg)?;
        let name = w.org().map(|o| o.name.clone());
        prop_assert_eq!(name.as_deref(), Some(corg.spec.display_name.as_str()));
    }
}
