-- Argo CD health check for compshare.ucloud.cn/CompShareInstance.
-- Install: see integrations/argocd/argocd-cm.yaml (resource.customizations.health.compshare.ucloud.cn_CompShareInstance).
-- Without a health check, Argo CD shows every custom resource as Healthy.
--
-- It reads the conditions exactly as kstatus does (Flux, kpt), so both give one verdict:
-- InProgress is Progressing, Failed is Degraded, and Current is Healthy, or Suspended for a
-- machine settled as Stopped or whose observation is paused. It uses no library (Argo CD runs
-- argocd-cm scripts without the string library).
local hs = {}

local function condition(obj, kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

-- Being deleted: Argo CD reads it as Progressing ("Pending deletion") before any script runs;
-- the script says the same, so that it reads alike wherever it runs. (A deletion the operator
-- cannot complete shows in Stalled, ReleaseBlocked, with what to do.)
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Pending deletion"
  local stalled = condition(obj, "Stalled")
  if is_true(stalled) then
    hs.message = "Pending deletion: " .. message(stalled, "a person must act")
  end
  return hs
end

-- The operator has not answered this generation yet (a new resource carries observedGeneration 0).
if obj.status == nil or obj.status.observedGeneration == nil
    or (obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for compshare-operator to observe the instance"
  return hs
end

local stalled = condition(obj, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = message(stalled, "A person must act")
  return hs
end

local reconciling = condition(obj, "Reconciling")
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = message(reconciling, "The instance is on its way")
  return hs
end

local ready = condition(obj, "Ready")
if ready ~= nil and ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = message(ready, "The instance is not ready")
  return hs
end

-- Settled (Ready, or no Ready at all, which kstatus also reads as Current).
hs.message = message(ready, "The instance is observed")
local synced = condition(obj, "Synced")
if synced ~= nil and synced.status == "False" then
  hs.message = hs.message .. "; the last observation failed: " .. message(synced, "Synced is False")
end
if is_true(condition(obj, "Paused")) then
  hs.status = "Suspended"
  hs.message = "Observation is paused; " .. hs.message
elseif obj.status.state == "Stopped" then
  hs.status = "Suspended"
else
  hs.status = "Healthy"
end
return hs
