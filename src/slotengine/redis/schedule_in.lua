-- Store a one-off task due `delay` from now by this node's clock (the node claim_due.lua reads).
--
-- KEYS[1] due      zset schedule id -> due time (epoch ms)
-- KEYS[2] tasks    hash schedule id -> task JSON
-- ARGV[1] schedule id
-- ARGV[2] task JSON
-- ARGV[3] delay in ms
--
-- Reading TIME here, not in the caller, makes the due time and the clock it is later compared
-- with the same node's, also on a cluster where each timer shard lives on its own node.
-- Returns the due time (epoch ms).
local time = redis.call('TIME')
local due = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], due, ARGV[1])
return due
