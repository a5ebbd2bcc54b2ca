-- Sliding-window counter: the current and previous epoch-aligned windows'
-- counts, the previous one weighted by how much of it still overlaps the
-- sliding window (assumes it was spread evenly: an approximation).
-- KEYS[1] hash {w = current window index, c = its count, p = previous count}
-- ARGV: limit, period_us, cost
-- Returns {allowed, remaining, reset_after_us, retry_after_us, now_us}.
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local window = math.floor(now / period)
local elapsed = now - window * period

local stored = redis.call('HMGET', key, 'w', 'c', 'p')
local w = tonumber(stored[1])
local cur, prev = 0, 0
if w == window then
  cur = tonumber(stored[2]) or 0
  prev = tonumber(stored[3]) or 0
elseif w == window - 1 then
  prev = tonumber(stored[2]) or 0
end

local estimate = prev * (period - elapsed) / period + cur

if estimate + cost <= limit then
  cur = cur + cost
  redis.call('HSET', key, 'w', window, 'c', cur, 'p', prev)
  -- The count is needed until the end of the next window: set once, by the
  -- window's first admit (later ones would set the same instant again).
  local ttl = 2 * period - elapsed
  if w ~= window then
    redis.call('PEXPIRE', key, math.max(1, math.ceil(ttl / 1000)))
  end
  local remaining = math.max(0, math.floor(limit - estimate - cost))
  return {1, remaining, math.ceil(ttl), 0, now}
end

local retry_after
if cur + cost <= limit then
  -- Still this window: wait for the previous window's weight to decay.
  local at = period - (limit - cur - cost) * period / prev
  retry_after = at - elapsed
else
  -- Next window: this window's count becomes the decaying one.
  local at = period * (1 - (limit - cost) / cur)
  retry_after = (period - elapsed) + math.max(0, at)
end
local reset_after = 0
if cur > 0 then
  reset_after = 2 * period - elapsed
elseif prev > 0 then
  reset_after = period - elapsed
end
local remaining = math.max(0, math.floor(limit - estimate))
return {0, remaining, math.ceil(reset_after), math.max(1, math.ceil(retry_after)), now}
