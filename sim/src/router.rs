//! The Layers route table; matching is sim-kit's (method, path) → operation + template.
use http::Method;
use sim_kit::Route;

pub use sim_kit::Miss;

/// A matched request: the operation, its template (the counters' key) and the captures.
pub type Matched = sim_kit::Matched<Op>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Whoami,
    OwnCredits,
    OwnEvents,
    OrgList,
    OrgCreate,
    Migrate,
    OrgGet,
    OrgPatch,
    OrgArchive,
    OrgSuspend,
    OrgResume,
    Wallet,
    Events,
    Allocate,
    CcfgGet,
    CcfgPatch,
    KeyList,
    KeyMint,
    KeyDelete,
    KeyRotate,
    WhList,
    WhCreate,
    WhGet,
    WhPatch,
    WhDelete,
    WhRotate,
    ProjectCreate,
    ProjectList,
    ProjectGet,
    SimState,
    SimCounters,
    SimWrites,
    SimReset,
    SimFaultsGet,
    SimFaultsPut,
    SimClockGet,
    SimClock,
    SimTopup,
    SimSpend,
    SimSwitchesGet,
    SimSwitchesPatch,
    SimAssumptionsGet,
    SimAssumptionsPatch,
    SimProjectInFlight,
    SimWebhookRecipients,
}

impl Op {
    pub fn is_control(self) -> bool {
        matches!(
            self,
            Op::SimState
                | Op::SimCounters
                | Op::SimWrites
                | Op::SimReset
                | Op::SimFaultsGet
                | Op::SimFaultsPut
                | Op::SimClockGet
                | Op::SimClock
                | Op::SimTopup
                | Op::SimSpend
                | Op::SimSwitchesGet
                | Op::SimSwitchesPatch
                | Op::SimAssumptionsGet
                | Op::SimAssumptionsPatch
                | Op::SimProjectInFlight
                | Op::SimWebhookRecipients
        )
    }
}

const ORG: &str = "/v1/organizations/:orgId";

static TABLE: &[Route<Op>] = &[
    ("/v1/whoami", Method::GET, Op::Whoami),
    ("/v1/credits", Method::GET, Op::OwnCredits),
    ("/v1/credits/events", Method::GET, Op::OwnEvents),
    ("/v1/organizations", Method::GET, Op::OrgList),
    ("/v1/organizations", Method::POST, Op::OrgCreate),
    ("/v1/organizations/migrate", Method::POST, Op::Migrate),
    (ORG, Method::GET, Op::OrgGet),
    (ORG, Method::PATCH, Op::OrgPatch),
    (ORG, Method::DELETE, Op::OrgArchive),
    (
        "/v1/organizations/:orgId/suspend",
        Method::POST,
        Op::OrgSuspend,
    ),
    (
        "/v1/organizations/:orgId/resume",
        Method::POST,
        Op::OrgResume,
    ),
    ("/v1/organizations/:orgId/credits", Method::GET, Op::Wallet),
    (
        "/v1/organizations/:orgId/credits/events",
        Method::GET,
        Op::Events,
    ),
    (
        "/v1/organizations/:orgId/credits/allocate",
        Method::POST,
        Op::Allocate,
    ),
    (
        "/v1/organizations/:orgId/credit-config",
        Method::GET,
        Op::CcfgGet,
    ),
    (
        "/v1/organizations/:orgId/credit-config",
        Method::PATCH,
        Op::CcfgPatch,
    ),
    (
        "/v1/organizations/:orgId/api-keys",
        Method::GET,
        Op::KeyList,
    ),
    (
        "/v1/organizations/:orgId/api-keys",
        Method::POST,
        Op::KeyMint,
    ),
    (
        "/v1/organizations/:orgId/api-keys/:keyId",
        Method::DELETE,
        Op::KeyDelete,
    ),
    (
        "/v1/organizations/:orgId/api-keys/:keyId/rotate",
        Method::POST,
        Op::KeyRotate,
    ),
    ("/v1/webhook-endpoints", Method::GET, Op::WhList),
    ("/v1/webhook-endpoints", Method::POST, Op::WhCreate),
    ("/v1/webhook-endpoints/:endpointId", Method::GET, Op::WhGet),
    (
        "/v1/webhook-endpoints/:endpointId",
        Method::PATCH,
        Op::WhPatch,
    ),
    (
        "/v1/webhook-endpoints/:endpointId",
        Method::DELETE,
        Op::WhDelete,
    ),
    (
        "/v1/webhook-endpoints/:endpointId/rotate-secret",
        Method::POST,
        Op::WhRotate,
    ),
    ("/v1/projects", Method::GET, Op::ProjectList),
    ("/v1/projects", Method::POST, Op::ProjectCreate),
    ("/v1/projects/:projectId", Method::GET, Op::ProjectGet),
    ("/_sim/state", Method::GET, Op::SimState),
    ("/_sim/counters", Method::GET, Op::SimCounters),
    ("/_sim/writes", Method::GET, Op::SimWrites),
    ("/_sim/reset", Method::POST, Op::SimReset),
    ("/_sim/faults", Method::GET, Op::SimFaultsGet),
    ("/_sim/faults", Method::PUT, Op::SimFaultsPut),
    ("/_sim/clock", Method::GET, Op::SimClockGet),
    ("/_sim/clock", Method::POST, Op::SimClock),
    ("/_sim/topup", Method::POST, Op::SimTopup),
    ("/_sim/spend", Method::POST, Op::SimSpend),
    ("/_sim/switches", Method::GET, Op::SimSwitchesGet),
    ("/_sim/switches", Method::PATCH, Op::SimSwitchesPatch),
    ("/_sim/assumptions", Method::GET, Op::SimAssumptionsGet),
    ("/_sim/assumptions", Method::PATCH, Op::SimAssumptionsPatch),
    (
        "/_sim/projects/:projectId/in-flight",
        Method::PUT,
        Op::SimProjectInFlight,
    ),
    (
        "/_sim/webhook-recipients",
        Method::GET,
        Op::SimWebhookRecipients,
    ),
];

/// The first template matching the path wins (literal routes are listed first).
pub fn route(method: &Method, path: &str) -> Result<Matched, Miss> {
    sim_kit::router::route(TABLE, method, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = route(
            &Method::POST,
            "/v1/organizations/org_x/api-keys/key_y/rotate",
        )
        .unwrap();
        assert_eq!(m.op, Op::KeyRotate);
        assert_eq!(m.params, vec!["org_x", "key_y"]);
        assert_eq!(
            route(&Method::POST, "/v1/organizations/migrate")
                .unwrap()
                .op,
            Op::Migrate
        );
        assert!(matches!(
            route(&Method::PUT, "/v1/whoami"),
            Err(Miss::MethodNotAllowed(_))
        ));
        assert!(matches!(
            route(&Method::GET, "/v1/organizations/"),
            Err(Miss::NotFound)
        ));
        assert!(matches!(route(&Method::GET, "/nope"), Err(Miss::NotFound)));
    }
}
