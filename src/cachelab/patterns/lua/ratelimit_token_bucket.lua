-- Token bucket: capacity `burst`, refilled continuously at limit/period.
-- KEYS[1] hash {t = tokens, ts = time of last update in us}
-- ARGV: limit, period_us, cost, burst
-- Returns {allowed, remaining, reset_after_us, retry_after_us, now_us}.
-- A missing key is a full bucket, so the key only lives until the bucket
-- would be full again.
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local capacity = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = limit / period -- tokens per microsecond

local stored = redis.call('HMGET', key, 't', 'ts')
local tokens = tonumber(stored[1])
local ts = tonumber(stored[2])
if tokens == nil or ts == nil then
  tokens, ts = capacity, now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end

if tokens >= cost then
  tokens = tokens - cost
  local reset_after = (capacity - tokens) / rate
  redis.call('HSET', key, 't', string.format('%.17g', tokens), 'ts', ts)
  redis.call('PEXPIRE', key, math.max(1, math.ceil(reset_after / 1000)))
  return {1, math.floor(tokens), math.ceil(reset_after), 0, now}
end

local retry_after = (cost - tokens) / rate
local reset_after = (capacity - tokens) / rate
return {0, math.floor(tokens), math.ceil(reset_after), math.max(1, math.ceil(retry_after)), now}
