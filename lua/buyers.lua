-- buyers.lua: every reservation of an item, for reconciliation.
--
-- KEYS[1..4] as in reserve.lua (only KEYS[2], the buyers hash, is read)
--
-- Returns {user1, order1, user2, order2, ...} (HGETALL of the buyers
-- hash). One atomic read: the list is a consistent snapshot. It grows with
-- the item's stock (one pair per unit held), which bounds it.

return redis.call('HGETALL', KEYS[2])
