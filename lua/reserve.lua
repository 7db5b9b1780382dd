-- reserve.lua: one atomic purchase decision for one user and one item.
--
-- Runs inside Redis (EVALSHA) or the embedded store (the same file in Lua
-- 5.1 behind a redis.call shim). A script runs alone, so everything below
-- happens as one step: no other purchase interleaves.
--
-- KEYS[1] sk:{item}:stock    remaining stock (integer string)
-- KEYS[2] sk:{item}:buyers   hash: user -> order id
-- KEYS[3] sk:{item}:soldout  present (value = version) while sold out
-- KEYS[4] sk:{item}:flagver  last sold-out flag version
-- KEYS[5] sk:{item}:spent    hash: user -> issue time (µs) of the last
--                            purchase token the user spent on this item
-- ARGV[1] user id
-- ARGV[2] order id to record if the purchase succeeds
-- ARGV[3] item id (for the flag message)
-- ARGV[4] flag channel (sk:flags)
-- ARGV[5] the purchase token's issue time (µs), or '' when none is spent
--
-- Returns {status, order id, stock left, flag version}:
--   queued     reserved now; the order id is ARGV[2]
--   duplicate  the user already holds an order; its id is returned
--   sold_out   no stock left
--   not_warmed the item was never pre-warmed into this store
--   reused     the purchase token was spent already (nothing else is read)
--
-- Single use: a token is spent by this very step, so there is no moment
-- between "token used" and "unit reserved". A user's tokens for an item
-- are issued at increasing times; a token is spent when it is newer than
-- the last one the user spent, and spending it records its time. Memory
-- is one field per user who ever tried, as for the buyer hash.
--
-- Every key shares the {item} hash tag, so in Redis Cluster the script
-- touches one slot. Nothing is written before every check has passed:
-- Lua scripts have no rollback.

-- 0. A purchase token spent already is refused before anything else.
local spending = ARGV[5] ~= nil and ARGV[5] ~= ''
if spending then
  local last = tonumber(redis.call('HGET', KEYS[5], ARGV[1]))
  if last and last >= tonumber(ARGV[5]) then
    return {'reused', '', -1, 0}
  end
end
-- Spends the token: called on every decided answer below.
local function spend()
  if spending then
    redis.call('HSET', KEYS[5], ARGV[1], ARGV[5])
  end
end

-- 1. A repeat click gets the order it already has. Checked before stock,
--    so a repeat clicker can never burn stock (the classic seckill bug).
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  spend()
  return {'duplicate', held, -1, 0}
end

-- 2. Sold out already: answer without touching the counter.
local version = tonumber(redis.call('GET', KEYS[4])) or 0
if redis.call('EXISTS', KEYS[3]) == 1 then
  spend()
  return {'sold_out', '', 0, version}
end

-- 3. Stock check. A missing key means the item was never pre-warmed;
--    that must not look like "sold out".
local stock = tonumber(redis.call('GET', KEYS[1]))
if not stock then
  return {'not_warmed', '', -1, version}
end
if stock <= 0 then
  spend()
  return {'sold_out', '', 0, version}
end

-- 4. Take one unit and record the buyer. The decrement comes after the
--    check above, so stock never goes below zero ("sell one too many").
local left = redis.call('DECR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
spend()

-- 5. The last unit: raise the sold-out flag with a new version and
--    announce it, in the same atomic step, so no edge keeps selling.
if left == 0 then
  version = redis.call('INCR', KEYS[4])
  redis.call('SET', KEYS[3], version)
  redis.call('PUBLISH', ARGV[4], ARGV[3] .. ' soldout ' .. version)
end
return {'queued', ARGV[2], left, version}
