-- Keep a long job's message from being claimed: reset its idle time (XCLAIM ... JUSTID does not
-- count a delivery), only for the consumer holding this delivery.
-- KEYS[1] stream   ARGV[1] group   ARGV[2] entry id   ARGV[3] consumer   ARGV[4] entry delivery count
-- Returns 1, or 0 when the delivery was lost.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)[1]
if not p or p[2] ~= ARGV[3] or tostring(p[4]) ~= ARGV[4] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
