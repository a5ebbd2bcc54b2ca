-- Keep long jobs' messages from being claimed: reset their idle time (XCLAIM ... JUSTID does not
-- count a delivery), only for the consumer holding each delivery. All of a worker's jobs in hand
-- in one call (its one lease extender), or one job (StreamQueue.extend_lease).
-- KEYS[1] stream   ARGV[1] group
-- ARGV[2], ARGV[3], ARGV[4]: entry id, consumer, entry delivery count of the first job; then the
-- second's; ...
-- Returns one entry per job: 1 extended, 0 when the delivery was lost.
local out = {}
for i = 2, #ARGV, 3 do
  local eid, consumer, count = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], eid, eid, 1)[1]
  local ok = 0
  if p and p[2] == consumer and tostring(p[4]) == count then
    redis.call('XCLAIM', KEYS[1], ARGV[1], consumer, 0, eid, 'JUSTID')
    ok = 1
  end
  out[#out + 1] = ok
end
return out
