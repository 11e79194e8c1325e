-- Claim the scheduled tasks that are due, so exactly one scheduler sends each.
--
-- KEYS[1] due      zset schedule id -> due time (epoch ms)
-- KEYS[2] tasks    hash schedule id -> task JSON
-- KEYS[3] claimed  zset schedule id -> lease deadline (epoch ms)
-- ARGV[1] lease in ms: a claim not acknowledged by then is due again (its scheduler died)
-- ARGV[2] the most to claim at once
--
-- Due times are compared with Redis' own clock, one clock for every scheduler, never with a
-- scheduler process's clock (a scheduler minutes ahead would fire everything minutes early).
-- Returns a flat list {schedule id, task JSON, ...} of what was claimed.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(lapsed) do
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZADD', KEYS[1], now, id)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local claimed = {}
for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[1], id)
    local task = redis.call('HGET', KEYS[2], id)
    if task then
        redis.call('ZADD', KEYS[3], now + tonumber(ARGV[1]), id)
        claimed[#claimed + 1] = id
        claimed[#claimed + 1] = task
    end
end
return claimed
