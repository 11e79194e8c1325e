-- Apply one transaction's changes to a slot's mirror, in order: O(log n) each, never a re-read.
--
-- KEYS[1] meta, KEYS[2] holds, KEYS[3] queue (keys.py SlotKeys: meta hash {capacity, confirmed, closed, version, drop_at}, holds zset id -> expiry ms, queue zset id -> arrival sequence)
-- ARGV[1] the slot version the mirror must be at (the version before these changes)
-- ARGV[2] the slot version after them
-- ARGV[3...] operations, three values each: name, booking id, number
--   hold+   id expiry-ms   the booking holds a unit until then (a hold of n units is n members:
--                          the booking id, then "id:2" ... "id:n"; the set counts units)
--   hold-   id 0           the booking's hold ended (one member)
--   queue+  id sequence    the booking joined the queue
--   queue-  id 0           the booking left the queue
--   settled 0  delta       units occupied by confirmed or completed bookings changed by delta (in units)
--   rank    id 0           report where the booking stands in the queue
--
-- Changes are applied after their commit, so the changes of two transactions may arrive out of
-- order: nothing is written unless the mirror is at exactly ARGV[1].
--
-- Returns {"MISSING"} when the slot is not mirrored; {"BEHIND"} when the mirror is at an older
-- version (an earlier transaction's changes are still on their way: try again shortly);
-- {"AHEAD"} when it is at ARGV[2] or later (a rebuild read these changes from PostgreSQL already);
-- {"STALE"} when it disagrees with an operation (nothing is written then; the caller rebuilds
-- it); else {"OK", place...}: for each queue- and rank operation, the booking's place in the
-- queue (1 = next) before it left, or 0 for a rank of a booking not waiting.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'MISSING'}
end
local version = tonumber(redis.call('HGET', KEYS[1], 'version'))
if not version then
    return {'STALE'}
end
if version < tonumber(ARGV[1]) then
    return {'BEHIND'}
end
if version > tonumber(ARGV[1]) then
    if version >= tonumber(ARGV[2]) then
        return {'AHEAD'}
    end
    return {'STALE'}
end
-- Check first, write after: a disagreeing mirror is left as it was for the rebuild.
for i = 3, #ARGV, 3 do
    local op, id = ARGV[i], ARGV[i + 1]
    if op == 'hold-' and not redis.call('ZSCORE', KEYS[2], id) then
        return {'STALE'}
    end
    if op == 'queue-' and not redis.call('ZSCORE', KEYS[3], id) then
        -- May have been queued by an earlier operation of this very call.
        local joined = false
        for j = 3, i - 3, 3 do
            if ARGV[j] == 'queue+' and ARGV[j + 1] == id then
                joined = true
            end
        end
        if not joined then
            return {'STALE'}
        end
    end
end
local places = {'OK'}
for i = 3, #ARGV, 3 do
    local op, id, number = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if op == 'hold+' then
        redis.call('ZADD', KEYS[2], number, id)
    elseif op == 'hold-' then
        redis.call('ZREM', KEYS[2], id)
    elseif op == 'queue+' then
        redis.call('ZADD', KEYS[3], number, id)
    elseif op == 'queue-' then
        places[#places + 1] = redis.call('ZRANK', KEYS[3], id) + 1
        redis.call('ZREM', KEYS[3], id)
    elseif op == 'settled' then
        redis.call('HINCRBY', KEYS[1], 'confirmed', number)
    elseif op == 'rank' then
        local rank = redis.call('ZRANK', KEYS[3], id)
        places[#places + 1] = rank and rank + 1 or 0
    end
end
redis.call('HSET', KEYS[1], 'version', ARGV[2])
-- A sorted set emptied and filled again by ZADD is a new key, without the mirror's expiry.
local drop_at = redis.call('HGET', KEYS[1], 'drop_at')
if drop_at then
    redis.call('PEXPIREAT', KEYS[2], drop_at)
    redis.call('PEXPIREAT', KEYS[3], drop_at)
end
return places
