-- Extend the leases of jobs still held by their holders: all of a worker's jobs in hand in one
-- call (its one lease extender), or one job (JobQueue.extend_lease).
-- KEYS[1] leases zset
-- ARGV[1] lease ms   ARGV[2] job key prefix (job hash = prefix .. id; same hash tag, one slot)
-- ARGV[3], ARGV[4]: id and lease token of the first job; ARGV[5], ARGV[6]: the second's; ...
-- Returns one entry per job: 1 extended, 0 when its lease was lost.
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local ok = 0
  if redis.call('HGET', ARGV[2] .. id, 'token') == ARGV[i + 1] and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], 'XX', expiry, id)
    ok = 1
  end
  out[#out + 1] = ok
end
return out
