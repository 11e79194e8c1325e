-- Read a slot's counts as of now, without changing anything.
--
-- KEYS[1] meta, KEYS[2] holds, KEYS[3] queue (keys.py SlotKeys: meta hash {capacity, confirmed, closed, version, drop_at}, holds zset id -> expiry ms, queue zset id -> arrival sequence)
--
-- Returns {"MISSING"} when the slot is not mirrored, else
-- {capacity, confirmed, live holds, lapsed holds, queue length, closed, now in epoch ms}. Lapsed holds are
-- past their expiry but not yet expired in PostgreSQL: the caller settles the slot. "Now" is
-- Redis' clock, shared by every process, never the caller's (ARGV is ignored).
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'MISSING'}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local meta = redis.call('HMGET', KEYS[1], 'capacity', 'confirmed', 'closed')
local lapsed = redis.call('ZCOUNT', KEYS[2], '-inf', now)
local live = redis.call('ZCARD', KEYS[2]) - lapsed
return {tonumber(meta[1]), tonumber(meta[2]) or 0, live, lapsed, redis.call('ZCARD', KEYS[3]),
        tonumber(meta[3]) or 0, now}
