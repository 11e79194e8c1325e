-- Replace a slot's mirrored state with what PostgreSQL holds (rebuild, or after any change).
--
-- KEYS[1] meta, KEYS[2] holds, KEYS[3] queue (keys.py SlotKeys: meta hash {capacity, confirmed, closed, version, drop_at}, holds zset id -> expiry ms, queue zset id -> arrival sequence)
-- ARGV[1] capacity
-- ARGV[2] occupied units that are not holds (CONFIRMED + COMPLETED)
-- ARGV[3] closed (0 or 1)
-- ARGV[4] when the keys may be dropped, epoch ms (after the slot ends; they are rebuildable)
-- ARGV[5] the slot's version these bookings are at (apply_changes.lua builds on it)
-- ARGV[6] number of holds H, then H pairs (expiry ms, booking id), then pairs (sequence, booking id)
--
-- Returns the number of holds and queue entries written, or -1 when the mirror is already at a
-- later version than ARGV[5] (a rebuild never takes it back: changes are applied after commit,
-- and a later transaction's may have landed first).
local current = tonumber(redis.call('HGET', KEYS[1], 'version'))
if current and current > tonumber(ARGV[5]) then
    return -1
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'capacity', ARGV[1], 'confirmed', ARGV[2], 'closed', ARGV[3],
           'drop_at', ARGV[4], 'version', ARGV[5])
local holds = tonumber(ARGV[6])
local first_queue = 7 + 2 * holds
for i = 7, first_queue - 1, 2 do
    redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1])
end
for i = first_queue, #ARGV, 2 do
    redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i + 1])
end
for i = 1, 3 do
    redis.call('PEXPIREAT', KEYS[i], ARGV[4])
end
return holds + (#ARGV - first_queue + 1) / 2
