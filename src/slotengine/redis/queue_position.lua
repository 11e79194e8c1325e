-- Where a booking stands in its slot's queue, and the slot version the mirror is at.
--
-- KEYS[1] meta, KEYS[3] queue (keys.py SlotKeys; KEYS[2] is passed for the hash tag's sake)
-- ARGV[1] booking id
--
-- Returns {"MISSING"} when the slot is not mirrored, else {position, version} with position
-- 1 = next in line, or 0 when the booking is not waiting.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'MISSING'}
end
local version = redis.call('HGET', KEYS[1], 'version') or '-1'
local rank = redis.call('ZRANK', KEYS[3], ARGV[1])
if not rank then
    return {0, version}
end
return {rank + 1, version}
