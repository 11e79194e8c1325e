-- Read a slot's counts as of now, without changing anything.
--
-- KEYS[1] meta, KEYS[2] holds, KEYS[3] queue (see reserve.lua)
-- ARGV[1] now in epoch ms
--
-- Returns {"MISSING"} when the slot is not mirrored, else
-- {capacity, confirmed, live holds, lapsed holds, queue length, closed}. Lapsed holds are
-- past their expiry but not yet expired in PostgreSQL: the caller settles the slot.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'MISSING'}
end
local now = tonumber(ARGV[1])
local meta = redis.call('HMGET', KEYS[1], 'capacity', 'confirmed', 'closed')
local lapsed = redis.call('ZCOUNT', KEYS[2], '-inf', now)
local live = redis.call('ZCARD', KEYS[2]) - lapsed
return {tonumber(meta[1]), tonumber(meta[2]), live, lapsed, redis.call('ZCARD', KEYS[3]),
        tonumber(meta[3])}
