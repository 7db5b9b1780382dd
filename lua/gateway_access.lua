-- gateway_access.lua: an access-phase rule for the gateway (the OpenResty
-- habit). Off by default; turn it on with GATEWAY_LUA_HOOK=lua/gateway_access.lua
-- and reload it in place with SIGHUP.
--
-- access(request) runs for every purchase before the sale window and the
-- sold-out flag are checked. request = {method, path, item, user}.
-- Return nothing to let the request through, or status, reason to answer
-- it here (status 400-599).

-- Users refused outright (a block list kept by operations).
local blocked = {
  ["banned-user"] = true,
}

-- Items closed for maintenance without touching the activity.
local paused_items = {
}

function access(request)
  if request.user and blocked[request.user] then
    return 403, "this account may not take part in the sale"
  end
  if request.item and paused_items[request.item] then
    return 503, "this item is paused"
  end
  return nil
end
