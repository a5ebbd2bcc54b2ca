-- Sliding log: one sorted-set member per admitted unit, scored by server time.
-- KEYS[1] zset of admitted units (score = admission time in us)
-- ARGV: limit, period_us, cost
-- Returns {now_us, remaining} when allowed (reset_after = one period), or
-- {now_us, remaining, reset_after_us, retry_after_us} when denied.
-- Exact: at most `limit` units in any half-open interval of one period.
-- Memory is O(limit) per identifier. A denial only reads: the key's expiry,
-- set at the newest admission, already covers every member.
-- Redis >= 5 replicates scripts by effects, so TIME before a write is allowed.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

-- An entry admitted at s counts while now < s + period: scores are whole µs,
-- so the live ones are those >= now - period + 1.
local count = redis.call('ZCOUNT', key, now - period + 1, '+inf')

if count + cost <= limit then
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
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
  return {now, limit - count - cost}
end

-- Denied: wait until the (limit - cost + 1)-th newest unit has left the window
-- (then `cost` units fit); the quota is whole once the newest one has.
local rank = cost - limit - 1
local oldest = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
local newest = oldest
if rank ~= -1 then
  newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
end
local retry_after = math.max(1, tonumber(oldest[2]) + period - now)
local reset_after = math.max(0, tonumber(newest[2]) + period - now)
return {now, math.max(0, limit - count), reset_after, retry_after}
