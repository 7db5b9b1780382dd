-- release.lua: give a reservation back (a cancelled, unpaid order).
--
-- KEYS[1] sk:{item}:stock    remaining stock
-- KEYS[2] sk:{item}:buyers   hash: user -> order id
-- KEYS[3] sk:{item}:soldout  present while sold out
-- KEYS[4] sk:{item}:flagver  last sold-out flag version
-- ARGV[1] user id
-- ARGV[2] order id being cancelled
-- ARGV[3] item id (for the flag message)
-- ARGV[4] flag channel (sk:flags)
--
-- Returns {status, stock left, flag version}:
--   released  the unit is back on sale
--   not_held  the user does not hold this order (already released, or
--             never reserved): nothing changes, so a redelivered cancel
--             is harmless
--
-- Idempotent by construction: the unit comes back only while the buyer
-- record still names this exact order.

local version = tonumber(redis.call('GET', KEYS[4])) or 0

-- 1. Only the holder of this order id can give it back.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return {'not_held', tonumber(redis.call('GET', KEYS[1])) or -1, version}
end

-- 2. Forget the buyer (they may buy again) and return the unit.
redis.call('HDEL', KEYS[2], ARGV[1])
local left = redis.call('INCR', KEYS[1])

-- 3. If the item was flagged sold out, reopen it with a newer version,
--    so every edge that saw the old flag learns that stock came back.
if redis.call('EXISTS', KEYS[3]) == 1 then
  version = redis.call('INCR', KEYS[4])
  redis.call('DEL', KEYS[3])
  redis.call('PUBLISH', ARGV[4], ARGV[3] .. ' open ' .. version)
end
return {'released', left, version}
