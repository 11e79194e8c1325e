-- Count one call against a per-caller limit, in a window timed by Redis' clock alone.
-- The window opens with its first call and lasts ARGV[1] ms; no caller's clock is involved,
-- so API processes whose clocks disagree still share one count.
--
-- KEYS[1] the caller's counter
-- ARGV[1] window length in ms
--
-- Returns {calls in the current window, ms until the window closes}.
local calls = redis.call('INCR', KEYS[1])
if calls == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
    -- A counter without expiry would limit its caller forever: open a window now.
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    left = tonumber(ARGV[1])
end
return {calls, left}
