-- reserve_batch.lua: the purchase decisions of a batch of users for one
-- item, in arrival order, as one atomic step.
--
-- Exactly the semantics of reserve.lua applied to each purchase in turn
-- (a batch of one answers what reserve.lua answers): a repeat click gets
-- the order it already has (checked before stock, also against earlier
-- purchases of the same batch), then sold out, then not warmed, then one
-- unit is taken. The last unit raises the sold-out flag with a new version
-- and publishes it once; every later purchase of the batch is sold out.
--
-- Why a batch: the per-purchase work in Redis is one HGET; the counter,
-- the flag and the buyer hash are read once and written once for the whole
-- batch, and one round trip carries up to hundreds of decisions.
--
-- KEYS[1] sk:{item}:stock    remaining stock (integer string)
-- KEYS[2] sk:{item}:buyers   hash: user -> order id
-- KEYS[3] sk:{item}:soldout  present (value = version) while sold out
-- KEYS[4] sk:{item}:flagver  last sold-out flag version
-- ARGV[1] item id (for the flag message)
-- ARGV[2] flag channel (sk:flags)
-- ARGV[3], ARGV[4], ... pairs: user id, order id to record if it succeeds
--
-- Returns a flat array, four entries per purchase in the order given:
-- status, order id, stock left, flag version — as reserve.lua returns them.

local pairs_given = (#ARGV - 2) / 2
local version = tonumber(redis.call('GET', KEYS[4])) or 0
local flagged = redis.call('EXISTS', KEYS[3]) == 1
local stock = tonumber(redis.call('GET', KEYS[1]))
local taken = 0
local bought = {}      -- user -> order id, for this batch's own purchases
local fields = {}      -- HSET arguments, written once at the end
local out = {}

local function answer(status, order_id, left, flag_version)
  out[#out + 1] = status
  out[#out + 1] = order_id
  out[#out + 1] = left
  out[#out + 1] = flag_version
end

for i = 0, pairs_given - 1 do
  local user = ARGV[3 + 2 * i]
  local order_id = ARGV[4 + 2 * i]
  local held = bought[user] or redis.call('HGET', KEYS[2], user)
  if held then
    answer('duplicate', held, -1, 0)
  elseif flagged then
    answer('sold_out', '', 0, version)
  elseif not stock then
    answer('not_warmed', '', -1, version)
  elseif stock - taken <= 0 then
    answer('sold_out', '', 0, version)
  else
    taken = taken + 1
    bought[user] = order_id
    fields[#fields + 1] = user
    fields[#fields + 1] = order_id
    local left = stock - taken
    if left == 0 then
      -- The last unit: a new flag version, raised and announced once.
      version = redis.call('INCR', KEYS[4])
      redis.call('SET', KEYS[3], version)
      redis.call('PUBLISH', ARGV[2], ARGV[1] .. ' soldout ' .. version)
      flagged = true
    end
    answer('queued', order_id, left, version)
  end
end

-- The counter and the buyers, written once. Every check above passed
-- before anything was written (Lua scripts have no rollback), and the
-- counter never goes below zero.
if taken > 0 then
  redis.call('DECRBY', KEYS[1], taken)
  -- Bounded chunks: unpack() of very many values can exceed Lua's stack.
  for from = 1, #fields, 200 do
    redis.call('HSET', KEYS[2], unpack(fields, from, math.min(from + 199, #fields)))
  end
end
return out
