//! One LayersProvider (hence one rate limiter) per OrgProvider and credential, shared by
//! every CustomerOrg that points at it.
use crate::api::OrgProvider;
use crate::provider::Provider;
use crate::provider::build::Built;
use crate::provider::layers::LayersProvider;
use kube::ResourceExt;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// What a provider was built from; a change (new generation, rotated Secret) rebuilds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub uid: String,
    pub generation: Option<i64>,
    pub secret_version: String,
}

#[derive(Clone)]
pub struct Slot {
    pub fingerprint: Fingerprint,
    pub provider: Option<Built>,
    /// `Ok` when whoami succeeded; otherwise (reason, message) for conditions.
    pub health: Result<(), (String, String)>,
}

/// Health reason of a provider whose check failed in a way worth retrying soon.
/// Reason while an OrgProvider has not been checked by this process yet (start-up).
pub const NOT_CHECKED: &str = "ProviderNotReady";
pub const UNREACHABLE: &str = "Unreachable";

/// A provider ready for CustomerOrgs, or why it is not.
pub enum Availability {
    Ready(Arc<dyn Provider>),
    /// `transient`: not checked yet, or unreachable for now; CustomerOrgs retry soon
    /// instead of waiting for a human.
    Unavailable {
        reason: String,
        message: String,
        transient: bool,
    },
}

pub struct Registry {
    slots: RwLock<HashMap<String, Slot>>,
    changed: broadcast::Sender<String>,
}

impl Default for Registry {
    fn default() -> Self {
        let (changed, _) = broadcast::channel(256);
        Registry {
            slots: RwLock::new(HashMap::new()),
            changed,
        }
    }
}

impl Registry {
    /// The provider built for exactly this fingerprint, for reuse across resyncs.
    pub fn reusable(&self, name: &str, fingerprint: &Fingerprint) -> Option<Built> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .get(name)
            .filter(|s| &s.fingerprint == fingerprint)
            .and_then(|s| s.provider.clone())
    }

    /// Stores the result of a check; tells CustomerOrg controllers when readiness or the
    /// provider instance changed.
    pub fn store(&self, name: &str, slot: Slot) {
        let changed = {
            let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
            let changed = match slots.get(name) {
                Some(old) => {
                    old.health != slot.health
                        || old.fingerprint != slot.fingerprint
                        || !same_provider(&old.provider, &slot.provider)
                }
                None => true,
            };
            slots.insert(name.to_string(), slot);
            changed
        };
        if changed {
            // No receivers (not leading yet) is fine.
            let _ = self.changed.send(name.to_string());
        }
    }

    /// Names of providers whose availability changed, as they change.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changed.subscribe()
    }

    /// Whether CustomerOrgs may use `name` now. `current` is the OrgProvider as the
    /// cache sees it (None: it does not exist).
    pub fn availability(&self, name: &str, current: Option<&OrgProvider>) -> Availability {
        let Some(current) = current else {
            return Availability::Unavailable {
                reason: "ProviderNotFound".into(),
                message: format!("OrgProvider {name:?} does not exist"),
                transient: false,
            };
        };
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let slot = slots.get(name).filter(|s| {
            s.fingerprint.uid == current.uid().unwrap_or_default()
                && s.fingerprint.generation == current.metadata.generation
        });
        match slot {
            Some(Slot {
                provider: Some(provider),
                health: Ok(()),
                ..
            }) => Availability::Ready(provider.provider()),
            Some(Slot {
                health: Err((reason, message)),
                ..
            }) => Availability::Unavailable {
                reason: reason.clone(),
                message: format!("OrgProvider {name:?} is not Ready: {message}"),
                transient: reason == UNREACHABLE,
            },
            _ => Availability::Unavailable {
                reason: NOT_CHECKED.into(),
                message: format!("OrgProvider {name:?} has not been checked yet"),
                transient: true,
            },
        }
    }
}

impl Registry {
    /// The Layers client behind `name` when it is Ready, for kinds that use Layers-only
    /// calls (ParentWebhook); otherwise `Unavailable` exactly as [`Registry::availability`].
    pub fn layers(
        &self,
        name: &str,
        current: Option<&OrgProvider>,
    ) -> Result<Arc<LayersProvider>, Availability> {
        match self.availability(name, current) {
            Availability::Ready(_) => {
                let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
                slots
                    .get(name)
                    .and_then(|s| s.provider.as_ref())
                    .and_then(Built::layers)
                    .ok_or(Availability::Unavailable {
                        reason: "NotLayers".into(),
                        message: format!("OrgProvider {name:?} is not of type layers"),
                        transient: true,
                    })
            }
            unavailable => Err(unavailable),
        }
    }
}

fn same_provider(a: &Option<Built>, b: &Option<Built>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.same(b),
        (None, None) => true,
        _ => false,
    }
}
