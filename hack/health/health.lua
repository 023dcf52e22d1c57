-- Argo CD health check for orgops.dev CustomerOrg, OrgProvider and ParentWebhook (one script serves all).
-- Argo CD runs it with the live object in `obj` and expects {status, message}.
-- Order matters: paused, then "has the operator seen this generation", then Stalled, Ready, Reconciling.
local hs = {}

local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then
      return c
    end
  end
  return nil
end

local function msg(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil then
    return c.reason
  end
  return fallback
end

local annotations = obj.metadata.annotations or {}
if annotations["orgops.dev/paused"] == "true" then
  hs.status = "Suspended"
  hs.message = "Paused by the orgops.dev/paused annotation: the operator makes no API calls for it"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status and obj.status.observedGeneration
if observed == nil or (generation ~= nil and observed ~= generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = msg(stalled, "Stalled")
  return hs
end

local ready = condition("Ready")
-- managementPolicy Observe: orgops reports the drift and deliberately corrects nothing.
if ready ~= nil and ready.status ~= "True" and ready.reason == "Drifted" then
  hs.status = "Suspended"
  hs.message = msg(ready, "Drifted")
  return hs
end
if ready ~= nil and ready.status == "True" then
  -- A Ready condition written for an older generation says nothing about this one.
  if ready.observedGeneration ~= nil and generation ~= nil and ready.observedGeneration ~= generation then
    hs.status = "Progressing"
    hs.message = "Ready condition is from generation " .. tostring(ready.observedGeneration)
    return hs
  end
  hs.status = "Healthy"
  -- A suspended org is healthy: suspension is what the spec asked for.
  if obj.spec ~= nil and obj.spec.state == "suspended" then
    hs.message = "Suspended as the spec asks: " .. msg(ready, "Ready")
  else
    hs.message = msg(ready, "Ready")
  end
  return hs
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = msg(reconciling, "Reconciling")
  return hs
end

-- Ready=False without Stalled is a transient problem the operator is retrying (like kstatus InProgress).
hs.status = "Progressing"
hs.message = msg(ready, "Waiting for the Ready condition")
return hs
