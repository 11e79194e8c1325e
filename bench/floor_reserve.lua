-- The floor's admission: hold a unit, or join the FIFO queue. The least a reserve must ask Redis.
-- Holds never leave during a benchmark (no expiry, confirm or cancel on the floor), so the unit
-- a new hold takes is the number of holds after it joined.
--
-- KEYS[1] meta   hash {capacity, seq}
-- KEYS[2] holds  zset booking id -> hold expiry (epoch ms)
-- KEYS[3] queue  zset booking id -> arrival sequence
-- ARGV[1] booking id
-- ARGV[2] hold expiry in epoch ms, used when the booking holds
--
-- Returns {"MISSING"} when the slot's capacity is not known here yet (the caller sets it),
-- else {"HELD", unit} or {"QUEUED", position (1 = next)}.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'MISSING'}
end
local capacity = tonumber(redis.call('HGET', KEYS[1], 'capacity'))
local held = redis.call('ZCARD', KEYS[2])
if held < capacity and redis.call('ZCARD', KEYS[3]) == 0 then
    redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
    return {'HELD', held + 1}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[3], seq, ARGV[1])
return {'QUEUED', redis.call('ZRANK', KEYS[3], ARGV[1]) + 1}
