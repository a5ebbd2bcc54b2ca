-- Sliding log: one sorted-set member per admitted unit, scored by server time.
-- KEYS[1] zset of admitted units (score = admission time in us)
-- ARGV: limit, period_us, cost
-- Returns {allowed, remaining, reset_after_us, retry_after_us, now_us}.
-- Exact: at most `limit` units in any half-open interval of one period.
-- Memory is O(limit) per identifier.
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- An entry admitted at s counts while now < s + period.
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
local count = redis.call('ZCARD', key)

if count + cost <= limit then
  local stamp = string.format('%.0f', now)
  for i = 1, cost do
    -- Members must be unique; two checks in the same microsecond (or a clock
    -- step backwards) get a suffix instead of overwriting each other.
    local n = 0
    while redis.call('ZADD', key, now, stamp .. '-' .. i .. '-' .. n) == 0 do
      n = n + 1
    end
  end
  redis.call('PEXPIRE', key, math.max(1, math.ceil(period / 1000)))
  return {1, limit - count - cost, period, 0, now}
end

-- Denied: wait until enough of the oldest units have left the window.
local need = count + cost - limit
local oldest = redis.call('ZRANGE', key, need - 1, need - 1, 'WITHSCORES')
local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
local retry_after = math.max(1, tonumber(oldest[2]) + period - now)
local reset_after = math.max(0, tonumber(newest[2]) + period - now)
redis.call('PEXPIRE', key, math.max(1, math.ceil(reset_after / 1000)))
return {0, math.max(0, limit - count), reset_after, retry_after, now}
