-- prewarm.lua: load an item's stock into the store before the sale.
--
-- KEYS[1..4] as in reserve.lua
-- ARGV[1] stock (integer >= 0)
-- ARGV[2] item id
-- ARGV[3] flag channel
--
-- Returns {status, stock, flag version}:
--   warmed  the stock was loaded
--   exists  the item is already warmed; nothing changes (pre-warming is
--           idempotent, so a restarted service cannot reset a sale)
--   invalid ARGV[1] is not a whole number >= 0

local stock = tonumber(ARGV[1])
if not stock or stock < 0 or stock % 1 ~= 0 then
  return {'invalid', -1, 0}
end
local version = tonumber(redis.call('GET', KEYS[4])) or 0
local current = tonumber(redis.call('GET', KEYS[1]))
if current then
  return {'exists', current, version}
end
redis.call('SET', KEYS[1], stock)
-- An item warmed with nothing to sell is sold out from the start.
if stock == 0 then
  version = redis.call('INCR', KEYS[4])
  redis.call('SET', KEYS[3], version)
  redis.call('PUBLISH', ARGV[3], ARGV[2] .. ' soldout ' .. version)
end
return {'warmed', stock, version}
