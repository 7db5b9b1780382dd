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
-- Why a batch: the counter and the flag are read once and written once
-- for the whole batch, the buyer hash is read with a few HMGETs and
-- written with a few HSETs (each call from Lua costs far more than a table
-- lookup), and one round trip carries up to hundreds of decisions.
--
-- KEYS[1] sk:{item}:stock    remaining stock (integer string)
-- KEYS[2] sk:{item}:buyers   hash: user -> order id
-- KEYS[3] sk:{item}:soldout  present (value = version) while sold out
-- KEYS[4] sk:{item}:flagver  last sold-out flag version
-- KEYS[5] sk:{item}:spent    hash: user -> issue time (µs) of the last
--                            purchase token spent (see reserve.lua)
-- ARGV[1] item id (for the flag message)
-- ARGV[2] flag channel (sk:flags)
-- ARGV[3], ARGV[4], ARGV[5], ... triples: user id, order id to record if
--         it succeeds, the purchase token's issue time (µs) or 
--
-- Returns one string, a line per purchase in the order given, with what
-- reserve.lua would return for it:
--   q <stock left> <flag version>   queued (under the order id given)
--   d <order id>                    duplicate: the order the user holds
--   s <flag version>                sold out
--   n                               not warmed
--   r                               the purchase token was spent already
-- One string rather than an array of four values per purchase: a client
-- reads a batch's hundreds of answers as one bulk reply, not as a
-- thousand values to parse one by one.

local given = (#ARGV - 2) / 3
local version = tonumber(redis.call('GET', KEYS[4])) or 0
local flagged = redis.call('EXISTS', KEYS[3]) == 1
local stock = tonumber(redis.call('GET', KEYS[1]))
local taken = 0
local bought = {}      -- user -> order id, for this batch's own purchases
local fields = {}      -- HSET arguments, written once at the end
local spent = {}       -- user -> token time spent in this batch
local spent_fields = {} -- HSET arguments of the spent tokens
local out = {}

-- Every purchaser's existing order and last spent token, read before
-- anything is written: held_before[i] is the order id purchaser i holds
-- (or false), spent_before[i] the time of their last spent token.
local held_before = {}
local spent_before = {}
local chunk = 200   -- unpack() of very many values can exceed Lua's stack
for from = 0, given - 1, chunk do
  local users = {}
  for i = from, math.min(from + chunk, given) - 1 do
    users[#users + 1] = ARGV[3 + 3 * i]
  end
  local found = redis.call('HMGET', KEYS[2], unpack(users))
  local times = redis.call('HMGET', KEYS[5], unpack(users))
  for j = 1, #users do
    held_before[from + j] = found[j]
    spent_before[from + j] = tonumber(times[j])
  end
end

local function answer(line)
  out[#out + 1] = line
end

for i = 0, given - 1 do
  local user = ARGV[3 + 3 * i]
  local order_id = ARGV[4 + 3 * i]
  local token_time = tonumber(ARGV[5 + 3 * i])
  local last = spent[user] or spent_before[i + 1]
  local held = bought[user] or held_before[i + 1]
  local line
  if token_time and last and last >= token_time then
    line = 'r'
  elseif held then
    line = 'd ' .. held
  elseif flagged then
    line = string.format('s %d', version)
  elseif not stock then
    line = 'n'
  elseif stock - taken <= 0 then
    line = string.format('s %d', version)
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
    line = string.format('q %d %d', left, version)
  end
  -- A token is spent by every decided answer, as in reserve.lua: not by
  -- a refusal as reused, nor by an item never warmed.
  if token_time and line ~= 'r' and line ~= 'n' then
    spent[user] = token_time
    spent_fields[#spent_fields + 1] = user
    spent_fields[#spent_fields + 1] = ARGV[5 + 3 * i]
  end
  answer(line)
end

-- The counter and the buyers, written once. Every check above passed
-- before anything was written (Lua scripts have no rollback), and the
-- counter never goes below zero.
if taken > 0 then
  redis.call('DECRBY', KEYS[1], taken)
  for from = 1, #fields, 2 * chunk do
    redis.call('HSET', KEYS[2], unpack(fields, from, math.min(from + 2 * chunk - 1, #fields)))
  end
end
for from = 1, #spent_fields, 2 * chunk do
  redis.call('HSET', KEYS[5], unpack(spent_fields, from, math.min(from + 2 * chunk - 1, #spent_fields)))
end
return table.concat(out, '\n')
