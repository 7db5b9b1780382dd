-- status.lua: an item's state in the store, read in one atomic step.
--
-- KEYS[1..4] as in reserve.lua
--
-- Returns {status, stock, buyers, sold out (1/0), flag version};
-- status is "warmed" or "not_warmed".

local stock = tonumber(redis.call('GET', KEYS[1]))
local version = tonumber(redis.call('GET', KEYS[4])) or 0
local buyers = redis.call('HLEN', KEYS[2])
local flagged = redis.call('EXISTS', KEYS[3])
if not stock then
  return {'not_warmed', -1, buyers, flagged, version}
end
return {'warmed', stock, buyers, flagged, version}
