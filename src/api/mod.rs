//! CRD types: CustomerOrg, OrgProvider and their conditions.
