-- Argo CD health check for compshare.ucloud.cn/CompShareInstance.
-- Install: see integrations/argocd/argocd-cm.yaml (resource.customizations.health.compshare.ucloud.cn_CompShareInstance).
-- Without a health check, Argo CD shows every custom resource as Healthy.
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

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local ready = condition(obj, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for compshare-operator to observe the instance"
  return hs
end

if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for compshare-operator to observe the new spec"
  return hs
end

local paused = condition(obj, "Paused")
if paused ~= nil and paused.status == "True" then
  hs.status = "Suspended"
  hs.message = message(paused, "Observation is paused")
  return hs
end

local stalled = condition(obj, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message(stalled, stalled.reason)
  return hs
end

local synced = condition(obj, "Synced")
if synced ~= nil and synced.status == "False" then
  hs.status = "Degraded"
  hs.message = message(synced, "The instance cannot be observed")
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(ready, "The instance is Running")
  return hs
end

-- Stopped on purpose: not broken, not on its way anywhere.
if obj.status.state == "Stopped" then
  hs.status = "Suspended"
  hs.message = "The instance is Stopped"
  return hs
end

hs.status = "Progressing"
hs.message = message(ready, "Waiting for the instance to run")
return hs
