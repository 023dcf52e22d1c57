//! The caller's own identity and wallet (rows 18, 22).
use serde_json::json;

use super::{Ctx, Out};
use crate::error::ApiError;
use crate::ids::{key_id, org_id};
use crate::model::State;

pub fn whoami(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    let org = st
        .orgs
        .get(&ctx.acting)
        .ok_or_else(|| ApiError::not_found("organization"))?;
    let key = st
        .keys
        .get(&ctx.key_id)
        .ok_or_else(|| ApiError::unauthenticated("invalid API key"))?;
    Ok(Out::ok(json!({
        "organizationId": org_id(org.id),
        "workspaceId": org_id(org.id),
        "organizationName": org.name,
        "parentOrganizationId": org.parent.map(org_id),
        "scopes": key.scopes,
        "rateLimitTier": key.tier_name(ctx.tier),
        "apiKeyId": key_id(key.id),
        "creditBalance": org.balance,
    })))
}

pub fn own_credits(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    let org = st
        .orgs
        .get(&ctx.acting)
        .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(Out::ok(org.wallet_json(ctx.now)))
}
