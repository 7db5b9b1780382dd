-- holder.lua: which order a user holds for an item, if any.
--
-- KEYS[1..4] as in reserve.lua (only KEYS[2], the buyers hash, is read;
-- all four are passed so every script has the same shape)
-- ARGV[1] user id
--
-- Returns the order id, or nil. The broker's transaction check-back asks
-- this: a half message whose order the user holds was reserved and must
-- be committed; any other must be rolled back.

return redis.call('HGET', KEYS[2], ARGV[1])
