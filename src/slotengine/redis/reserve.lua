-- Admit one new booking to a slot: hold a unit, or join the FIFO queue.
-- The same rule as slotengine.domain.policy.admit; the caller checks the answer against PostgreSQL.
--
-- KEYS[1] meta   hash {capacity, confirmed, closed}
-- KEYS[2] holds  zset booking id -> expiry ms
-- KEYS[3] queue  zset booking id -> arrival sequence
-- ARGV[1] now in epoch ms (PostgreSQL's clock)
-- ARGV[2] booking id
-- ARGV[3] hold expiry in epoch ms, used when the booking holds
-- ARGV[4] arrival sequence, used when the booking queues
--
-- Returns {"MISSING"} when the slot is not mirrored (the caller rebuilds it), else
-- {"HELD", 0, purged...} or {"QUEUED", position (1 = next), purged...}, where purged are the
-- holds found expired and dropped.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'MISSING'}
end
local now = tonumber(ARGV[1])
local purged = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #purged > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
local capacity = tonumber(redis.call('HGET', KEYS[1], 'capacity'))
local confirmed = tonumber(redis.call('HGET', KEYS[1], 'confirmed') or '0')
local held = redis.call('ZCARD', KEYS[2])
local waiting = redis.call('ZCARD', KEYS[3])
if held + confirmed < capacity and waiting == 0 then
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
    return {'HELD', 0, unpack(purged)}
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
local rank = redis.call('ZRANK', KEYS[3], ARGV[2])
return {'QUEUED', rank + 1, unpack(purged)}
