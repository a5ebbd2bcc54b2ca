-- GCRA (generic cell rate algorithm): one number per identifier, the
-- theoretical arrival time (TAT) of the next request at the sustained rate.
-- KEYS[1] string: TAT in us
-- ARGV: limit, period_us, cost, burst
-- Returns {allowed, remaining, reset_after_us, retry_after_us, now_us}.
-- Emission interval T = period / limit; up to `burst` units may arrive at
-- once. A missing key means "idle": the key lives until TAT.
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local interval = period / limit
local tolerance = burst * interval

local tat = tonumber(redis.call('GET', key)) or now
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - tolerance

if now < allow_at then
  local remaining = math.max(0, math.floor((tolerance - (tat - now)) / interval + 1e-9))
  return {0, remaining, math.ceil(tat - now), math.max(1, math.ceil(allow_at - now)), now}
end

local reset_after = new_tat - now
redis.call('SET', key, string.format('%.17g', new_tat), 'PX', math.max(1, math.ceil(reset_after / 1000)))
local remaining = math.max(0, math.floor((tolerance - reset_after) / interval + 1e-9))
return {1, remaining, math.ceil(reset_after), 0, now}
