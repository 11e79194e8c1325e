-- Take one turn under a sliding-window limit: at most ARGV[2] calls in any ARGV[1] ms.
-- An exact log (a sorted set of accepted calls' times), not a fixed window: a fixed window lets
-- twice the limit through across its boundary. Refused calls are not logged, so a caller that
-- keeps knocking is let in again as soon as its oldest accepted call leaves the window.
--
-- KEYS[1] the caller's log (sorted set: call -> epoch ms)
-- ARGV[1] window length in ms
-- ARGV[2] calls allowed per window (>= 1)
-- ARGV[3] now in epoch ms, or "" for Redis' clock (production passes ""; API processes whose
--         clocks disagree then still share one count; tests pass a time to walk it forward)
--
-- Returns {1, 0} when the call is allowed, else {0, ms until the next call would be}.
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local calls = redis.call('ZCARD', KEYS[1])
if calls >= limit then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    local wait = tonumber(oldest[2]) + window - now
    if wait < 1 then
        wait = 1
    end
    return {0, wait}
end
-- Calls in the same millisecond need members of their own.
redis.call('ZADD', KEYS[1], now, now .. ':' .. redis.call('ZCOUNT', KEYS[1], now, now))
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0}
