-- restock.lua: add units to a warmed item, reopening it if sold out.
--
-- KEYS[1..4] as in reserve.lua
-- ARGV[1] units to add (integer >= 1)
-- ARGV[2] item id
-- ARGV[3] flag channel
--
-- Returns {status, stock, flag version}: restocked, not_warmed, invalid.

local add = tonumber(ARGV[1])
if not add or add < 1 or add % 1 ~= 0 then
  return {'invalid', -1, 0}
end
local version = tonumber(redis.call('GET', KEYS[4])) or 0
if not tonumber(redis.call('GET', KEYS[1])) then
  return {'not_warmed', -1, version}
end
local stock = redis.call('INCRBY', KEYS[1], add)
if redis.call('EXISTS', KEYS[3]) == 1 then
  version = redis.call('INCR', KEYS[4])
  redis.call('DEL', KEYS[3])
  redis.call('PUBLISH', ARGV[3], ARGV[2] .. ' open ' .. version)
end
return {'restocked', stock, version}
