-- Fixed window, epoch-aligned: one counter per (identifier, window).
-- KEYS[1] hash {w = window index, c = count}
-- ARGV: limit, period_us, cost
-- Returns {allowed, remaining, reset_after_us, retry_after_us, now_us}.
-- The window index is stored beside the count, so a key whose expiry lags a
-- little never leaks the previous window's count into the next one.
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local window = math.floor(now / period)
local window_end = (window + 1) * period
local reset_after = window_end - now

local stored = redis.call('HMGET', key, 'w', 'c')
local count = 0
local same_window = tonumber(stored[1]) == window
if same_window then
  count = tonumber(stored[2]) or 0
end

if count + cost > limit then
  return {0, limit - count, reset_after, reset_after, now}
end
count = count + cost
redis.call('HSET', key, 'w', window, 'c', count)
if not same_window then  -- the window's first admit sets its end; later ones keep it
  redis.call('PEXPIRE', key, math.max(1, math.ceil(reset_after / 1000)))
end
return {1, limit - count, reset_after, 0, now}
