-- How many wait ahead of a booking in its slot's queue, as the mirror stands at a given version.
--
-- KEYS[1] meta, KEYS[2] holds, KEYS[3] queue (keys.py SlotKeys: meta hash {capacity, confirmed, closed, version, drop_at}, holds zset id -> expiry ms, queue zset id -> arrival sequence; KEYS[2] is passed for the hash tag's sake)
-- ARGV[1] the slot version the caller read the booking at (PostgreSQL's)
-- ARGV[2] booking id
--
-- Returns {"MISSING"} when the slot is not mirrored, {"STALE"} when the mirror is at another
-- version (ahead of or behind the caller's snapshot: its ranks are not the caller's), else
-- {ahead} (0 = next in line), or {-1} when the booking is not in the mirror's queue.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'MISSING'}
end
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then
    return {'STALE'}
end
local rank = redis.call('ZRANK', KEYS[3], ARGV[2])
if not rank then
    return {-1}
end
return {rank}
